"""Bad settings fail before Hydra starts: exit 2, exactly one stderr line naming the key, no run directory."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from lightning_llm.config.precheck import precheck
from lightning_llm.runtime.cli import launch

BAD_SETTINGS = [
    ("model.learning_rate=abc", "model.learning_rate: Value 'abc' of type 'str' could not be converted to Float"),
    ("data.max_length=0", "data.max_length=0 is out of range: must be > 0"),
    ("data.batch_size=0", "data.batch_size=0 is out of range: must be > 0"),
    ("data.batch_size=-4", "data.batch_size=-4 is out of range: must be > 0"),
    ("trainer.max_epochs=-2", "trainer.max_epochs=-2 is out of range: must be >= -1"),
    ("data.val_fraction=1.5", "data.val_fraction=1.5 is out of range: must be < 1"),
    ("model.lerning_rate=0.1", "model.lerning_rate: no such setting; did you mean model.learning_rate?"),
    ("trainer.max_epoch=3", "trainer.max_epoch: no such setting; did you mean trainer.max_epochs?"),
    ("+model.warmup_steps=3", "model.warmup_steps is not a setting of SequenceClassificationModule; did you mean "
                              "model.warmup_ratio?"),
    ("seed=abc", "seed='abc': must be an integer"),
    ("model=gptt", "model/gptt: no such config option"),
]


@pytest.mark.parametrize("override, message", BAD_SETTINGS, ids=[o for o, _ in BAD_SETTINGS])
def test_bad_setting_is_one_line_before_hydra(override: str, message: str, tmp_path: Path, monkeypatch,
                                              capsys) -> None:
    run_dir = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", ["llm-train", override, f"hydra.run.dir={run_dir}"])
    with pytest.raises(SystemExit) as exit_info:
        launch(lambda: pytest.fail("Hydra must not start"), "train")
    assert exit_info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {message}"), lines
    assert not run_dir.exists()


def test_cli_typo_exits_2_with_one_stderr_line(run_cli, tmp_path: Path) -> None:
    proc = run_cli("lightning_llm.train", "data.max_lenght=64", f"hydra.run.dir={tmp_path / 'run'}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: data.max_lenght: no such setting; did you mean data.max_length?"]
    assert not (tmp_path / "run").exists()


def test_sweeps_are_checked_with_their_first_value_and_settings_added_by_name() -> None:
    precheck(["-m", "model.learning_rate=1e-3,3e-4", "model.warmup_ratio=0.2", "data.eval_batch_size=64"], "train")
    precheck(["-m", "model.learning_rate=interval(1e-5,1e-3)"], "train")
    with pytest.raises(Exception, match=r"data.batch_size=0 is out of range"):
        precheck(["-m", "data.batch_size=0,32"], "train")


def test_hydra_commands_are_left_to_hydra() -> None:
    precheck(["--cfg", "job", "model.lerning_rate=1"], "train")  # Hydra prints its own error for --cfg


# The entry point's own `main()` in a fresh interpreter: the bad value exits 2, and the modules it imported tell
# whether the precheck needed Lightning. Today the schema registration (config/store.py) imports every task class,
# and `HFTaskModule` / `CachedTextDataModule` subclass Lightning's classes, so ~9 s of imports come before the error
# (issue 16). strict: when the precheck stops importing Lightning this XPASSes and fails, so drop the marker and
# the slow mark (it then runs in ~1 s).
_BAD_VALUE_IMPORTS = """
import subprocess
import sys
sys.argv = ["llm-{name}", "{override}"]
from lightning_llm.{name} import main
try:
    main()
except SystemExit as exit:
    print(exit.code, sorted(m for m in ("pytorch_lightning", "transformers", "torch") if m in sys.modules))
"""


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="issue 16: the precheck imports the task classes, hence Lightning")
@pytest.mark.parametrize("name, override", [("train", "data.max_length=0"), ("train", "data.max_lenght=64")])
def test_bad_value_fails_before_lightning_is_imported(name: str, override: str, tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _BAD_VALUE_IMPORTS.format(name=name, override=override)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.stdout.split("\n")[-2].startswith("2 "), proc.stdout + proc.stderr
    assert "pytorch_lightning" not in proc.stdout.split("\n")[-2], proc.stdout
