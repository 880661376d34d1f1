"""DDP on CPU (gloo): same science as one process, one run directory per job, sweeps that stay correct.

`hardware=ddp_sim` is 2 CPU processes started with ddp_spawn. Its runs are compared with a 1-process run of the
same global batch (per-device batch x 2): Lightning's DistributedSampler and our loader's sampler shuffle with
the same seed, so both runs put the same samples in each global batch, and with dropout off they agree to float
rounding. Seen: validation metrics within 5e-7, weights within 2e-7 (classification) and 9e-5 (GPT, Adam
amplifies rounding in near-zero gradients). Asserted: metrics within 1e-4, weights within 1e-3. For scale, the
same GPT run with another data order ends 2.4e-2 apart in weights and 9e-3 in val/loss; with half the batch
(what unsynced ranks would each train on), 2.1e-2 and 4.6e-2.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from multiprocessing.reduction import ForkingPickler  # with torch's tensor reductions: what mp.spawn pickles with
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict
from pytorch_lightning.strategies.launchers.multiprocessing import _disable_module_memory_sharing
from torchmetrics import Metric

from lightning_llm.tasks.classification import SequenceClassificationModule
from lightning_llm.train import train
from tests.conftest import REPO, TINY_BERT, TINY_GPT

# 20 optimizer steps of 32 samples, no dropout, no test/export (those add a second spawn and seconds).
CLASSIFY = ["experiment=classify_demo", *TINY_BERT, "model.dropout=0.0", "model.learning_rate=3e-3",
            "trainer.max_epochs=1", "+trainer.limit_train_batches=20", "test=false", "export=false"]
GPT = ["experiment=gpt_demo", *TINY_GPT, "model.max_position_embeddings=64", "data.block_size=32",
       "model.dropout=0.0", "trainer.max_epochs=1", "+trainer.limit_train_batches=12", "trainer.val_check_interval=1.0",
       "+trainer.limit_val_batches=8", "test=false", "export=false", "~callbacks.generation_samples"]
METRIC_ATOL, WEIGHT_ATOL = 1e-4, 1e-3


def _one_process(compose_cfg, overrides: list[str], out: Path) -> tuple[dict, dict]:
    cfg = compose_cfg(overrides)
    with open_dict(cfg):
        cfg.paths.output_dir = str(out)
    results = train(cfg)
    return results, _weights(out / "checkpoints" / "last.ckpt")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _run_dirs(root: Path) -> list[Path]:
    return sorted(p for p in root.glob("outputs/*/runs/*") if p.is_dir())


def _assert_same_training(one: tuple[dict, dict], ddp_dir: Path, metrics: list[str]) -> None:
    results = json.loads((ddp_dir / "results.json").read_text())
    assert results["status"] == "completed", results
    for name in metrics:
        assert results["val"][name] == pytest.approx(one[0]["val"][name], abs=METRIC_ATOL), name
    ddp_weights = _weights(ddp_dir / "checkpoints" / "last.ckpt")
    assert ddp_weights.keys() == one[1].keys()
    worst = max((ddp_weights[k].float() - one[1][k].float()).abs().max().item() for k in ddp_weights)
    assert worst < WEIGHT_ATOL, f"weights differ by up to {worst}"


def test_spawned_workers_own_their_metric_states() -> None:
    """ddp_spawn pickles the module to its workers with every CPU tensor in shared memory, and Lightning copies
    only parameters and buffers back out: `setup` must give metric states memory of their own, or the ranks'
    in-place updates add up in one tensor (DPO's validation pair count was doubled, its metrics halved)."""
    module = SequenceClassificationModule(model_type="bert", vocab_size=8, num_labels=2, label_names=["a", "b"],
                                          hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                          intermediate_size=32, max_position_embeddings=32)
    worker = _disable_module_memory_sharing(ForkingPickler.loads(ForkingPickler.dumps(module)))  # as in a worker

    def shared_states() -> list[str]:
        return [f"{name}.{state}" for name, metric in worker.named_modules() if isinstance(metric, Metric)
                for state in metric._defaults if isinstance(getattr(metric, state), torch.Tensor)
                and getattr(metric, state).is_shared()]

    assert shared_states() and not any(p.is_shared() for p in worker.parameters())
    worker.setup("fit")
    assert shared_states() == []


@pytest.mark.slow  # a CLI end-to-end run (~15-45 s on 2 cores)
def test_ddp_sim_classification_matches_one_process(compose_cfg, run_cli, tmp_path: Path) -> None:
    one = _one_process(compose_cfg, [*CLASSIFY, "data.batch_size=32"], tmp_path / "one")
    proc = run_cli("lightning_llm.train", *CLASSIFY, "data.batch_size=16", "hardware=ddp_sim")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dirs = _run_dirs(tmp_path)
    assert len(run_dirs) == 1, run_dirs  # the spawned ranks made no directories of their own
    _assert_same_training(one, run_dirs[0], ["val/loss", "val/acc", "val/f1"])
    # 20 global steps each: each rank took 20 batches of 16 from its own half of the data.
    steps = torch.load(run_dirs[0] / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert steps == 20


BUNDLED = REPO / "lightning_llm" / "data" / "bundled"


def _odd_split(train: str, source: str, path: Path, rows: int = 399) -> list[str]:
    """Data overrides: the bundled `train` file, and the first `rows` rows (plus a csv header) of a bundled file as
    validation and test splits: an odd number, so 2 ranks get 200 and 199."""
    lines = (BUNDLED / source).read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:rows + source.endswith(".csv")]))
    return [f"data.train_file={BUNDLED / train}", f"data.validation_file={path}", f"data.test_file={path}"]


def _assert_ddp_evaluation_matches_one_process(compose_cfg, run_cli, tmp_path: Path, overrides: list[str],
                                               exact: list[str], close: list[str]) -> None:
    """Train in one process, then `llm-eval` the best checkpoint under ddp_sim on the same 399-row test split.
    Lightning's DistributedSampler would score 400 rows, one of them twice."""
    cfg = compose_cfg([*overrides, "test=true"])
    with open_dict(cfg):
        cfg.paths.output_dir = str(tmp_path / "one")
    results = train(cfg)
    (tmp_path / "one" / ".hydra").mkdir()
    OmegaConf.save(cfg, tmp_path / "one" / ".hydra" / "config.yaml")  # as the CLI does: llm-eval reads the data config
    proc = run_cli("lightning_llm.evaluate", f"ckpt_path={results['best_checkpoint']}", "hardware=ddp_sim",
                   f"hydra.run.dir={tmp_path / 'eval'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = json.loads((tmp_path / "eval" / "eval_results.json").read_text())["test"]
    for name in exact:
        assert ddp[name] == results["test"][name], name
    for name in close:
        assert ddp[name] == pytest.approx(results["test"][name], rel=1e-6, abs=0), name


@pytest.mark.slow  # one training, one 2-process evaluation (~40 s)
def test_ddp_sim_classification_evaluation_counts_each_row_once(compose_cfg, run_cli, tmp_path: Path) -> None:
    data = _odd_split("reviews_train.csv", "reviews_validation.csv", tmp_path / "odd.csv")
    _assert_ddp_evaluation_matches_one_process(compose_cfg, run_cli, tmp_path, [*CLASSIFY, *data],
                                               exact=["test/acc", "test/f1"], close=["test/loss"])


@pytest.mark.slow
def test_ddp_sim_causal_lm_evaluation_counts_each_row_once(compose_cfg, run_cli, tmp_path: Path) -> None:
    # One story per line: 399 rows of varying length (training lines: parity, not generalisation, is measured).
    data = _odd_split("corpus_train.txt", "corpus_train.txt", tmp_path / "odd.txt")
    overrides = [o for o in GPT if not o.startswith("+trainer.limit_val_batches")]
    _assert_ddp_evaluation_matches_one_process(compose_cfg, run_cli, tmp_path, [*overrides, *data, "data.line_by_line=true"],
                                               exact=["test/token_acc"], close=["test/ppl", "test/loss"])


@pytest.mark.slow  # a 2-job sweep of 2-process jobs (~25 s)
def test_ddp_sim_sweep_runs_each_job_once_with_its_overrides(run_cli, tmp_path: Path) -> None:
    short = [o for o in CLASSIFY if not o.startswith(("+trainer.limit_train_batches", "model.learning_rate"))]
    proc = run_cli("lightning_llm.train", "-m", *short, "+trainer.limit_train_batches=3",
                   "+trainer.limit_val_batches=2", "hardware=ddp_sim", "model.learning_rate=0.001,0.002")
    assert proc.returncode == 0, proc.stderr[-3000:]
    sweeps = list(tmp_path.glob("outputs/*/multiruns/*"))
    assert len(sweeps) == 1, sweeps
    jobs = sorted(p for p in sweeps[0].iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [j.name for j in jobs] == ["0", "1"]
    assert not _run_dirs(tmp_path)  # no rank started a single run of its own
    for job, lr in zip(jobs, (0.001, 0.002)):
        overrides = (job / ".hydra" / "overrides.yaml").read_text()
        assert f"model.learning_rate={lr}" in overrides
        assert json.loads((job / "results.json").read_text())["status"] == "completed"
        ckpt = torch.load(job / "checkpoints" / "last.ckpt", weights_only=True)
        assert ckpt["hyper_parameters"]["learning_rate"] == lr


@pytest.mark.slow  # a CLI end-to-end run (~15-45 s on 2 cores)
def test_multirun_with_relaunching_ddp_is_refused_before_training(run_cli, tmp_path: Path) -> None:
    proc = run_cli("lightning_llm.train", "-m", *CLASSIFY, "hardware=ddp", "hardware.accelerator=cpu",
                   "hardware.devices=2", "seed=1,2")
    assert proc.returncode != 0
    output = proc.stdout + proc.stderr
    for alternative in ("ddp_spawn", "torchrun", "hydra/launcher=slurm"):
        assert alternative in output
    jobs = [p for p in tmp_path.glob("outputs/*/multiruns/*/*") if p.is_dir() and p.name.isdigit()]
    assert len(jobs) == 2
    for job in jobs:
        assert json.loads((job / "results.json").read_text())["status"] == "failed"
        assert not (job / "checkpoints").exists()


@pytest.mark.slow
def test_ddp_sim_gpt_matches_one_process(compose_cfg, run_cli, tmp_path: Path) -> None:
    one = _one_process(compose_cfg, [*GPT, "data.batch_size=8"], tmp_path / "one")
    proc = run_cli("lightning_llm.train", *GPT, "data.batch_size=4", "hardware=ddp_sim")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dirs = _run_dirs(tmp_path)
    assert len(run_dirs) == 1, run_dirs
    _assert_same_training(one, run_dirs[0], ["val/loss", "val/token_acc"])


@pytest.mark.slow
def test_script_launched_ddp_single_run_shares_the_run_dir(run_cli, tmp_path: Path) -> None:
    """strategy=ddp re-runs the command for rank 1 with hydra.run.dir=<rank 0's>: one directory, the whole job
    (fit, test, export) run by both ranks; tokenization once into a fresh cache (the other rank waits on its lock)."""
    cache = tmp_path / "fresh_cache"
    proc = run_cli("lightning_llm.train", *CLASSIFY, "test=true", "data.batch_size=16", "hardware=ddp",
                   "hardware.accelerator=cpu", "hardware.devices=2", "hardware.precision=32-true",
                   env={"LIGHTNING_LLM_CACHE": str(cache)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dirs = _run_dirs(tmp_path)
    assert len(run_dirs) == 1, run_dirs
    results = json.loads((run_dirs[0] / "results.json").read_text())
    assert results["status"] == "completed" and results["global_step"] == 20
    assert "test/acc" in results["test"]
    tokenized = [p for p in (cache / "tokenized").iterdir() if p.is_dir()]
    assert len(tokenized) == 1 and not tokenized[0].name.endswith(".tmp"), tokenized


@pytest.mark.slow
def test_torchrun_ranks_share_rank_zero_run_dir(tmp_path: Path) -> None:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "lightning_llm.train", *CLASSIFY, "data.batch_size=16", "hardware=ddp", "hardware.accelerator=cpu",
           "hardware.devices=2"]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=os.environ.copy())
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dirs = _run_dirs(tmp_path)
    assert len(run_dirs) == 1, run_dirs
    assert json.loads((run_dirs[0] / "results.json").read_text())["status"] == "completed"


CHAT = ["model=gpt", "data=chat", *TINY_GPT, "model.model_type=llama", "model.max_position_embeddings=256",
        "data.chat_template=chatml", "data.max_length=160", "model.dropout=0.0", "model.learning_rate=3e-3",
        "trainer.max_epochs=1", "+trainer.limit_train_batches=10", "trainer.val_check_interval=1.0",
        "+trainer.limit_val_batches=4", "test=false", "export=false", "~callbacks.generation_samples"]


@pytest.mark.slow
def test_ddp_sim_chat_matches_one_process(compose_cfg, run_cli, tmp_path: Path) -> None:
    """Conversations of different lengths: each step's gradient is the token mean over both ranks' batches (as
    in one process with both), not the mean of the two ranks' means; validation sums over ranks."""
    one = _one_process(compose_cfg, [*CHAT, "data.batch_size=8"], tmp_path / "one")
    proc = run_cli("lightning_llm.train", *CHAT, "data.batch_size=4", "hardware=ddp_sim")
    assert proc.returncode == 0, proc.stderr[-3000:]
    run_dirs = _run_dirs(tmp_path)
    assert len(run_dirs) == 1, run_dirs
    _assert_same_training(one, run_dirs[0], ["val/loss", "val/token_acc"])
