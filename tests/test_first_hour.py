"""Issue 28, a new user's first hour: no silent early stop, nothing left behind by a failed run, runs filed under
their task, multi-word CoNLL lines and QA errors named, a thread hint, and no library noise in a tiny run."""

from __future__ import annotations

import logging
import os
import re
import warnings
from pathlib import Path

import datasets
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

from lightning_llm.config import CONFIG_DIR
from lightning_llm.data.sources import load_raw
from lightning_llm.errors import UserError
from lightning_llm.runtime import job_resources
from lightning_llm.runtime.console import discard_run_dir, quiet_known_noise
from lightning_llm.runtime.job_resources import oversubscription_hint
from lightning_llm.tasks.token_classification import read_conll
from lightning_llm.train import train
from tests.conftest import REPO, TINY_BERT, TINY_GPT

TINY_RUN = [*TINY_BERT, "++trainer.limit_train_batches=1", "++trainer.limit_val_batches=1", "test=false",
            "export=false", "logger=none"]


def test_early_stopping_says_it_ended_the_run(compose_cfg, capsys) -> None:
    """A threshold every loss meets stops the run after its first validation: one line names metric, patience,
    epoch and the switch; a run that reaches max_epochs prints no such line."""
    stop = ["callbacks.early_stopping.monitor=val/loss", "callbacks.early_stopping.mode=min",
            "++callbacks.early_stopping.stopping_threshold=1e9", "callbacks.early_stopping.patience=7"]
    train(compose_cfg([*TINY_RUN, "trainer.max_epochs=3", *stop]))
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("early stopping")]
    assert len(lines) == 1, lines
    assert "epoch 0" in lines[0] and "val/loss" in lines[0] and "patience 7" in lines[0]
    assert "callbacks.early_stopping=null" in lines[0]
    train(compose_cfg([*TINY_RUN, "trainer.max_epochs=1"]))
    assert "early stopping" not in capsys.readouterr().out


@pytest.mark.slow  # two CLI runs
def test_a_data_error_leaves_no_orphan_run_dir_and_keeps_a_users_dir(run_cli, tmp_path: Path) -> None:
    """A missing column fails in one line; the run directory Hydra made (only .hydra/, config_tree.log and the log)
    is gone, while a directory that already held the user's files keeps everything."""
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"film {i},{i % 2}\n" for i in range(8)))
    bad = ["data.train_file=train.csv", "data.text_column=body", "test=false", "logger=none", *TINY_BERT]
    proc = run_cli("lightning_llm.train", *bad)
    assert proc.returncode == 2 and "data.text_column='body'" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "outputs").exists(), sorted(p.name for p in (tmp_path / "outputs").rglob("*"))
    mine = tmp_path / "mine"
    (mine / "checkpoints").mkdir(parents=True)
    (mine / "checkpoints" / "best.ckpt").write_text("the user's")
    proc = run_cli("lightning_llm.train", *bad, f"paths.output_dir={mine}")
    assert proc.returncode == 2
    assert (mine / "checkpoints" / "best.ckpt").read_text() == "the user's" and (mine / ".hydra").is_dir()


@pytest.mark.slow  # a CLI run
def test_predict_with_output_file_makes_no_run_dir(run_cli, tmp_path: Path) -> None:
    """`llm-predict ... output_file=x` writes x and nothing under outputs/predict/runs/."""
    texts = tmp_path / "texts.txt"
    texts.write_text("a wonderful, moving film\nthe plot was dull and slow\n")
    model = REPO / "tests" / "fixtures" / "legacy_run" / "cls" / "hf_model"
    proc = run_cli("lightning_llm.predict", f"model_path={model}", f"input_file={texts}", "output_file=out.jsonl")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert len((tmp_path / "out.jsonl").read_text().splitlines()) == 2
    assert not (tmp_path / "outputs").exists(), sorted(p.name for p in (tmp_path / "outputs").rglob("*"))


def test_discard_run_dir_removes_only_what_this_process_wrote(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = tmp_path / "outputs" / "train" / "runs" / "ts"
    (run / ".hydra").mkdir(parents=True)
    for name in (".hydra/config.yaml", ".hydra/hydra.yaml", "config_tree.log", "train.log"):
        (run / name).write_text("")
    kept = tmp_path / "outputs" / "train" / "runs" / "kept"
    (kept / ".hydra").mkdir(parents=True)
    (kept / "results.json").write_text("{}")
    assert not discard_run_dir(kept, "train") and (kept / "results.json").exists()
    assert discard_run_dir(run, "train") and not run.exists() and kept.exists()  # parents not empty: kept
    old = tmp_path / "old"
    (old / ".hydra").mkdir(parents=True)
    os.utime(old, (0, 0))  # older than this process: a user's directory
    assert not discard_run_dir(old, "train") and old.exists()


@pytest.mark.parametrize("overrides, task_name", [
    ([], "classification"),
    (["model=token_classifier", "data=token_classification"], "token_classification"),
    (["model=extractive_qa", "data=question_answering"], "question_answering"),
    (["experiment=qa_demo"], "qa_demo"),  # an experiment's own name stays
    (["model=seq2seq", "data=seq2seq", "task_name=mine"], "mine"),
])
def test_task_name_follows_the_model(overrides: list[str], task_name: str) -> None:
    """A user's classification, NER and QA runs land in outputs/<task>/runs, not all in outputs/train/runs."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose(config_name="train", overrides=overrides, return_hydra_config=True)
    GlobalHydra.instance().clear()
    assert cfg.task_name == task_name
    assert cfg.hydra.run.dir.startswith(f"outputs/{task_name}/runs/")


def test_a_conll_token_with_a_space_is_one_line_naming_file_and_line(tmp_path: Path) -> None:
    """`New York NN B-LOC` in a `token POS tag` file tagged "New" and dropped "York", exit 0."""
    path = tmp_path / "train.conll"
    path.write_text("-DOCSTART- -X- O\n\nI PRP O\nlive VBP O\nin IN O\nNew York NN B-LOC\n\nok UH O\n")
    with pytest.raises(UserError) as err:
        read_conll(str(path), "data.train_file")
    assert str(err.value).startswith(f"data.train_file: {path}:6: 4 columns where the file's lines have 3")
    assert "\n" not in str(err.value)
    path.write_text("I PRP O\nlive VBP O\nin IN O\nYork NN B-LOC\n")  # well-formed: read as before
    assert read_conll(str(path), "data.train_file")["tokens"] == [["I", "live", "in", "York"]]


def test_oversubscribed_cpu_gets_one_thread_hint(compose_cfg, capsys, monkeypatch) -> None:
    """torch's threads on cores other work keeps busy: one line suggesting OMP_NUM_THREADS=1; none when idle, with
    one thread, or when OMP_NUM_THREADS is set."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert oversubscription_hint(2, cores=2, load=0.2) is None
    assert oversubscription_hint(1, cores=2, load=4.0) is None
    assert "OMP_NUM_THREADS=1" in oversubscription_hint(2, cores=2, load=3.0)
    monkeypatch.setattr(os, "getloadavg", lambda: (float(job_resources.cpu_count() + 2),) * 3)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        train(compose_cfg([*TINY_RUN, "trainer.max_epochs=1"]))
    finally:
        torch.set_num_threads(threads)
    assert sum("OMP_NUM_THREADS=1" in line for line in capsys.readouterr().out.splitlines()) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert oversubscription_hint(2, cores=2, load=3.0) is None


def test_false_alarms_are_dropped_by_message_and_module() -> None:
    """transformers' attention_mask / loss_type=None notices and Lightning's log_every_n_steps warning are dropped;
    the same loggers' and modules' other messages still show."""
    quiet_known_noise()
    logger = logging.getLogger("transformers.modeling_utils")

    def shown(message: str) -> bool:
        return bool(logger.filter(logging.LogRecord(logger.name, logging.WARNING, "x.py", 1, message, None, None)))

    assert not shown("We strongly recommend passing in an `attention_mask` since your input_ids may be padded. See")
    assert not shown("`loss_type=None` was set in the config but it is unrecognized. Using the default loss: `X`.")
    assert shown("`loss_type=ForMine` was set in the config but it is unrecognized. Using the default loss: `X`.")
    assert shown("Some weights of the model checkpoint were not used")
    few = "The number of training batches (2) is smaller than the logging interval Trainer(log_every_n_steps=10)."
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        quiet_known_noise()
        warnings.warn_explicit(few, UserWarning, "fit_loop.py", 1, module="pytorch_lightning.loops.fit_loop")
        warnings.warn_explicit(few, UserWarning, "mine.py", 1, module="mypkg.loop")
        warnings.warn_explicit("Something else", UserWarning, "fit_loop.py", 2, module="pytorch_lightning.loops.fit_loop")
    assert [(str(w.message), w.filename) for w in seen] == [(few, "mine.py"), ("Something else", "fit_loop.py")]


@pytest.mark.slow  # a CLI run (~25 s on 2 cores)
def test_tiny_gpt_run_stderr_holds_only_lightnings_lines(run_cli) -> None:
    """A tiny GPT run (packed blocks, fewer batches than log_every_n_steps): stderr is Lightning's four notes, none
    of transformers' attention_mask / loss_type notices or the log_every_n_steps warning."""
    proc = run_cli("lightning_llm.train", "experiment=gpt_demo", *TINY_GPT, "trainer.max_epochs=1",
                   "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1", "++trainer.limit_test_batches=1",
                   "logger=none", "paths.output_dir=run")
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert not [line for line in lines if re.search(r"attention_mask|loss_type|log_every_n_steps|Generating", line)]
    assert len(lines) <= 4, lines


def test_reading_a_local_file_draws_no_generating_split_bar(tmp_path: Path, capfd) -> None:
    """`datasets`' "Generating train split" bar for a local file, whoever reads it (here: load_raw directly, as the
    nested-SQuAD reader and tokenizer training do), and the bars' setting restored."""
    datasets.enable_progress_bars()
    (tmp_path / "train.jsonl").write_text("".join(f'{{"text": "film {i}", "label": {i % 2}}}\n' for i in range(5)))
    raw = load_raw(dataset_name=None, dataset_config=None, cache_dir=str(tmp_path / "cache"), bundled={},
                   files={"train": str(tmp_path / "train.jsonl")}, split_names={"train": "train"})
    assert len(raw["train"]) == 5
    assert "Generating" not in capfd.readouterr().err
    assert datasets.is_progress_bar_enabled()


def test_validation_carved_from_train_is_said_once_per_run(tmp_path: Path, capsys) -> None:
    """No validation file: one line with the rows, the share and the seed, by the shared data module code (a
    classification CSV and a text corpus here), again when the tokenized data comes from the cache; none when a
    validation file is given."""
    from lightning_llm.data.tokenizers import train_tokenizer
    from lightning_llm.tasks.classification import TextClassificationDataModule
    from lightning_llm.tasks.text_corpus import TextCorpusDataModule

    rows = [f"{'good' if i % 2 else 'bad'} film number {i}" for i in range(40)]
    (tmp_path / "train.csv").write_text("text,label\n" + "".join(f"{t},{t.split()[0]}\n" for t in rows))
    (tmp_path / "train.txt").write_text("\n".join(rows) + "\n")
    tokenizer = train_tokenizer(rows, "wordpiece", 100, tmp_path / "tok")

    def carved_lines(cls: type, **kwargs: object) -> list[str]:
        dm = cls(tokenizer=tokenizer, cache_dir=str(tmp_path / "cache"), seed=7, **kwargs)
        dm.setup("fit")
        return [line for line in capsys.readouterr().out.splitlines() if line.startswith("validation:")]

    expected = ("validation: none given, so 20% of the train split (8 of 40 rows, seed 7) is held out for it; "
                "data.val_fraction sets the share, or give data.validation_file")
    classify = {"train_file": str(tmp_path / "train.csv"), "val_fraction": 0.2}
    assert carved_lines(TextClassificationDataModule, **classify) == [expected]
    assert carved_lines(TextClassificationDataModule, **classify) == [expected]  # from the cache
    assert carved_lines(TextCorpusDataModule, objective="causal_lm", train_file=str(tmp_path / "train.txt"),
                        val_fraction=0.2, block_size=8) == [expected]
    assert carved_lines(TextClassificationDataModule, **classify, validation_file=str(tmp_path / "train.csv")) == []
