"""DPO (model=dpo, data=preference): encoding, batches, log-probabilities, rewards and losses equal TRL's DPOTrainer
(1.16) on identical weights and the same batch, with the frozen-copy and the LoRA adapters-off reference; bad
preference rows fail in one line; a tiny llm-train run trains, tests and exports."""

from __future__ import annotations

import json
import os
from pathlib import Path

import optuna
import pytest
import torch
import trl
from datasets import Dataset
from omegaconf import OmegaConf
from peft import LoraConfig
from transformers import LlamaConfig, LlamaForCausalLM

from lightning_llm.data import chat_templates as ct
from lightning_llm.data.tokenizers import train_tokenizer
from lightning_llm.errors import UserError
from lightning_llm.generate import generate
from lightning_llm.runtime.results import PREEMPTED_EXIT_CODE
from lightning_llm.tasks.dpo import DPOModule, PreferenceDataModule
from tests.conftest import prepared_datamodule, write_jsonl
from tests.test_chat_cli import _plain_reply
from tests.test_ddp import _assert_same_training, _one_process, _run_dirs
from tests.test_resume import KILL_AT, PREEMPT, results, train_losses

PROMPTS = [[{"role": "user", "content": "What is 3 plus 4?"}],
           [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Hi, I am Alice."},
            {"role": "assistant", "content": "Nice to meet you, Alice."},
            {"role": "user", "content": "What is my name?"}],
           [{"role": "user", "content": "I have a red car and a blue hat."}, {"role": "assistant", "content": "Noted."},
            {"role": "user", "content": "What colour is my car?"}]]
REPLIES = [("3 plus 4 is 7.", "3 plus 4 is 8."), ("Your name is Alice.", "Your name is Bob, I think."),
           ("Your car is red.", "Your car is blue.")]
CONVERSATIONAL = [{"prompt": p, "chosen": [{"role": "assistant", "content": c}],
                   "rejected": [{"role": "assistant", "content": r}]} for p, (c, r) in zip(PROMPTS, REPLIES)]
PLAIN = [{"prompt": p[-1]["content"] + " ", "chosen": c, "rejected": r} for p, (c, r) in zip(PROMPTS, REPLIES)]
METRICS = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
           "logps/rejected")


@pytest.fixture(scope="module")
def start(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A tiny Llama + byte-level BPE with the ChatML template, saved like an SFT run's hf_model/."""
    path = tmp_path_factory.mktemp("start")
    texts = [m["content"] for p in PROMPTS for m in p] + [t for pair in REPLIES for t in pair]
    tok = train_tokenizer(texts * 5, "bpe", 300, path / "tok")
    ct.install_template(tok, "chatml")
    tok.pad_token = tok.pad_token or tok.eos_token
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2,
                                         num_attention_heads=4, intermediate_size=64, max_position_embeddings=128,
                                         pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path, tok


def our_data(tmp_path: Path, tok: object, rows: list[dict], **settings: object) -> PreferenceDataModule:
    file = write_jsonl(tmp_path / "pairs.jsonl", rows)
    return prepared_datamodule(PreferenceDataModule, tmp_path, {"train": file, "validation": file, "test": None},
                               tokenizer=tok, objective="dpo", **settings)


def perturb(model: torch.nn.Module, only: str = "") -> None:
    """Seeded noise on the (named) trainable weights, the same in both frameworks: policy != reference."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            if only in name:
                p.add_(0.05 * torch.randn(p.shape, generator=generator))


def trl_trainer(tmp_path: Path, start: Path, tok: object, rows: list[dict], lora: bool,
                **config: object) -> trl.DPOTrainer:
    args = trl.DPOConfig(output_dir=str(tmp_path / "trl"), report_to=[], use_cpu=True, bf16=False,
                         per_device_train_batch_size=len(rows), dataset_num_proc=None, **config)
    peft_config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"],
                             task_type="CAUSAL_LM") if lora else None
    return trl.DPOTrainer(model=str(start), args=args, train_dataset=Dataset.from_list(rows), processing_class=tok,
                          peft_config=peft_config)


def trl_values(trainer: trl.DPOTrainer, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    trainer.model.train()
    trainer._metrics["train"].clear()
    loss = trainer.compute_loss(trainer.model, batch)
    return {"loss": float(loss), **{k: v[-1] for k, v in trainer._metrics["train"].items() if k in METRICS}}


@pytest.mark.parametrize("lora", [False, True], ids=["frozen_copy", "lora_adapters_off"])
@pytest.mark.parametrize("kind,loss", [("conversational", {"loss_type": "sigmoid"}),
                                       ("plain", {"loss_type": "ipo", "beta": 0.3}),
                                       ("conversational", {"loss_type": "robust", "label_smoothing": 0.1}),
                                       ("conversational", {"loss_type": "sigmoid", "sft_weight": 0.5})])
def test_equals_trl(tmp_path: Path, start: tuple[Path, object], lora: bool, kind: str, loss: dict) -> None:
    path, tok = start
    rows = CONVERSATIONAL if kind == "conversational" else PLAIN
    uncut = our_data(tmp_path / "uncut", tok, rows, max_length=None)
    max_length = max(len(r["prompt_ids"]) for r in uncut.datasets["train"]) + 3  # cuts the longest prompt's replies
    trl_loss = {k: [v] if k == "loss_type" else v for k, v in loss.items() if k != "sft_weight"}
    if "sft_weight" in loss:  # TRL: a weighted sum of loss types
        trl_loss.update(loss_type=[loss["loss_type"], "sft"], loss_weights=[1.0, loss["sft_weight"]])
    trainer = trl_trainer(tmp_path, path, tok, rows, lora, max_length=max_length, **trl_loss)
    dm = our_data(tmp_path, tok, rows, max_length=max_length, batch_size=len(rows))
    ours_rows = [{k: r[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for r in dm.datasets["train"]]
    theirs_rows = [{k: r[k] for k in ("prompt_ids", "chosen_ids", "rejected_ids")} for r in trainer.train_dataset]
    assert ours_rows == theirs_rows
    batch = dm.collate_fn(list(dm.datasets["train"]))
    theirs_batch = trainer.data_collator(list(trainer.train_dataset))
    assert int(batch["completion_mask"].sum()) < sum(len(r["chosen_ids"]) + len(r["rejected_ids"]) for r in ours_rows)
    for key in ("input_ids", "attention_mask", "completion_mask"):
        assert torch.equal(batch[key], theirs_batch[key]), key

    peft = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]} if lora else None
    module = DPOModule(pretrained_model_name_or_path=str(path), vocab_size=len(tok), peft=peft, **loss)
    assert (module.reference is None) == lora
    for model in (module.model, trainer.model):
        perturb(model, "lora_B" if lora else "")
    module.train()
    ours = module.pair_forward(batch)
    assert torch.allclose(ours["losses"].mean(), torch.tensor(trl_values(trainer, theirs_batch)["loss"]), atol=1e-5)
    for i in range(len(rows)):  # per pair: TRL's metrics are batch means, so one pair per batch
        one = trainer.data_collator([trainer.train_dataset[i]])
        theirs = trl_values(trainer, one)
        for name in METRICS:
            if name == "loss" and "sft_weight" in loss:
                continue  # the NLL term is a token mean over the batch: compared on the whole batch above
            if name == "rewards/accuracies" and abs(theirs["rewards/margins"]) < 1e-5:
                continue  # a tie: which side wins is float noise (the margins themselves are compared to 1e-5)
            value = ours["losses"][i] if name == "loss" else ours[name][i]
            assert abs(float(value) - theirs[name]) < 1e-5, (i, name, float(value), theirs[name])
    assert float(ours["rewards/chosen"].abs().sum()) > 1e-3  # the policy differs from the reference


BAD = [({"prompt": "Q?", "chosen": "A.", "rejected": "A."}, "chosen equals rejected"),
       ({"prompt": "Q?", "chosen": "A.", "rejected": "  "}, "rejected is empty"),
       ({"prompt": [{"role": "user", "content": "Q?"}], "chosen": [{"role": "assistant", "content": ""}],
         "rejected": "B."}, "chosen[0] (assistant) has empty content"),
       ({"prompt": "Q?", "chosen": "A."}, "no 'rejected'"),
       ({"prompt": "word " * 40, "chosen": "A.", "rejected": "B."}, "leaves no room for a reply")]


@pytest.mark.parametrize("row,message", BAD, ids=["equal", "empty", "empty_message", "missing", "long_prompt"])
def test_bad_pairs_fail_naming_the_row(tmp_path: Path, start: tuple[Path, object], row: dict, message: str) -> None:
    _, tok = start
    with pytest.raises(UserError) as err:
        our_data(tmp_path, tok, [PLAIN[0], row], max_length=32)
    text = str(err.value)
    assert "row 2" in text and message in text and "\n" not in text, text


def test_prompt_budget_settings(tmp_path: Path, start: tuple[Path, object]) -> None:
    """max_prompt_length keeps the end of a long prompt; keep_end keeps the end of each sequence."""
    _, tok = start
    long = {"prompt": "word " * 40, "chosen": "A.", "rejected": "B."}
    dm = our_data(tmp_path, tok, [long], max_length=32, max_prompt_length=8)
    row = dm.datasets["train"][0]
    assert len(row["prompt_ids"]) == 8
    batch = dm.collate_fn([row])
    assert batch["input_ids"].shape[1] <= 32 and batch["completion_mask"].sum() > 0
    dm = our_data(tmp_path / "end", tok, [long], max_length=16, truncation_mode="keep_end")
    batch = dm.collate_fn([dm.datasets["train"][0]])
    assert batch["input_ids"].shape[1] == 16 and batch["completion_mask"][:, -1].all()
    with pytest.raises(UserError, match="max_prompt_length"):
        PreferenceDataModule(tokenizer=tok, objective="dpo", max_length=16, max_prompt_length=16)


@pytest.mark.slow
def test_llm_train_tiny_run(tmp_path: Path, start: tuple[Path, object], run_cli: object, compose_cfg) -> None:
    """model=dpo data=preference end to end (bundled pairs cut short): trains, tests, exports, writes the metrics;
    llm-generate on the run replies through the chat template as plain transformers does on its hf_model/."""
    path, _ = start
    result = run_cli("lightning_llm.train", "model=dpo", "data=preference", "debug=limit",
                     f"model.pretrained_model_name_or_path={path}", "trainer.max_steps=3", "data.batch_size=4",
                     "logger=csv", f"paths.output_dir={tmp_path / 'run'}")
    assert result.returncode == 0, result.stderr
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["optimized_metric"]["name"] == "val/rewards/accuracies"
    assert {f"test/{m}" for m in METRICS} <= set(results["test"])
    assert (tmp_path / "run" / "hf_model" / "config.json").exists()
    messages = [{"role": "user", "content": "What is 3 plus 4?"}]
    records = generate(compose_cfg([f"model_path={tmp_path / 'run'}", "prompt=What is 3 plus 4?",
                                    "max_new_tokens=8"], config_name="generate"))
    assert records[0]["messages"] == messages
    assert records[0]["generations"] == [_plain_reply(tmp_path / "run" / "hf_model", messages, 8)]


def _sums_run(tmp_path: Path, start: Path, epochs: int = 1) -> list[str]:
    """llm-train overrides for 6 steps an epoch of DPO from `start` on conversational pairs the tiny model can
    hold: "a plus b" with the right sum chosen, a wrong one rejected; 48 training pairs, 33 validation pairs."""
    sums = [{"prompt": [{"role": "user", "content": f"What is {a} plus {b}?"}],
             "chosen": [{"role": "assistant", "content": f"{a} plus {b} is {a + b}."}],
             "rejected": [{"role": "assistant", "content": f"{a} plus {b} is {a + b + 1 + a % 3}."}]}
            for a in range(1, 10) for b in range(1, 10)]
    train = write_jsonl(tmp_path / "train.jsonl", sums[:48])
    validation = write_jsonl(tmp_path / "validation.jsonl", sums[48:81])
    return ["model=dpo", "data=preference", f"model.pretrained_model_name_or_path={start}", f"data.train_file={train}",
            f"data.validation_file={validation}", "model.learning_rate=1e-3", f"trainer.max_epochs={epochs}",
            "+trainer.limit_train_batches=6", "trainer.val_check_interval=1.0", "test=false", "export=false",
            "logger=csv"]


@pytest.mark.slow
def test_precomputed_reference_trains_like_the_frozen_copy(tmp_path: Path, start: tuple[Path, object],
                                                           compose_cfg) -> None:
    """precompute_ref_log_probs=true (the reference scored once before training, cached beside the tokenized
    data, its copy freed) trains and validates like the frozen copy scored at every step."""
    args = [*_sums_run(tmp_path, start[0]), "data.batch_size=8"]
    live = _one_process(compose_cfg, args, tmp_path / "live")
    precomputed = _one_process(compose_cfg, [*args, "model.precompute_ref_log_probs=true"], tmp_path / "precomputed")
    cached = list(Path(os.environ["LIGHTNING_LLM_CACHE"]).rglob("reference-*.npz"))
    assert len(cached) == 1, cached
    assert live[0]["val"]["val/rewards/margins"] != 0
    for name in METRICS:
        assert precomputed[0]["val"][f"val/{name}"] == pytest.approx(live[0]["val"][f"val/{name}"], abs=1e-4), name
    policy = [key for key in live[1] if key.startswith("model.")]
    assert policy and not any(key.startswith("reference.") for key in precomputed[1])  # the copy was freed
    assert max((live[1][k] - precomputed[1][k]).abs().max().item() for k in policy) < 1e-4


@pytest.mark.slow
def test_ddp_sim_matches_one_process(tmp_path: Path, start: tuple[Path, object], compose_cfg, run_cli) -> None:
    """Two ranks of 4 pairs train like one process with 8 (DPO's loss is a mean over pairs and the ranks' batches
    are equal), and validation over an odd number of pairs (33: 17 and 16) counts each pair once, gathered over
    ranks."""
    args = _sums_run(tmp_path, start[0])
    one = _one_process(compose_cfg, [*args, "data.batch_size=8"], tmp_path / "one")
    proc = run_cli("lightning_llm.train", *args, "data.batch_size=4", "hardware=ddp_sim")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = _run_dirs(tmp_path)
    assert one[0]["val"]["val/rewards/margins"] != 0  # the policy moved away from the reference
    _assert_same_training(one, run_dir, [f"val/{m}" for m in METRICS])


@pytest.mark.slow
def test_sigterm_mid_epoch_then_resume_matches_uninterrupted_run(tmp_path: Path, start: tuple[Path, object],
                                                                 run_cli) -> None:
    """A DPO run preempted mid-epoch and relaunched with ckpt_path=last (policy, frozen reference, optimizer, data
    position) trains exactly like the uninterrupted run: same per-step losses after the restart, same final
    validation metrics."""
    args = [*_sums_run(tmp_path, start[0], epochs=2), "data.batch_size=4", "trainer.log_every_n_steps=1"]
    env = {"OMP_NUM_THREADS": "1"}
    proc = run_cli("lightning_llm.train", *args, f"paths.output_dir={tmp_path / 'reference'}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dir = tmp_path / "preempted"
    proc = run_cli("lightning_llm.train", *args, *PREEMPT, f"paths.output_dir={run_dir}", env=env)
    assert proc.returncode == PREEMPTED_EXIT_CODE, proc.stderr[-3000:]
    proc = run_cli("lightning_llm.train", *args, *PREEMPT, "ckpt_path=last", f"paths.output_dir={run_dir}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming from {run_dir / 'checkpoints' / 'last.ckpt'}" in proc.stdout
    expected, resumed = train_losses(tmp_path / "reference"), train_losses(run_dir)
    assert len(expected) == 12 and len(set(expected.values())) > 1
    assert {step: loss for step, loss in resumed.items() if step >= KILL_AT} == \
        {step: loss for step, loss in expected.items() if step >= KILL_AT}
    final, reference = results(run_dir), results(tmp_path / "reference")
    assert final["global_step"] == reference["global_step"] == 12
    assert final["val"] == reference["val"] and final["val"]["val/rewards/margins"] != 0


@pytest.mark.slow
def test_optuna_search_over_beta_maximizes_reward_accuracy(tmp_path: Path, start: tuple[Path, object],
                                                           run_cli) -> None:
    """`hparams_search=optuna model.beta='interval(...)'`: each trial trains with its sampled beta and reports
    val/rewards/accuracies, and the study maximizes it (a DPO model's optimized metric)."""
    args = [*_sums_run(tmp_path, start[0], epochs=2), "hparams_search=optuna", "model.beta=interval(0.05, 0.5)",
            "hydra.sweeper.n_trials=3", "hydra.sweeper.pruner=median"]
    proc = run_cli("lightning_llm.train", *args, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    (sweep_dir,) = {p.parent for p in tmp_path.glob("outputs/dpo/multiruns/*/multirun.yaml")}
    best = OmegaConf.load(sweep_dir / "optimization_results.yaml")
    study = optuna.load_study(study_name="dpo", storage=f"sqlite:///{tmp_path}/outputs/dpo/optuna.db")
    assert study.direction == optuna.study.StudyDirection.MAXIMIZE and len(study.trials) == 3
    values = []
    for trial in study.trials:
        job = sweep_dir / str(trial.number)
        results = json.loads((job / "results.json").read_text())
        assert results["optimized_metric"]["name"] == "val/rewards/accuracies"
        assert results["optimized_metric"]["value"] == pytest.approx(trial.value)
        # The pruner saw the objective after each validation (a share of the 33 validation pairs), not val/loss.
        reported = list(trial.intermediate_values.values())
        assert reported and all(abs(v * 33 - round(v * 33)) < 1e-4 for v in reported), reported
        assert OmegaConf.load(job / ".hydra" / "config.yaml").model.beta == pytest.approx(trial.params["model.beta"])
        values.append(trial.value)
    assert best.best_value == pytest.approx(max(values)) and len(set(t.params["model.beta"] for t in study.trials)) == 3


def test_ultrafeedback_shape_reads_as_the_conversational_pairs(tmp_path: Path, start: tuple[Path, object]) -> None:
    """HuggingFaceH4/ultrafeedback_binarized: a prompt string beside chosen/rejected whole conversations that begin
    with the user's turn; and a prompt string beside assistant-only lists (read as the user's message). Both
    encode as TRL's conversational pairs do."""
    _, tok = start
    whole = [{"prompt": p[-1]["content"], "chosen": [*p, {"role": "assistant", "content": c}],
              "rejected": [*p, {"role": "assistant", "content": r}], "score_chosen": 8.0}
             for p, (c, r) in zip(PROMPTS, REPLIES)]
    expected = list(our_data(tmp_path / "c", tok, CONVERSATIONAL).datasets["train"])
    assert list(our_data(tmp_path / "w", tok, whole).datasets["train"]) == expected
    single = [row for row in CONVERSATIONAL if len(row["prompt"]) == 1]
    replies_only = [{**row, "prompt": row["prompt"][0]["content"]} for row in single]
    assert single
    assert (list(our_data(tmp_path / "r", tok, replies_only).datasets["train"])
            == list(our_data(tmp_path / "s", tok, single).datasets["train"]))


def test_a_precompute_runs_checkpoint_is_scored_against_the_starting_weights(start: tuple[Path, object]) -> None:
    """llm-eval rebuilds a checkpoint's module from its saved config (untrained weights, then the checkpoint's):
    with precompute_ref_log_probs the reference is not in the checkpoint, so it is the starting weights loaded
    again, not a copy of the untrained ones."""
    path, tok = start
    hf_config = LlamaConfig.from_pretrained(path).to_dict()
    module = DPOModule(pretrained_model_name_or_path=str(path), hf_config=hf_config, precompute_ref_log_probs=True)
    reference = module._starting_model().state_dict()
    for name, weight in LlamaForCausalLM.from_pretrained(path).state_dict().items():
        assert torch.equal(reference[name], weight), name


def test_the_best_checkpoint_is_chosen_by_loss_and_sweeps_by_accuracy(start: tuple[Path, object], compose_cfg) -> None:
    """Reward accuracy moves in steps of 1/pairs and ties keep the first checkpoint (an early one exported);
    across a sweep over beta the loss is not comparable, the accuracy is."""
    cfg = compose_cfg(["model=dpo", "data=preference", f"model.pretrained_model_name_or_path={start[0]}"])
    assert (cfg.monitor.metric, cfg.monitor.mode) == ("val/loss", "min")
    assert cfg.optimized_metric == "val/rewards/accuracies"
