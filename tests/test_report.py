"""`llm-report` on a sweep directory: table (markdown + CSV) ranked by the optimized metric in its direction,
failed jobs listed last with their error, PNG plots of the metric per swept parameter and learning curves."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from lightning_llm.report import main

PNG = b"\x89PNG"


def fake_sweep(root: Path, name: str = "2030-01-01_00-00-00_000000") -> Path:
    """A multirun directory as llm-train leaves it: 3 learning rates x fixed batch size, job 2 crashed."""
    sweep = root / "multiruns" / name
    sweep.mkdir(parents=True)
    OmegaConf.save({"hydra": {"overrides": {"task": ["model.learning_rate=1e-4,1e-3,1e-2", "data.batch_size=16"]}}},
                   sweep / "multirun.yaml")
    for job, lr, acc, loss in (("0", "1e-4", 0.70, 0.60), ("1", "1e-3", 0.90, 0.30), ("2", "1e-2", None, None)):
        (sweep / job / ".hydra").mkdir(parents=True)
        OmegaConf.save([f"model.learning_rate={lr}", "data.batch_size=16"], sweep / job / ".hydra" / "overrides.yaml")
        if acc is None:
            results = {"status": "failed", "error": "ValueError: loss is NaN at step 3",
                       "optimized_metric": {"name": "val/acc_best", "value": None}}
        else:
            results = {"status": "completed", "optimized_metric": {"name": "val/acc_best", "value": acc},
                       "val": {"val/acc_best": acc, "val/loss": loss}, "test": {"test/acc": acc - 0.05}}
            (sweep / job / "csv").mkdir()
            with open(sweep / job / "csv" / "metrics.csv", "w", newline="") as f:
                writer = csv.writer(f)
                writer.writerow(["epoch", "step", "train/loss", "val/acc", "val/acc_best"])
                writer.writerows([[0, 4, 0.9, "", ""], [0, 9, "", acc - 0.1, acc - 0.1], [1, 14, 0.5, "", ""],
                                  [1, 19, "", acc, acc]])
        (sweep / job / "results.json").write_text(json.dumps(results))
    return sweep


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_report_ranks_jobs_and_draws_plots(tmp_path: Path, capsys) -> None:
    sweep = fake_sweep(tmp_path)
    main([str(sweep)])
    out = sweep / "report"
    rows = read_csv(out / "report.csv")
    assert [(r["job"], r["status"], r["model.learning_rate"]) for r in rows] == [
        ("1", "completed", "1e-3"), ("0", "completed", "1e-4"), ("2", "failed", "1e-2")]
    assert "data.batch_size" not in rows[0]  # fixed for the whole sweep: not a column
    assert float(rows[0]["val/acc_best"]) == pytest.approx(0.9) and rows[2]["val/acc_best"] == ""
    assert rows[2]["error"] == "ValueError: loss is NaN at step 3"
    markdown = (out / "report.md").read_text()
    assert "| 2 | failed | 0.01 |" in markdown and "best: job 1" in markdown
    for name in ("val_acc_best_vs_model.learning_rate.png", "learning_curves.png"):
        assert (out / name).read_bytes()[:4] == PNG
        assert f"({name})" in markdown
    assert "3 jobs, 1 failed, best job 1" in capsys.readouterr().out


def test_report_ranks_by_another_metric_in_its_direction(tmp_path: Path) -> None:
    sweep = fake_sweep(tmp_path)
    main([str(sweep), "--metric", "val/loss", "--out", str(tmp_path / "by_loss")])
    rows = read_csv(tmp_path / "by_loss" / "report.csv")
    assert [r["job"] for r in rows] == ["1", "0", "2"]  # lower loss first (auto: minimize a loss)
    main([str(sweep), "--metric", "val/loss", "--direction", "maximize", "--out", str(tmp_path / "up")])
    assert [r["job"] for r in read_csv(tmp_path / "up" / "report.csv")] == ["0", "1", "2"]


def test_report_of_several_sweeps_labels_jobs_by_sweep(tmp_path: Path) -> None:
    first, second = fake_sweep(tmp_path, "a"), fake_sweep(tmp_path, "b")
    main([str(first), str(second), "--out", str(tmp_path / "study")])
    rows = read_csv(tmp_path / "study" / "report.csv")
    assert len(rows) == 6 and {r["job"] for r in rows[:2]} == {"a/1", "b/1"}
    assert [r["status"] for r in rows[-2:]] == ["failed", "failed"]


def test_report_refuses_a_directory_without_jobs(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path)])
    assert exit_info.value.code == 2
    assert "no job directories" in capsys.readouterr().err
