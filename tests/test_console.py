"""What a run prints and where it writes: `paths.output_dir` moves the whole run, the console stays short and ends
with the output directory, known library noise is silenced narrowly, and a mistyped local model path fails at once."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import transformers.utils.hub

from lightning_llm import generate
from lightning_llm.errors import UserError
from lightning_llm.runtime import hardware, model_paths
from lightning_llm.runtime.argv import route_output_dir
from lightning_llm.runtime.cli import print_config
from lightning_llm.runtime.console import failed_run_line, final_line, load_report_line, quiet_known_noise
from lightning_llm.utils.paths import looks_local
from tests.conftest import TINY_BERT

LIMITS = ["trainer.max_epochs=1", "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1",
          "++trainer.limit_test_batches=1"]
# stdout + stderr of the tiny run below with a cold tokenized cache (its most lines): the budget is the measured
# count plus 2 (docs/benchmarks.md, "Console lines": the count, the command and the date).
LINE_BUDGET = 24
NOISE = ("💡", "litlogger", "FLOPs", "set_vital", "LeafSpec", "TPU available", "GPU available: False", "Seed set to",
         "Writing model shards", "CONFIG", "Warning")


def terminal_lines(text: str) -> list[str]:
    """Non-empty lines as a terminal shows them. The subprocess's universal newlines turned each tqdm redraw (\r)
    into a line of its own: consecutive lines of one bar (same label, digits aside) count once."""
    lines, label = [], None
    for line in text.splitlines():
        bar = re.match(r"(.+?):\s+(\d+%\||\d+ examples \[)", line)
        this = re.sub(r"\d+", "#", bar.group(1)) if bar else None
        if line.strip() and not (this is not None and this == label):
            lines.append(line)
        label = this
    return lines


# ----------------------------------------------------------------------------------------------- paths.output_dir
def test_route_output_dir_single_run_and_sweep() -> None:
    assert route_output_dir(["experiment=x", "paths.output_dir=runs/a", "seed=1"]) == \
        ["experiment=x", "hydra.run.dir=runs/a", "hydra.sweep.dir=runs/a", "seed=1"]
    assert route_output_dir(["-m", '++paths.output_dir="my runs/a"']) == \
        ["-m", 'hydra.run.dir="my runs/a"', 'hydra.sweep.dir="my runs/a"']
    assert route_output_dir(["paths.output_dir=a", "paths.output_dir=b"]) == ["hydra.run.dir=b", "hydra.sweep.dir=b"]
    assert route_output_dir(["seed=1"]) == ["seed=1"]


def test_route_output_dir_leaves_explicit_hydra_dirs_and_relaunches_alone() -> None:
    explicit = ["paths.output_dir=a", "hydra.run.dir=b"]
    assert route_output_dir(explicit) == explicit
    # Lightning's DDP relaunch: the parent's rewritten command line plus its own hydra.run.dir.
    child = [*route_output_dir(["paths.output_dir=a"]), 'hydra.run.dir="/abs/a"', "hydra.output_subdir=null"]
    assert route_output_dir(child) == child


def test_srun_tasks_share_paths_output_dir(monkeypatch) -> None:
    """cli.launch routes before `follow_rank_zero_run_dir`: under srun paths.output_dir is the shared directory."""
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    argv = hardware.follow_rank_zero_run_dir(route_output_dir(["hardware=ddp", "paths.output_dir=runs/7"]))
    assert argv == ["hardware=ddp", "hydra.run.dir=runs/7", "hydra.sweep.dir=runs/7"]


def test_route_output_dir_refuses_a_sweep_of_directories() -> None:
    with pytest.raises(UserError, match=r"^paths.output_dir=a,b: one directory, not a sweep"):
        route_output_dir(["-m", "paths.output_dir=a,b"])


@pytest.mark.slow  # a CLI end-to-end run (~15-45 s on 2 cores)
def test_output_dir_moves_the_whole_run_and_the_last_line_names_it(run_cli, tmp_path: Path) -> None:
    cwd = tmp_path / "empty"
    cwd.mkdir()
    proc = run_cli("lightning_llm.train", "experiment=classify_demo", *TINY_BERT, *LIMITS, "paths.output_dir=X",
                   cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = cwd / "X"
    for name in (".hydra/config.yaml", "results.json", "checkpoints/last.ckpt", "classify_demo.log",
                 "config_tree.log", "hf_model/config.json"):
        assert (run / name).is_file(), name
    assert not (cwd / "outputs").exists()
    assert proc.stdout.splitlines()[-1] == "run: X (results.json, hf_model/)"

    lines = terminal_lines(proc.stdout) + terminal_lines(proc.stderr)
    assert len(lines) <= LINE_BUDGET, "\n".join(lines)
    assert not [line for line in lines if any(word in line for word in NOISE)], "\n".join(lines)
    assert "config_tree.log" in proc.stdout and "CONFIG" in (run / "config_tree.log").read_text()

    proc = run_cli("lightning_llm.evaluate", "ckpt_path=X/checkpoints/last.ckpt", "paths.output_dir=E", cwd=cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (cwd / "E" / "eval_results.json").is_file() and (cwd / "E" / ".hydra" / "config.yaml").is_file()
    assert not (cwd / "outputs").exists()
    assert proc.stdout.splitlines()[-1] == "run: E (eval_results.json)"


# ----------------------------------------------------------------------------------------------- console
def test_config_summary_by_default_full_tree_on_request(compose_cfg, tmp_path: Path, capsys) -> None:
    cfg = compose_cfg(["experiment=classify_demo"])
    print_config(cfg, save_to=tmp_path / "tree.log")
    out = capsys.readouterr().out.splitlines()
    assert len(out) <= 5 and out[0].startswith("classify_demo: SequenceClassificationModule, bert from scratch")
    assert "bundled demo data" in out[1] and "cpu x1" in out[2] and out[-1].startswith("run dir: ")
    assert "_target_: lightning_llm.tasks" in (tmp_path / "tree.log").read_text()

    cfg = compose_cfg(["experiment=classify_demo", "print_config=full"])
    print_config(cfg, save_to=tmp_path / "tree.log")
    assert len(capsys.readouterr().out.splitlines()) > 50


def test_final_lines(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "runs" / "a"
    (run / "hf_model").mkdir(parents=True)
    (run / "results.json").write_text('{"status": "diverged"}')
    assert final_line(run, str(run / "hf_model")) == "run: runs/a (results.json, hf_model/)"
    assert failed_run_line(run) == "run: runs/a (results.json: status diverged)"
    assert failed_run_line(tmp_path / "nothing") is None and failed_run_line(None) is None


def test_known_noise_is_silenced_narrowly() -> None:
    quiet_known_noise()
    quiet_known_noise()  # twice: nothing added twice
    assert len(logging.getLogger("pytorch_lightning.utilities.rank_zero").filters) == 1
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")  # pytest.ini ignores UserWarning
        quiet_known_noise()
        module = "torchdata.stateful_dataloader.stateful_dataloader"
        warnings.warn_explicit("'set_vital' is deprecated, please do not call", UserWarning, "x.py", 1, module=module)
        warnings.warn_explicit("something else", UserWarning, "x.py", 2, module=module)
        warnings.warn_explicit("'set_vital' is deprecated", UserWarning, "y.py", 3, module="mine")
    assert [str(w.message) for w in seen] == ["something else", "'set_vital' is deprecated"]

    # Our own handler, not caplog's: pytest 9.2's `caplog.at_level(logger=...)` attaches its handler to that logger
    # itself, so adding it as well counted each record twice.
    log, seen_records = logging.getLogger("pytorch_lightning.utilities.rank_zero"), []
    handler = logging.Handler(logging.INFO)
    handler.emit = seen_records.append
    log.addHandler(handler)
    level = log.level
    log.setLevel(logging.INFO)
    try:
        log.info("💡 Tip: For seamless cloud logging and experiment tracking, try installing [litlogger]")
        log.info("`Trainer(val_check_interval=1.0)` was configured so validation will run at the end.")
        log.info("`Trainer(limit_val_batches=1)` was configured so 1 batch will be used.")
        log.info("`Trainer.fit` stopped: `max_epochs=1` reached.")
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    assert [r.getMessage() for r in seen_records] == [
        "`Trainer(limit_val_batches=1)` was configured so 1 batch will be used.",
        "`Trainer.fit` stopped: `max_epochs=1` reached."]


# ----------------------------------------------------------------------------------------------- llm-generate
@pytest.mark.parametrize("name, local", [("gpt2", False), ("openai-community/gpt2", False), ("outputs/typo", True),
                                         ("a/b/c", True), ("run.ckpt", True), ("./m", True), ("../m", True),
                                         ("~/m", True), ("/m", True)])
def test_looks_local(tmp_path: Path, monkeypatch, name: str, local: bool) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    assert looks_local(name) is local


def test_mistyped_local_model_path_fails_at_once(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "outputs").mkdir()
    """"At once" = before any hub lookup (the retries are what took ~35 s): the loader and transformers' file
    resolution both fail the test if reached, so no clock is needed."""
    monkeypatch.setattr(model_paths, "_from_pretrained", lambda *a: pytest.fail("treated as a hub id"))
    monkeypatch.setattr(transformers.utils.hub, "cached_files",
                        lambda *a, **k: pytest.fail("a hub/file lookup was attempted"))
    with pytest.raises(UserError, match=r"^model_path: not found: outputs/typo$"):
        generate.load_for_generation("outputs/typo")


# ----------------------------------------------------------------------------------------------- model loading
def test_the_load_report_of_a_new_head_is_one_plain_line(tmp_path: Path) -> None:
    """transformers 5 logs a table (ANSI codes, notes) when `from_pretrained` leaves weights unmatched, e.g. a
    ModernBERT pre-training checkpoint loaded for classification; the console gets one plain line instead."""
    from transformers import AutoModelForSequenceClassification, ModernBertConfig, ModernBertForMaskedLM

    config = ModernBertConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                              num_attention_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1,
                              sep_token_id=2)
    ModernBertForMaskedLM(config).save_pretrained(tmp_path / "mlm")
    quiet_known_noise()
    log, records = logging.getLogger("transformers.modeling_utils"), []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    log.addHandler(handler)
    try:
        AutoModelForSequenceClassification.from_pretrained(tmp_path / "mlm", num_labels=3)
    finally:
        log.removeHandler(handler)
    messages = [r.getMessage() for r in records]
    assert messages == [f"model: ModernBertForSequenceClassification from {tmp_path / 'mlm'}: 2 weights newly "
                        f"initialised: train them (classifier.*); 1 weight in the checkpoint but unused (decoder.*)"]


def test_load_report_line_counts_grouped_keys_and_strips_colours() -> None:
    report = ("\x1b[1mBertForTokenClassification LOAD REPORT\x1b[0m from: bert-base-cased\n"
              "Key                                     | Status     | \n"
              "----------------------------------------+------------+-\n"
              "cls.predictions.transform.dense.weight  | \x1b[38;5;208mUNEXPECTED\x1b[0m | \n"
              "bert.encoder.layer.{0...11}.extra.bias  | \x1b[31mMISSING\x1b[0m    | \n"
              "bert.pooler.{a, b}.{0, 1}.weight        | \x1b[31mMISSING\x1b[0m    | \n"
              "classifier.weight                       | \x1b[31mMISSING\x1b[0m    | \n"
              "\nNotes:\n- \x1b[31mMISSING:\x1b[0m\tthose params were newly initialized ...")
    assert load_report_line(report) == (
        "model: BertForTokenClassification from bert-base-cased: 17 weights newly initialised: train them "
        "(bert.encoder.layer.{0...11}.extra.*, bert.pooler.{a, b}.{0, 1}.*, classifier.*); 1 weight in the "
        "checkpoint but unused (cls.predictions.transform.dense.*)")
    assert load_report_line("Some other warning") is None
    assert load_report_line("X LOAD REPORT from: y\nan unknown layout") is None  # left as transformers wrote it


def test_the_entry_point_plumbing_imports_quietly() -> None:
    """A SLURM job unpickles its task function, which imports runtime/cli.py before any command module: importing
    it alone must already keep torchao's import noise (transformers imports torchao when installed) off stderr."""
    import torchao  # noqa: F401  (the compress extra: installed with [dev]; missing, the noise cannot occur)

    proc = subprocess.run([sys.executable, "-c", "import lightning_llm.runtime.cli"], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "Failed to load" not in proc.stderr and "is an Enum subclass" not in proc.stderr, proc.stderr
