"""Chat SFT end to end: a tiny `llm-train model=gpt data=chat` run, its export chatting in plain transformers,
`llm-generate` replying through the chat template, and `llm-chat` in a pseudo terminal."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pexpect
import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from transformers import AutoModelForCausalLM, AutoTokenizer

from lightning_llm.generate import generate
from lightning_llm.train import train
from tests.conftest import TINY_GPT, compose_run_config

# A tiny chat run shared by the module, then the commands on it: CLI-heavy, so in the slow suite (CI runs it).
pytestmark = pytest.mark.slow


RUN = ["model=gpt", "data=chat", *TINY_GPT, "model.model_type=llama", "model.max_position_embeddings=256",
       "data.chat_template=chatml", "data.max_length=160", "data.batch_size=16", "trainer.max_epochs=1",
       "++trainer.limit_train_batches=12", "++trainer.limit_val_batches=2", "++trainer.limit_test_batches=2",
       "model.learning_rate=3e-3", "model.eval_generation_samples=4", "callbacks.rich_progress_bar=null",
       "callbacks.generation_samples=null"]


@pytest.fixture(scope="module")
def chat_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    run = tmp_path_factory.mktemp("chat") / "run"
    results = train(compose_run_config(run, RUN))
    GlobalHydra.instance().clear()
    return run, results


def _plain_reply(hf_dir: Path, messages: list[dict], max_new_tokens: int) -> str:
    """What plain transformers replies (greedy) with the export's own template and generation_config."""
    tokenizer = AutoTokenizer.from_pretrained(str(hf_dir))
    model = AutoModelForCausalLM.from_pretrained(str(hf_dir)).eval()
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                        return_dict=True)["input_ids"]
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=max_new_tokens, do_sample=False)
    return tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()


def test_chat_run_metrics_and_export(chat_run) -> None:
    run, results = chat_run
    for stage in ("val", "test"):
        for name in ("loss", "ppl", "token_acc"):
            assert f"{stage}/{name}" in results[stage]
    assert results["val"]["val/unigram_ppl"] > 1 and results["val"]["val/token_acc"] > 0
    assert "val/reply_exact_match" in results["val"]
    predictions = [json.loads(line) for line in (run / "predictions_val.jsonl").read_text().splitlines()]
    assert len(predictions) == 4 and {"messages", "reference", "prediction"} <= set(predictions[0])
    tokenizer = AutoTokenizer.from_pretrained(str(run / "hf_model"))
    assert "<|im_start|>" in tokenizer.chat_template
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is 2 plus 2?"}], tokenize=False,
                                         add_generation_prompt=True)
    assert text == "<|im_start|>user\nWhat is 2 plus 2?<|im_end|>\n<|im_start|>assistant\n"
    config = json.loads((run / "hf_model" / "generation_config.json").read_text())
    assert tokenizer.convert_tokens_to_ids("<|im_end|>") in config["eos_token_id"]  # replies stop at end of turn


def test_generate_replies_through_the_template(chat_run, compose_cfg) -> None:
    run, _ = chat_run
    cfg = compose_cfg([f"model_path={run}", "prompt=What is 3 plus 4?", "system=Answer briefly.",
                       "max_new_tokens=12"], config_name="generate")
    records = generate(cfg)
    messages = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "What is 3 plus 4?"}]
    assert records[0]["messages"] == messages
    assert records[0]["generations"] == [_plain_reply(run / "hf_model", messages, 12)]
    conversations = Path(cfg.paths.output_dir).parent / "conversations.jsonl"
    conversations.write_text(json.dumps({"messages": messages}) + "\n")
    from_file = generate(compose_cfg([f"model_path={run}", f"messages_file={conversations}", "max_new_tokens=12"],
                                     config_name="generate"))
    assert from_file[0]["generations"] == records[0]["generations"]


def test_llm_chat_in_a_pseudo_terminal(chat_run, tmp_path: Path) -> None:
    run, _ = chat_run
    child = pexpect.spawn(sys.executable, ["-m", "lightning_llm.chat", f"model_path={run}", "max_new_tokens=12",
                                           f"paths.output_dir={tmp_path / 'out'}"],
                          cwd=str(tmp_path), env={**os.environ, "TERM": "dumb"}, encoding="utf-8", timeout=120)
    child.expect("chatting with")
    child.expect("> ")
    turns: list[dict] = []
    for question in ("What is 3 plus 4?", "What is the capital of Peru?"):
        child.sendline(question)
        child.expect("> ")  # the streamed reply, then the next prompt
        shown = child.before.replace("\r", "").split("\n", 1)[1].strip()  # after the echoed input line
        turns.append({"role": "user", "content": question})
        expected = _plain_reply(run / "hf_model", turns, 12)
        assert shown == expected
        turns.append({"role": "assistant", "content": expected})
    child.sendline("/system Answer briefly.")
    child.expect(r"\(system message set; conversation cleared\)")
    child.expect("> ")
    child.sendline("/reset")
    child.expect(r"\(conversation cleared\)")
    child.expect("> ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_llm_eval_on_another_file(chat_run, run_cli, tmp_path: Path) -> None:
    """A new test file encoded as the run's data (its tokenizer's template): its metrics are the run's test
    metrics when the file is the bundled test split itself. (A run made by the CLI has .hydra/config.yaml and
    needs no data=chat; this in-process one has none.)"""
    run, results = chat_run
    from lightning_llm.data.sources import BUNDLED_DIR

    other = tmp_path / "other.jsonl"
    other.write_text((BUNDLED_DIR / "chat_test.jsonl").read_text())
    proc = run_cli("lightning_llm.evaluate", f"ckpt_path={results['best_checkpoint']}", "data=chat", f"data.test_file={other}",
                   "data.max_length=160", "data.batch_size=16", f"paths.output_dir={tmp_path / 'eval'}", "++trainer.limit_test_batches=2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = json.loads((tmp_path / "eval" / "eval_results.json").read_text())["test"]
    assert evaluated["test/loss"] == pytest.approx(results["test"]["test/loss"], abs=1e-5)


def test_lora_continues_a_chat_model(chat_run, tmp_path: Path) -> None:
    """peft=lora on the SFT export (its tokenizer already holds the ChatML tokens): the adapters train, the
    merged export keeps the template, and the validation loss goes down."""
    run, results = chat_run
    overrides = [o for o in RUN if not o.startswith(("model.eval_generation_samples", "model.learning_rate"))]
    cfg = compose_run_config(tmp_path / "lora", [*overrides, f"model.pretrained_model_name_or_path={run}/hf_model",
                                                 "peft=lora", "model.learning_rate=5e-3", "test=false"])
    lora = train(cfg)
    GlobalHydra.instance().clear()
    assert lora["val"]["val/loss"] < results["val"]["val/loss"]
    assert (tmp_path / "lora" / "hf_adapter" / "adapter_model.safetensors").exists()
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path / "lora" / "hf_model"))
    assert "<|im_start|>" in tokenizer.chat_template
    AutoModelForCausalLM.from_pretrained(str(tmp_path / "lora" / "hf_model"))  # the merged model loads plainly


def test_reply_scoring_leaves_out_prompts_beyond_the_context(chat_run) -> None:
    from lightning_llm.modules.generation import score_replies

    run, _ = chat_run
    model = AutoModelForCausalLM.from_pretrained(str(run / "hf_model")).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(run / "hf_model"))
    long = [{"role": "user", "content": "I have a red car. " * 100}]  # past the 256 positions
    share, records = score_replies(model, tokenizer, [{"messages": long, "reference": "Noted."},
                                                      {"messages": [{"role": "user", "content": "Hi"}],
                                                       "reference": "Noted."}])
    assert [r["messages"] for r in records] == [[{"role": "user", "content": "Hi"}]]
    assert share in (0.0, 1.0)
