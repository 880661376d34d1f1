"""Chat SFT (data=chat): labels equal TRL's SFTTrainer on the same data and template (with and without
{% generation %} blocks), bad rows fail in one line, truncation drops what has nothing left to train."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import trl
from datasets import Dataset
from transformers import LlamaConfig, LlamaForCausalLM

from lightning_llm.data import chat_templates as ct
from lightning_llm.data.tokenizers import train_tokenizer
from lightning_llm.errors import UserError
from lightning_llm.tasks.chat import IGNORE_INDEX, ChatDataModule, pack_best_fit
from tests.conftest import TINY_GPT, prepared_datamodule, tiny_gpt_dir, write_jsonl

TRL_TEMPLATES = Path(trl.__file__).parent / "chat_templates"
LLAMA3_SPECIALS = ["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]

CONVERSATIONS = [
    [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi, I am Alice."},
     {"role": "assistant", "content": "Nice to meet you, Alice."}, {"role": "user", "content": "What is my name?"},
     {"role": "assistant", "content": "Your name is Alice."}],
    [{"role": "user", "content": "What is 3 plus 4?"}, {"role": "assistant", "content": "3 plus 4 is 7."}],
    [{"role": "user", "content": "I have a red car."}, {"role": "assistant", "content": "Noted."},
     {"role": "user", "content": "What colour is my car?"}, {"role": "assistant", "content": " Your car is red. "}],
]


def tiny_tokenizer(tmp_path: Path, template: str) -> object:
    """A byte-level BPE trained on the conversations, with `template` ('chatml' or 'llama3', TRL's own file)."""
    texts = [m["content"] for c in CONVERSATIONS for m in c] * 5
    tok = train_tokenizer(texts, "bpe", 400, tmp_path / "tok")
    if template == "chatml":
        ct.install_template(tok, "chatml")
    else:
        tok.add_special_tokens({"additional_special_tokens": LLAMA3_SPECIALS}, replace_extra_special_tokens=False)
        tok.chat_template = (TRL_TEMPLATES / "llama3.jinja").read_text()
    return tok


def trl_rows(tmp_path: Path, tok: object, rows: list[dict], **config: object) -> list[dict]:
    """TRL's SFTTrainer dataset preparation (input_ids, labels) for `rows`."""
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, intermediate_size=32))
    args = trl.SFTConfig(output_dir=str(tmp_path / "trl"), report_to=[], max_length=config.pop("max_length", None), bf16=False, use_cpu=True,
                         dataset_num_proc=None, **config)
    trainer = trl.SFTTrainer(model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tok)
    return [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in trainer.train_dataset]


def our_rows(tmp_path: Path, tok: object, rows: list[dict], **settings: object) -> list[dict]:
    path = write_jsonl(tmp_path / "rows.jsonl", rows)
    dm = prepared_datamodule(ChatDataModule, tmp_path, {"train": path, "validation": path, "test": None},
                             tokenizer=tok, **settings)
    return [{"input_ids": r["input_ids"], "labels": r["labels"]} for r in dm.datasets["train"]]


@pytest.mark.parametrize("template", ["chatml", "llama3"])
def test_assistant_labels_equal_trl(tmp_path: Path, template: str) -> None:
    """chatml has generation blocks (return_assistant_tokens_mask); TRL's llama3 has none, so ours locates the
    turns by prefix rendering while TRL swaps in its own training template with blocks: the labels must agree."""
    tok = tiny_tokenizer(tmp_path, template)
    assert ct.has_generation_blocks(tok.chat_template) == (template == "chatml")
    rows = [{"messages": c} for c in CONVERSATIONS]
    ours = our_rows(tmp_path, tok, rows, max_length=4096)
    theirs = trl_rows(tmp_path, tok, rows, assistant_only_loss=True)
    assert ours == theirs
    trained = [tok.decode([t]) for t in ours[1]["labels"] if t != IGNORE_INDEX]
    eot = "<|im_end|>" if template == "chatml" else "<|eot_id|>"
    assert "".join(trained) == f"3 plus 4 is 7.{eot}"  # content and end of turn, nothing of the scaffolding


@pytest.mark.parametrize("template", ["chatml", "llama3"])
def test_prompt_completion_labels_equal_trl(tmp_path: Path, template: str) -> None:
    tok = tiny_tokenizer(tmp_path, template)
    rows = [{"prompt": c[:-1], "completion": c[-1:]} for c in CONVERSATIONS]
    ours = our_rows(tmp_path, tok, rows, max_length=4096)
    assert ours == trl_rows(tmp_path, tok, rows, assistant_only_loss=True, completion_only_loss=True)
    # the first assistant turn of conversation 0 is part of the prompt: not trained
    assert sum(t != IGNORE_INDEX for t in ours[0]["labels"]) < sum(
        t != IGNORE_INDEX for t in our_rows(tmp_path, tok, [{"messages": CONVERSATIONS[0]}], max_length=4096)[0][
            "labels"])


def test_whole_conversation_and_text_completion_equal_trl(tmp_path: Path) -> None:
    tok = tiny_tokenizer(tmp_path, "chatml")
    rows = [{"messages": c} for c in CONVERSATIONS]
    ours = our_rows(tmp_path, tok, rows, max_length=4096, assistant_only_loss=False)
    assert ours == trl_rows(tmp_path, tok, rows, assistant_only_loss=False)
    assert all(r["labels"] == r["input_ids"] for r in ours)
    text = [{"prompt": "What is 3 plus 4?", "completion": " 7."}, {"prompt": "Hi, I am", "completion": " Alice."}]
    assert our_rows(tmp_path, tok, text, max_length=4096) == trl_rows(tmp_path, tok, text)
    # Plain prompt/completion trains the completion only, assistant_only_loss or not (TRL's completion_only_loss).
    assert our_rows(tmp_path, tok, text, max_length=4096, assistant_only_loss=False) == trl_rows(tmp_path, tok, text)


def test_truncation_equals_trl_and_drops_untrained(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tok = tiny_tokenizer(tmp_path, "chatml")
    long_prompt = [{"role": "user", "content": "I have a red car. " * 30}, {"role": "assistant", "content": "Noted."}]
    rows = [{"messages": c} for c in CONVERSATIONS] + [{"messages": long_prompt}]
    ours = our_rows(tmp_path, tok, rows, max_length=24)
    assert ours == trl_rows(tmp_path, tok, rows, assistant_only_loss=True, max_length=24)
    assert len(ours) == 2 and max(len(r["input_ids"]) for r in ours) == 24
    assert "2 of 4 conversations have no trained token within data.max_length=24" in capsys.readouterr().err


@pytest.mark.parametrize("row, message", [
    ({"messages": [{"role": "user", "content": "hi"}]}, "row 2: messages has no assistant turn"),
    ({"messages": [{"role": "bot", "content": "hi"}]}, "row 2: messages[0] has role 'bot'"),
    ({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": " "}]},
     "row 2: messages[1] (assistant) has empty content"),
    ({"messages": "hi"}, "row 2: messages must be a non-empty list"),
    ({"messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]},
     "row 2: messages[0] (user) content must be a string, got list"),
    ({"text": "hi"}, "row 2: no 'messages' column, nor 'prompt' and 'completion'"),
])
def test_bad_rows_fail_naming_the_row(tmp_path: Path, row: dict, message: str) -> None:
    tok = tiny_tokenizer(tmp_path, "chatml")
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(")
                       .replace(")", r"\)")):
        our_rows(tmp_path, tok, [{"messages": CONVERSATIONS[1]}, row], max_length=64)


def test_no_template_fails_in_one_line(tmp_path: Path) -> None:
    tok = train_tokenizer(["hello there"] * 5, "bpe", 300, tmp_path / "tok")
    with pytest.raises(UserError, match="tokenizer has no chat_template: set data.chat_template=chatml"):
        our_rows(tmp_path, tok, [{"messages": CONVERSATIONS[1]}], max_length=64)
    with pytest.raises(UserError, match="data.chat_template='nope'"):
        ct.install_template(tok, "nope")


def test_bad_chat_file_exits_2_before_training(run_cli, tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": CONVERSATIONS[1]}) + "\n" + json.dumps({"messages": "oops"}) + "\n")
    proc = run_cli("lightning_llm.train", "model=gpt", "data=chat", f"data.train_file={bad}",
                   f"data.validation_file={bad}", "data.chat_template=chatml", "model.tokenizer_vocab_size=300",
                   f"paths.output_dir={tmp_path / 'run'}")
    assert proc.returncode == 2, proc.stderr[-2000:]
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: data (train split, {bad}) row 2: messages must be a non-empty list of {{role, "
                      f"content}} objects, got str 'oops'"]
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_pack_best_fit_keeps_conversations_whole() -> None:
    lengths = [7, 5, 5, 4, 3, 2, 2, 1]
    bins = pack_best_fit(lengths, 10)
    assert sorted(i for b in bins for i in b) == list(range(8))
    assert all(sum(lengths[i] for i in b) <= 10 for b in bins)
    assert len(bins) == 3  # 29 tokens in rows of 10: the fewest possible


def test_export_chats_in_plain_transformers(tmp_path: Path) -> None:
    """The template travels with the tokenizer's save_pretrained; the end-of-turn id is what generation stops at."""
    from transformers import AutoTokenizer, GenerationConfig

    tok = tiny_tokenizer(tmp_path, "chatml")
    tok.save_pretrained(str(tmp_path / "export"))
    loaded = AutoTokenizer.from_pretrained(str(tmp_path / "export"))
    text = loaded.apply_chat_template(CONVERSATIONS[1][:1], tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nWhat is 3 plus 4?<|im_end|>\n<|im_start|>assistant\n"
    config = ct.chat_generation_config(loaded, GenerationConfig())
    assert loaded.convert_tokens_to_ids("<|im_end|>") in config.eos_token_id


def test_max_length_beyond_the_context_fails_before_training(compose_cfg) -> None:
    from lightning_llm.config.validation import validate_train_config

    cfg = compose_cfg(["model=gpt", "data=chat", "model.max_position_embeddings=128", "data.max_length=256"])
    with pytest.raises(UserError, match=r"data.max_length=256 is larger than the model's context of 128 tokens"):
        validate_train_config(cfg)


def test_validation_replies_are_handed_to_the_model_and_scored(compose_cfg) -> None:
    """The data's validation prompts reach the module through the builders (`model_attachments`), not through
    `trainer.datamodule`: a validation run given no data module still scores replies."""
    import pytorch_lightning as pl

    from lightning_llm.runtime import builders

    cfg = compose_cfg(["model=gpt", "data=chat", *TINY_GPT, "data.chat_template=chatml", "model.eval_generation_samples=2"])
    datamodule, _, module = builders.build_data_and_model(cfg)
    assert len(module.reply_samples) > 2 and module.reply_samples == datamodule.reply_samples
    trainer = pl.Trainer(limit_val_batches=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                         default_root_dir=cfg.paths.output_dir)
    (metrics,) = trainer.validate(module, dataloaders=datamodule.val_dataloader())
    assert 0.0 <= metrics["val/reply_exact_match"] <= 1.0
    assert len((Path(cfg.paths.output_dir) / "predictions_val.jsonl").read_text().splitlines()) == 2


def test_lora_trains_the_turn_tokens_a_template_adds_to_a_pretrained_model(compose_cfg, tmp_path: Path,
                                                                          capsys) -> None:
    """SFT with peft=lora from a pretrained model whose tokenizer lacks the template's turn markers: the tokens
    added for ChatML get embedding rows the model never had, which LoRA alone would leave frozen at their random
    start (the model could never learn to end a turn). They train as peft's trainable tokens (the tied output layer
    with them), the rest of the embeddings stays frozen, and a checkpoint reloads the same adapter."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from lightning_llm.tasks.causal_lm import CausalLMModule
    from lightning_llm.train import train

    pretrained = tiny_gpt_dir(tmp_path, corpus_lines=200)
    rows = len(AutoTokenizer.from_pretrained(str(pretrained)))
    start = AutoModelForCausalLM.from_pretrained(str(pretrained)).get_input_embeddings().weight.detach().clone()
    cfg = compose_cfg(["model=gpt", "data=chat", f"model.pretrained_model_name_or_path={pretrained}",
                       "data.chat_template=chatml", "data.max_length=64", "peft=lora", "model.learning_rate=1e-2",
                       "trainer.max_steps=4", "+trainer.limit_val_batches=1", "test=false", "logger=csv"])
    train(cfg)
    assert "LoRA r=8 alpha=16 on c_attn + 2 new token embeddings:" in capsys.readouterr().out
    run = Path(cfg.paths.output_dir)
    tokenizer = AutoTokenizer.from_pretrained(str(run / "hf_model"))
    added = tokenizer.convert_tokens_to_ids(["<|im_start|>", "<|im_end|>"])
    assert sorted(added) == [rows, rows + 1]
    state = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)["state_dict"]
    (delta,) = [v for k, v in state.items() if "trainable_tokens_delta" in k and "lm_head" not in k]
    assert delta.shape[0] >= 2 and delta[:2].abs().sum() > 0  # the turn markers' rows moved
    exported = AutoModelForCausalLM.from_pretrained(str(run / "hf_model")).get_input_embeddings().weight
    assert torch.equal(exported[:rows], start[:rows])  # the pretrained rows stayed frozen
    reloaded = CausalLMModule.load_from_checkpoint(run / "checkpoints" / "last.ckpt", map_location="cpu")
    assert reloaded.hparams.new_token_ids[:2] == added


def test_a_tokenizer_without_pad_token_keeps_its_eos_row_training(tmp_path: Path) -> None:
    """Llama 3 / Mistral tokenizers have no pad token, so we pad with EOS. Put in the config before loading, that id
    became the embedding's padding_idx, and the end-of-turn row got no gradient (TRL trained it): the model is built
    as plain from_pretrained builds it, and the config gets the pad id after."""
    import torch

    from lightning_llm.runtime.builders import tokenizer_kwargs
    from lightning_llm.tasks.causal_lm import CausalLMModule

    tok = tiny_tokenizer(tmp_path, "chatml")
    tok.pad_token = tok.eos_token  # what builders.build_tokenizer does for a tokenizer with none
    start = tmp_path / "start"
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32, eos_token_id=tok.eos_token_id)).save_pretrained(start)
    module = CausalLMModule(pretrained_model_name_or_path=str(start), **tokenizer_kwargs(tok))
    assert module.model.get_input_embeddings().padding_idx == LlamaForCausalLM.from_pretrained(
        start).get_input_embeddings().padding_idx
    assert module.model.config.pad_token_id == module.model.generation_config.pad_token_id == tok.eos_token_id
    reply = tok("3 plus 4 is 7.")["input_ids"]
    ids = torch.tensor([reply + [tok.eos_token_id] + reply])  # EOS inside: its row feeds the next predictions
    module.model(input_ids=ids, labels=ids).loss.backward()
    assert module.model.get_input_embeddings().weight.grad[tok.eos_token_id].abs().sum() > 0


# Gemma's rules: no system role, user and assistant alternate from a user turn.
NO_SYSTEM = ("{{ bos_token }}{% for m in messages %}"
             "{% if m['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
             "{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}"
             "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
             "{{ '<start_of_turn>' + ('model' if m['role'] == 'assistant' else 'user') + '\\n' + m['content'] "
             "+ '<end_of_turn>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}")


def test_a_template_without_system_role_trains_and_names_the_row_it_refuses(tmp_path: Path) -> None:
    """Gemma / Mistral-Instruct templates refuse a system turn: the template is still accepted (checked without
    one), its end of turn found, conversations without a system turn train, and a row the template refuses fails in
    one line naming it."""
    tok = train_tokenizer([m["content"] for c in CONVERSATIONS for m in c] * 5, "bpe", 400, tmp_path / "tok")
    tok.add_special_tokens({"additional_special_tokens": ["<start_of_turn>", "<end_of_turn>"]},
                           replace_extra_special_tokens=False)
    tok.chat_template = NO_SYSTEM
    ct.install_template(tok, None)
    assert ct.end_of_turn_id(tok) == tok.convert_tokens_to_ids("<end_of_turn>")
    (row,) = our_rows(tmp_path, tok, [{"messages": CONVERSATIONS[1]}], max_length=256)
    assert tok.decode([t for t in row["labels"] if t != IGNORE_INDEX]) == "3 plus 4 is 7.<end_of_turn>"
    with pytest.raises(UserError) as err:
        our_rows(tmp_path, tok, [{"messages": CONVERSATIONS[1]}, {"messages": CONVERSATIONS[0]}], max_length=256)
    assert "row 2: the chat template cannot render this conversation: System role not supported" in str(err.value)


def test_a_conversation_opening_with_the_assistant_equals_trl(tmp_path: Path) -> None:
    """A greeting before the user's first turn: the assistant's turns are located by prefix rendering (TRL's llama3
    template has no generation blocks), the first from its content on."""
    tok = tiny_tokenizer(tmp_path, "llama3")
    rows = [{"messages": [{"role": "assistant", "content": "Hi, how can I help?"}, *CONVERSATIONS[1]]}]
    ours = our_rows(tmp_path, tok, rows, max_length=4096)
    assert ours == trl_rows(tmp_path, tok, rows, assistant_only_loss=True)
    trained = tok.decode([t for t in ours[0]["labels"] if t != IGNORE_INDEX])
    assert trained == "Hi, how can I help?<|eot_id|>3 plus 4 is 7.<|eot_id|>"


def test_a_template_whose_trained_turns_lack_an_end_token_warns(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """A `{% generation %}` block around the content only: the end-of-turn token is never trained, and the model
    would not learn to stop (TRL warns too)."""
    tok = tiny_tokenizer(tmp_path, "chatml")
    our_rows(tmp_path / "ok", tok, [{"messages": CONVERSATIONS[1]}], max_length=256)
    assert "may not learn to stop" not in capsys.readouterr().err
    tok.chat_template = ct.CHATML.replace("{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}",
                                          "{{- message['content'] }}{%- endgeneration %}{{- '<|im_end|>' }}")
    assert ct.has_generation_blocks(tok.chat_template) and tok.chat_template != ct.CHATML
    our_rows(tmp_path / "bad", tok, [{"messages": CONVERSATIONS[1]}], max_length=256)
    assert "may not learn to stop" in capsys.readouterr().err


def test_packing_is_refused_where_the_architecture_attends_across_conversations(tmp_path: Path) -> None:
    """Packed rows keep conversations apart only where the model builds its causal mask from the position ids:
    OPT does not, so data.packing=true stops before training instead of silently mixing conversations."""
    from transformers import OPTConfig, OPTForCausalLM

    from lightning_llm.tasks.causal_lm import CausalLMModule, attends_across_packed_rows

    tiny = {"vocab_size": 64, "hidden_size": 16, "num_hidden_layers": 1, "num_attention_heads": 2}
    llama = LlamaForCausalLM(LlamaConfig(**tiny, intermediate_size=32))
    OPTForCausalLM(OPTConfig(**tiny, ffn_dim=32, word_embed_proj_dim=16)).save_pretrained(tmp_path / "opt")
    assert not attends_across_packed_rows(llama)
    llama.forward = lambda **_: (_ for _ in ()).throw(RuntimeError("FlashAttention only supports CUDA tensors"))
    assert not attends_across_packed_rows(llama)  # a model that cannot run here yet is not refused
    module = CausalLMModule(pretrained_model_name_or_path=str(tmp_path / "opt"))
    assert attends_across_packed_rows(module.model)
    module.setup("fit")  # not packed: nothing to check
    module.packed_conversations = True
    with pytest.raises(UserError, match="data.packing=true: OPTForCausalLM attends across the conversations"):
        module.setup("fit")


@pytest.mark.parametrize("template, specials, eot", [
    ("qwen3", ["<|im_start|>", "<|im_end|>"], "<|im_end|>"),
    ("phi3", ["<|system|>", "<|user|>", "<|assistant|>", "<|end|>"], "<|end|>"),
])
def test_templates_that_render_the_last_turn_apart_train_each_reply(tmp_path: Path, template: str,
                                                                      specials: list[str], eot: str) -> None:
    """Qwen3 gives the last reply a thinking block, Phi-3 ends the whole conversation with EOS: a conversation's
    beginning renders differently from the whole, so each reply is found by its content, in order; what trains is
    each reply and its end-of-turn token, in multi-turn conversations too."""
    tok = train_tokenizer([m["content"] for c in CONVERSATIONS for m in c] * 5, "bpe", 400, tmp_path / "tok")
    tok.add_special_tokens({"additional_special_tokens": specials}, replace_extra_special_tokens=False)
    tok.chat_template = (TRL_TEMPLATES / f"{template}.jinja").read_text()
    ct.install_template(tok, None)
    assert ct.end_of_turn_id(tok) == tok.convert_tokens_to_ids(eot)
    rows = our_rows(tmp_path, tok, [{"messages": c} for c in (CONVERSATIONS[0], CONVERSATIONS[2])], max_length=4096)
    trained = [tok.decode([t for t in r["labels"] if t != IGNORE_INDEX]) for r in rows]
    # (the template keeps the spaces around the last reply's text, and so does what trains)
    assert trained == [f"Nice to meet you, Alice.{eot}Your name is Alice.{eot}", f"Noted.{eot} Your car is red. {eot}"]
