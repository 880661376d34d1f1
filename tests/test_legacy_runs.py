"""Run directories and checkpoints written by the version before the task redesign (lightning-llm 0.1.0, whose
classes lived in lightning_llm.modules.* / lightning_llm.data.*) still evaluate, predict, generate and resume.
The fixture (tests/fixtures/legacy_run/) was written by that version: a tiny classify_demo run stopped at step 2
(`trainer.max_steps=2`: last.ckpt resumes) and a tiny gpt_demo run, their saved configs and checkpoints naming the
old class paths."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO

FIXTURE = REPO / "tests" / "fixtures" / "legacy_run"
TINY = ["model.hidden_size=32", "model.num_hidden_layers=1", "model.num_attention_heads=2",
        "model.intermediate_size=64", "model.max_position_embeddings=64", "model.tokenizer_vocab_size=300"]


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    """A writable copy of the fixture (a resumed run writes into its run directory)."""
    shutil.copytree(FIXTURE, tmp_path / "legacy")
    return tmp_path / "legacy"


def test_an_old_checkpoint_still_evaluates_to_its_own_test_metrics(run_cli, legacy: Path) -> None:
    """The old run tested its best checkpoint on the bundled test split: llm-eval of it gives the same numbers."""
    ckpt = next((legacy / "cls" / "checkpoints").glob("best-*.ckpt"))
    proc = run_cli("lightning_llm.evaluate", f"ckpt_path={ckpt}", f"hydra.run.dir={legacy / 'eval'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    scored = json.loads((legacy / "eval" / "eval_results.json").read_text())
    recorded = json.loads((legacy / "cls" / "results.json").read_text())["test"]
    for name in ("test/acc", "test/f1", "test/loss"):
        assert scored["test"][name] == pytest.approx(recorded[name], abs=1e-6), name


def test_an_old_run_still_predicts(run_cli, legacy: Path, tmp_path: Path) -> None:
    texts = tmp_path / "texts.txt"
    texts.write_text("a wonderful, moving film\nthe plot was dull and slow\n")
    proc = run_cli("lightning_llm.predict", f"model_path={legacy / 'cls'}", f"input_file={texts}",
                   f"output_file={tmp_path / 'out.jsonl'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [r["text"] for r in rows] == ["a wonderful, moving film", "the plot was dull and slow"]
    assert all(r["label"] in ("positive", "negative") and 0.5 <= r["probability"] <= 1 for r in rows)


@pytest.mark.slow
def test_an_old_gpt_run_still_generates(run_cli, legacy: Path, tmp_path: Path) -> None:
    ckpt = next((legacy / "gpt" / "checkpoints").glob("best-*.ckpt"))
    for model_path in (legacy / "gpt", ckpt):
        proc = run_cli("lightning_llm.generate", f"model_path={model_path}", "prompt=The crow", "max_new_tokens=4",
                       "do_sample=false", f"output_file={tmp_path / 'gen.jsonl'}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        row = json.loads((tmp_path / "gen.jsonl").read_text().splitlines()[0])
        assert row["prompt"] == "The crow" and len(row["generations"]) == 1


@pytest.mark.slow
def test_an_old_checkpoint_still_resumes(run_cli, legacy: Path) -> None:
    ckpt = legacy / "cls" / "checkpoints" / "last.ckpt"
    proc = run_cli("lightning_llm.train", "experiment=classify_demo", *TINY, "trainer.max_steps=4",
                   "trainer.val_check_interval=2", "logger=none", f"ckpt_path={ckpt}",
                   f"hydra.run.dir={legacy / 'resumed'}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((legacy / "resumed" / "results.json").read_text())
    assert results["status"] == "completed" and results["global_step"] == 4
    assert 0 < results["test"]["test/acc"] < 1
