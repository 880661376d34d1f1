"""Token classification (NER): sub-word label alignment, seqeval metrics over the whole split, CoNLL and JSONL files
end to end, bad tags in one line, and the demo learning far above the majority-tag baseline (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from datasets import ClassLabel, Dataset, Features, Sequence, Value
from hydra.core.global_hydra import GlobalHydra
from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score
from transformers import AutoConfig, DataCollatorForTokenClassification

from lightning_llm.data.sources import BUNDLED_DIR
from lightning_llm.errors import UserError
from lightning_llm.tasks.token_classification import SeqevalMetric, TokenClassificationDataModule, read_conll
from lightning_llm.train import train

TINY = ["model.hidden_size=32", "model.num_hidden_layers=1", "model.num_attention_heads=2",
        "model.intermediate_size=64", "model.tokenizer_vocab_size=300"]
RUN = ["model=token_classifier", "data=token_classification", *TINY, "data.batch_size=8", "data.max_length=32",
       "trainer.max_epochs=1", "++trainer.limit_train_batches=4", "++trainer.limit_val_batches=2",
       "++trainer.limit_test_batches=2", "callbacks.rich_progress_bar=null"]
from tests.conftest import bundled_rows, compose_run_config, prepared_datamodule, wordpiece_tokenizer, write_jsonl


def _write_conll(path: Path, rows: list[dict]) -> str:
    """CoNLL-2003 layout: -DOCSTART-, `token POS chunk tag` columns, blank lines between sentences."""
    lines = ["-DOCSTART- -X- -X- O", ""]
    for row in rows:
        lines += [f"{word} NN I-NP {tag}" for word, tag in zip(row["tokens"], row["tags"])] + [""]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


TOKENIZER_VOCAB = ["anna", "##bel", "visited", "new", "yo", "##rk", "met", "bo", "##b", "smith", "."]


def _datamodule(tmp_path: Path, files: dict[str, str], **kwargs) -> TokenClassificationDataModule:
    """This file's data module: NER over the hand-written vocabulary above."""
    return prepared_datamodule(TokenClassificationDataModule, tmp_path, files,
                               tokenizer=wordpiece_tokenizer(TOKENIZER_VOCAB), **kwargs)


ALIGN_ROWS = [{"tokens": ["Annabel", "visited", "New", "York"], "tags": ["B-PER", "O", "B-LOC", "I-LOC"]},
              {"tokens": ["Bob", "Smith", "met", "Anna", "."], "tags": ["B-PER", "I-PER", "O", "B-PER", "O"]}]


@pytest.mark.parametrize("label_all_tokens", [False, True])
def test_first_sub_word_carries_the_tag(tmp_path: Path, label_all_tokens: bool) -> None:
    files = {split: write_jsonl(tmp_path / f"{split}.jsonl", ALIGN_ROWS) for split in ("train", "validation")}
    dm = _datamodule(tmp_path, files, label_all_tokens=label_all_tokens)
    assert dm.label_names == ["B-LOC", "B-PER", "I-LOC", "I-PER", "O"]
    B_LOC, B_PER, I_LOC, I_PER, O = range(5)  # noqa: N806
    train, val = dm.datasets["train"][0], dm.datasets["validation"][0]
    # [CLS] anna ##bel visited new yo ##rk [SEP]
    assert dm.tokenizer.convert_ids_to_tokens(train["input_ids"]) == \
        ["[CLS]", "anna", "##bel", "visited", "new", "yo", "##rk", "[SEP]"]
    first_only = [-100, B_PER, -100, O, B_LOC, I_LOC, -100, -100]
    assert val["labels"] == first_only  # evaluation is always per word
    assert train["labels"] == ([-100, B_PER, I_PER, O, B_LOC, I_LOC, I_LOC, -100] if label_all_tokens else first_only)
    # [CLS] bo ##b smith met anna . [SEP]: the B- of a continuation piece becomes I- (run_ner's label_all_tokens)
    assert dm.datasets["train"][1]["labels"] == [-100, B_PER, I_PER if label_all_tokens else -100, I_PER, O, B_PER, O,
                                                 -100]
    rows = [dm.datasets["train"][0], dm.datasets["train"][1]]
    batch = dm.collate_fn(rows)
    assert batch["labels"].shape == batch["input_ids"].shape and batch["labels"].shape[1] % 8 == 0
    assert (batch["labels"][:, 8:] == -100).all()
    reference = DataCollatorForTokenClassification(dm.tokenizer, pad_to_multiple_of=8)(rows)
    assert {key: torch.equal(batch[key], reference[key]) for key in reference} == dict.fromkeys(reference, True)


@pytest.mark.parametrize("named_by", ["class_label_feature", "label_names"])
def test_integer_tags_take_their_names(tmp_path: Path, named_by: str) -> None:
    """Parquet with a Sequence(ClassLabel) feature (what hub datasets such as conll2003 have), or plain integers
    named by data.label_names: the names keep their ids (not sorted)."""
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    rows = {"tokens": [r["tokens"] for r in ALIGN_ROWS],
            "tags": [[names.index(t) for t in r["tags"]] for r in ALIGN_ROWS]}
    features = Features({"tokens": Sequence(Value("string")), "tags": Sequence(ClassLabel(names=names))}) \
        if named_by == "class_label_feature" else None
    files = {}
    for split in ("train", "validation"):
        Dataset.from_dict(rows, features=features).to_parquet(tmp_path / f"{split}.parquet")
        files[split] = str(tmp_path / f"{split}.parquet")
    dm = _datamodule(tmp_path, files, **({"label_names": names} if named_by == "label_names" else {}))
    assert dm.label_names == names
    assert dm.datasets["validation"][0]["labels"] == [-100, 1, -100, 0, 3, 4, -100, -100]
    assert dm.model_kwargs()["num_labels"] == 5


def test_truncation_warns_once_with_the_count(tmp_path: Path, capsys) -> None:
    files = {split: write_jsonl(tmp_path / f"{split}.jsonl", ALIGN_ROWS) for split in ("train", "validation")}
    dm = _datamodule(tmp_path, files, max_length=5)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "data.max_length=5 cut 2 of 2 train, 2 of 2 validation sentences" in err[0], err
    assert len(dm.datasets["train"][0]["input_ids"]) == 5


def _tags(ids: list[int], names: list[str]) -> list[str]:
    return [names[i] for i in ids]


def test_metric_equals_seqeval_on_the_whole_split() -> None:
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG"]  # ORG never occurs: logged as 0, every epoch
    O, BP, IP, BL, IL = range(5)  # noqa: N806
    # Word-level sequences (true, predicted); the second splits one PER entity in two (IOB2 B-PER B-PER), the
    # third starts an entity with I- (seqeval's default mode reads it as an entity, as conlleval does).
    sentences = [([BP, IP, O, BL], [BP, IP, O, BL]), ([BP, IP, IP, O], [BP, BP, IP, O]),
                 ([O, BL, IL], [O, IL, IL]), ([BL, O], [O, O]), ([O, BP], [BL, BP])]
    metric = SeqevalMetric(names)
    for batch in (sentences[:2], sentences[2:]):  # two batches: scored as one corpus, not averaged
        width = 9
        labels = torch.full((len(batch), width), -100)
        preds = torch.randint(0, 5, (len(batch), width))  # garbage where labels are -100: ignored
        for row, (truth, pred) in enumerate(batch):
            # words at every other position from 1 on (sub-word continuations and specials are -100)
            for j, (t, p) in enumerate(zip(truth, pred)):
                labels[row, 1 + 2 * j], preds[row, 1 + 2 * j] = t, p
        metric.update(preds, labels)
    truth = [_tags(t, names) for t, _ in sentences]
    pred = [_tags(p, names) for _, p in sentences]
    assert metric.sequences() == (truth, pred)
    values = metric.compute()
    assert values["f1"] == pytest.approx(f1_score(truth, pred))
    assert values["precision"] == pytest.approx(precision_score(truth, pred))
    assert values["recall"] == pytest.approx(recall_score(truth, pred))
    assert values["acc"] == pytest.approx(accuracy_score(truth, pred))
    report = classification_report(truth, pred, output_dict=True)
    assert values["f1_PER"] == pytest.approx(report["PER"]["f1-score"])
    assert values["f1_LOC"] == pytest.approx(report["LOC"]["f1-score"])
    assert values["f1_ORG"] == 0.0 and "ORG" not in report
    assert 0 < values["f1"] < 1
    per_batch = [f1_score(truth[:2], pred[:2]), f1_score(truth[2:], pred[2:])]
    assert values["f1"] != pytest.approx(sum(per_batch) / 2)  # the example tells the two apart

    # Under DDP the list states are concatenated across ranks (here a fake gather of two identical ranks).
    metric.sync(dist_sync_fn=lambda tensor, group=None: [tensor, tensor], distributed_available=lambda: True)
    assert metric.sequences() == (truth * 2, pred * 2)


@pytest.fixture(scope="module")
def conll_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """One tiny real run on CoNLL files shared by the tests below: (run dir, results)."""
    tmp = tmp_path_factory.mktemp("ner_conll")
    rows = bundled_rows("ner", 120)
    files = {"train": _write_conll(tmp / "train.conll", rows[:80]),
             "validation": _write_conll(tmp / "dev.conll", rows[80:100]),
             "test": _write_conll(tmp / "test.conll", rows[100:])}
    # 8 full epochs at a high rate: test F1, precision and recall land well inside (0, 1) (docs/benchmarks.md)
    learn = ["trainer.max_epochs=8", "++trainer.limit_train_batches=1.0", "model.learning_rate=3e-3"]
    cfg = compose_run_config(tmp / "run", [*RUN, *learn, *(f"data.{split}_file={path}" for split, path in files.items())])
    results = train(cfg)
    GlobalHydra.instance().clear()
    return tmp / "run", results


def test_conll_reader_skips_docstart_and_reads_last_column(tmp_path: Path) -> None:
    rows = bundled_rows("ner", 3)
    ds = read_conll(_write_conll(tmp_path / "x.conll", rows), "data.train_file")
    assert ds["tokens"] == [r["tokens"] for r in rows] and ds["tags"] == [r["tags"] for r in rows]


def test_conll_run_writes_seqeval_metrics_and_labelled_export(conll_run) -> None:
    run, results = conll_run
    saved = json.loads((run / "results.json").read_text())
    assert saved["optimized_metric"]["name"] == "val/f1"
    for key in ("val/f1", "val/precision", "val/recall", "val/acc", "val/majority_acc"):
        assert key in saved["val"], key
    for key in ("test/f1", "test/precision", "test/recall", "test/acc"):
        assert key in saved["test"], key
    assert any(key.startswith("val/f1_") and key[7:] in ("PER", "LOC", "ORG") for key in saved["val"])
    config = AutoConfig.from_pretrained(run / "hf_model")
    assert config.architectures == ["BertForTokenClassification"]
    assert sorted(config.id2label.values()) == ["B-LOC", "B-ORG", "B-PER", "I-LOC", "I-ORG", "I-PER", "O"]
    assert config.label2id == {name: i for i, name in config.id2label.items()}


def test_predictions_file_rescored_by_seqeval_equals_the_reported_metrics(conll_run) -> None:
    """predictions_test.jsonl: one record per test sentence, in file order, with its words; seqeval run on it gives
    the reported test metrics, and results.json keeps seqeval's per-type report."""
    run, results = conll_run
    records = [json.loads(line) for line in (run / "predictions_test.jsonl").read_text().splitlines()]
    rows = bundled_rows("ner", 120)[100:120]  # every test sentence (2 evaluation batches of 16 hold all 20), in file order
    assert len(records) == 20
    for record, row in zip(records, rows):  # sentences cut by max_length=32 keep their first (scored) words
        n = len(record["words"])
        assert record["words"] == row["tokens"][:n] and record["tags"] == row["tags"][:n]
        assert len(record["predicted"]) == n and record.get("truncated", 0) == len(row["tokens"]) - n
    assert any("truncated" in r for r in records)
    truth, pred = [r["tags"] for r in records], [r["predicted"] for r in records]
    test = results["test"]  # logged as float32
    for key in ("test/f1", "test/precision", "test/recall"):  # not a 0 == 0 comparison
        assert 0.05 < test[key] < 0.95, (key, test[key])
    assert f1_score(truth, pred) == pytest.approx(test["test/f1"], abs=1e-6)
    assert precision_score(truth, pred) == pytest.approx(test["test/precision"], abs=1e-6)
    assert recall_score(truth, pred) == pytest.approx(test["test/recall"], abs=1e-6)
    assert accuracy_score(truth, pred) == pytest.approx(test["test/acc"], abs=1e-6)
    report = json.loads((run / "results.json").read_text())["details"]["test"]["seqeval_report"]
    expected = classification_report(truth, pred, output_dict=True, zero_division=0)
    assert report == {name: {k: float(v) for k, v in row.items()} for name, row in expected.items()}
    assert (run / "predictions_val.jsonl").is_file()


def test_jsonl_string_tags_run(tmp_path: Path) -> None:
    rows = bundled_rows("ner", 100, start=200)
    files = {split: write_jsonl(tmp_path / f"{split}.jsonl", part)
             for split, part in (("train", rows[:70]), ("validation", rows[70:85]), ("test", rows[85:]))}
    cfg = compose_run_config(tmp_path / "run", [*RUN, "++trainer.limit_train_batches=2", "export=false",
                                      *(f"data.{split}_file={path}" for split, path in files.items())])
    results = train(cfg)
    GlobalHydra.instance().clear()
    assert {"val/f1", "val/acc"} <= set(results["val"]) and "test/f1" in results["test"]
    assert any(key.startswith("val/f1_") for key in results["val"])


@pytest.mark.parametrize("case", ["tags_not_list", "unknown_test_tag", "length_mismatch", "missing_column",
                                  "empty_split", "int_tags_without_names"])
def test_bad_tags_are_one_line(tmp_path: Path, case: str) -> None:
    train_rows, test_rows = list(ALIGN_ROWS), list(ALIGN_ROWS)
    kwargs = {}
    expected = {"tags_not_list": "data.tags_column='tags' must hold a list of tags per row",
                "unknown_test_tag": "tag 'B-ORG' is not among the model's tags",
                "length_mismatch": "data (train) row 1: 5 words in 'tokens' but 4 tags in 'tags'",
                "missing_column": "data.tokens_column='words' is not a column of the train split",
                "empty_split": "the test split is empty",
                "int_tags_without_names": "holds integer tags without names: give data.label_names"}[case]
    if case == "tags_not_list":
        train_rows = [{"tokens": r["tokens"], "tags": " ".join(r["tags"])} for r in ALIGN_ROWS]
    elif case == "unknown_test_tag":
        test_rows = [ALIGN_ROWS[0], {**ALIGN_ROWS[1], "tags": ["B-ORG", "I-PER", "O", "B-PER", "O"]}]
    elif case == "length_mismatch":
        train_rows = [ALIGN_ROWS[0], {**ALIGN_ROWS[1], "tags": ALIGN_ROWS[1]["tags"][:4]}]
    elif case == "missing_column":
        kwargs["tokens_column"] = "words"
    elif case == "int_tags_without_names":
        train_rows = test_rows = [{"tokens": r["tokens"], "tags": [1] * len(r["tokens"])} for r in ALIGN_ROWS]
    files = {"train": write_jsonl(tmp_path / "train.jsonl", train_rows),
             "validation": write_jsonl(tmp_path / "validation.jsonl", ALIGN_ROWS if case != "int_tags_without_names"
                                        else train_rows),
             "test": write_jsonl(tmp_path / "test.jsonl", test_rows)}
    if case == "empty_split":  # a CoNLL test file holding only -DOCSTART-
        files = {split: _write_conll(tmp_path / f"{split}.conll", [] if split == "test" else ALIGN_ROWS)
                 for split in ("train", "validation", "test")}
    with pytest.raises(UserError) as err:
        _datamodule(tmp_path, files, **kwargs)
    assert expected in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.slow
def test_demo_learns_far_above_the_majority_baseline(tmp_path: Path) -> None:
    results = train(compose_run_config(tmp_path / "run", ["experiment=ner_demo", "callbacks.rich_progress_bar=null"]))
    GlobalHydra.instance().clear()
    val = results["val"]
    assert val["val/majority_f1"] < 0.05 and val["val/f1"] > 0.9
    assert val["val/acc"] > val["val/majority_acc"] + 0.2
    assert results["test"]["test/f1"] > 0.9


@pytest.mark.slow
def test_ddp_sim_metrics_and_predictions_equal_one_process(run_cli, tmp_path: Path) -> None:
    """The same checkpoint evaluated by 2 CPU processes (llm-eval hardware=ddp_sim) and by one: the same test
    metrics and the same predictions file (all 199 test sentences gathered from both ranks, in row order, once:
    199 is odd: a padding sampler, such as Lightning's default DistributedSampler, would hand one rank a repeat of
    a row, which would show in val/loss, the test metrics and the file), and seqeval on that file gives the
    evaluated metrics.
    Training under ddp_sim (per-device batch 16 against 32, dropout off) ends at the same val/loss within 1e-4;
    its tags may differ by a few words: HF's loss is a mean over each rank's labelled tokens, so the averaged
    gradient weights a rank's tokens by 1/its token count (seen: weights 7e-4 apart, 1 entity of 200 sentences)."""
    bundled = {split: (BUNDLED_DIR / f"ner_{split}.jsonl").read_text().splitlines() for split in ("validation", "test")}
    rows = [json.loads(line) for line in bundled["test"][:199]]
    files = {"train": str(BUNDLED_DIR / "ner_train.jsonl"),
             "validation": write_jsonl(tmp_path / "validation.jsonl", [json.loads(x) for x in bundled["validation"][:199]]),
             "test": write_jsonl(tmp_path / "test.jsonl", rows)}
    common = ["experiment=ner_demo", *TINY, "model.dropout=0.0", "trainer.max_epochs=1",
              "+trainer.limit_train_batches=10", "export=false", "callbacks.rich_progress_bar=null",
              *(f"data.{split}_file={path}" for split, path in files.items())]
    one = run_cli("lightning_llm.train", *common, "data.batch_size=32", f"paths.output_dir={tmp_path / 'one'}")
    assert one.returncode == 0, one.stderr[-3000:]
    ddp = run_cli("lightning_llm.train", *common, "test=false", "data.batch_size=16", "hardware=ddp_sim",
                  f"paths.output_dir={tmp_path / 'ddp'}")
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    val = {side: json.loads((tmp_path / side / "results.json").read_text())["val"] for side in ("one", "ddp")}
    assert val["ddp"]["val/loss"] == pytest.approx(val["one"]["val/loss"], abs=1e-4)
    ckpt = json.loads((tmp_path / "one" / "results.json").read_text())["best_checkpoint"]
    ev = run_cli("lightning_llm.evaluate", f"ckpt_path={ckpt}", "hardware=ddp_sim", f"paths.output_dir={tmp_path / 'ev'}")
    assert ev.returncode == 0, ev.stderr[-3000:]
    test = json.loads((tmp_path / "one" / "results.json").read_text())["test"]
    evaluated = json.loads((tmp_path / "ev" / "eval_results.json").read_text())["test"]
    assert evaluated == pytest.approx(test, abs=1e-6)  # seen: loss 1.2e-7 apart (float32 sums), the rest equal
    files = [[json.loads(line) for line in (tmp_path / side / "predictions_test.jsonl").read_text().splitlines()]
             for side in ("one", "ev")]
    assert [r["words"] for r in files[1]] == [row["tokens"][:len(r["words"])] for r, row in zip(files[1], rows)]
    assert len(files[1]) == len(rows) == 199 and files[1] == files[0]
    truth, pred = [r["tags"] for r in files[1]], [r["predicted"] for r in files[1]]
    assert f1_score(truth, pred) == pytest.approx(evaluated["test/f1"], abs=1e-6)
    assert precision_score(truth, pred) == pytest.approx(evaluated["test/precision"], abs=1e-6)
    assert recall_score(truth, pred) == pytest.approx(evaluated["test/recall"], abs=1e-6)
    assert accuracy_score(truth, pred) == pytest.approx(evaluated["test/acc"], abs=1e-6)
