"""`llm-predict`: tags, answers and labels of tiny saved models equal what a direct forward pass (NER,
classification) or the evaluation path (QA: data module windows + `SquadMetric`) gives; bad input is one line; a
trained run directory predicts what its own evaluation wrote (slow)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from transformers import (
    BertConfig,
    BertForQuestionAnswering,
    BertForSequenceClassification,
    BertForTokenClassification,
    PreTrainedTokenizerFast,
)

from lightning_llm.data.sources import BUNDLED_DIR
from lightning_llm.errors import UserError
from lightning_llm.predict import predict
from lightning_llm.tasks.question_answering import QuestionAnsweringDataModule, SquadMetric
from tests.conftest import wordpiece_tokenizer, write_jsonl

WORDS = "anna bob smith visited met new york paris city the tower stands in where is what first alpha bravo .".split()
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]


def _tokenizer() -> PreTrainedTokenizerFast:
    return wordpiece_tokenizer(WORDS + ["##bel", "##rk"])


def _save(model_cls, path: Path, **config) -> Path:
    torch.manual_seed(0)
    tokenizer = _tokenizer()
    model = model_cls(BertConfig(vocab_size=len(tokenizer), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                 intermediate_size=32, max_position_embeddings=64, **config))
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict_models")
    labels = {"id2label": dict(enumerate(TAGS)), "label2id": {t: i for i, t in enumerate(TAGS)}}
    return {"ner": _save(BertForTokenClassification, root / "ner", num_labels=5, **labels),
            "qa": _save(BertForQuestionAnswering, root / "qa"),
            "cls": _save(BertForSequenceClassification, root / "cls", num_labels=2,
                         id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})}


def _predict(compose_cfg, *overrides: str) -> list | dict:
    result = predict(compose_cfg(list(overrides), config_name="predict"))
    text = Path(result["output_file"]).read_text()
    return json.loads(text) if result["output_file"].endswith(".json") else [json.loads(x) for x in text.splitlines()]


def test_ner_tags_each_word_from_its_first_sub_word(compose_cfg, models_dir, tmp_path: Path) -> None:
    sentences = [["Annabel", "visited", "New", "York"], ["Bob", "Smith", "met", "Anna", "."]]
    records = _predict(compose_cfg, f"model_path={models_dir['ner']}",
                       f"input_file={write_jsonl(tmp_path / 'in.jsonl', [{'tokens': s} for s in sentences])}")
    model = BertForTokenClassification.from_pretrained(models_dir["ner"]).eval()
    tokenizer = _tokenizer()
    for sentence, record in zip(sentences, records):
        enc = tokenizer(sentence, is_split_into_words=True, return_tensors="pt")
        logits = model(**enc).logits[0]
        firsts = [enc.word_ids().index(w) for w in range(len(sentence))]
        assert record == {"words": sentence, "tags": [TAGS[int(logits[i].argmax())] for i in firsts]}
    # Plain text lines split on whitespace give the same; a sentence longer than max_length is split into windows,
    # every word tagged, the first window's words as that window alone tags them.
    (tmp_path / "in.txt").write_text("\n".join(" ".join(s) for s in sentences) + "\n\n")
    assert _predict(compose_cfg, f"model_path={models_dir['ner']}", f"input_file={tmp_path / 'in.txt'}") == records
    long = (sentences[1] * 4)[:18]
    windowed = _predict(compose_cfg, f"model_path={models_dir['ner']}", "max_length=8",
                        f"input_file={write_jsonl(tmp_path / 'long.jsonl', [{'tokens': long}])}")[0]
    first = _predict(compose_cfg, f"model_path={models_dir['ner']}",
                     f"input_file={write_jsonl(tmp_path / 'first.jsonl', [{'tokens': long[:6]}])}")[0]
    assert len(windowed["tags"]) == len(long) and windowed["tags"][:6] == first["tags"]


CONTEXT = "the tower stands in new paris city . " + " ".join(["alpha bravo"] * 12) + " ."


def test_qa_answers_equal_the_evaluation_post_processing(compose_cfg, models_dir, tmp_path: Path) -> None:
    rows = [{"id": f"q{i}", "question": q, "context": CONTEXT, "answers": {"text": [a], "answer_start": [
        CONTEXT.index(a)]}} for i, (q, a) in enumerate([("where is the tower ?", "new paris city"),
                                                         ("what is first ?", "alpha bravo")])]
    path = write_jsonl(tmp_path / "dev.jsonl", rows)
    answers = _predict(compose_cfg, f"model_path={models_dir['qa']}", f"input_file={path}", "max_length=24",
                       "doc_stride=6", "batch_size=3")
    # The evaluation path on the same file: data module windows, the model's logits, SquadMetric.
    dm = QuestionAnsweringDataModule(tokenizer=_tokenizer(), cache_dir=str(tmp_path / "cache"), train_file=path,
                                     validation_file=path, max_length=24, doc_stride=6)
    dm.prepare_data()
    dm.setup("validate")
    model, metric = BertForQuestionAnswering.from_pretrained(models_dir["qa"]).eval(), SquadMetric()
    for batch in dm.val_dataloader():
        with torch.no_grad():
            out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                        token_type_ids=batch["token_type_ids"])
        metric.update(out.start_logits, out.end_logits, batch)
    assert dm.counts["validation"]["features"] > 2 * len(rows)  # several windows per question
    assert answers == {r["id"]: r["prediction"] for r in metric.records().values()}
    assert all(a in CONTEXT for a in answers.values())


def test_classification_labels_and_probabilities(compose_cfg, models_dir, tmp_path: Path) -> None:
    texts = ["the tower stands in paris", "anna met bob", "where is new york"]
    (tmp_path / "in.csv").write_text("id,text\n" + "".join(f"{i},{t}\n" for i, t in enumerate(texts)))
    records = _predict(compose_cfg, f"model_path={models_dir['cls']}", f"input_file={tmp_path / 'in.csv'}",
                       "batch_size=2")
    model = BertForSequenceClassification.from_pretrained(models_dir["cls"]).eval()
    probs = model(**_tokenizer()(texts, padding=True, return_tensors="pt")).logits.softmax(-1)
    assert [r["text"] for r in records] == texts
    assert [r["label"] for r in records] == [["negative", "positive"][int(i)] for i in probs.argmax(-1)]
    assert [r["probability"] for r in records] == pytest.approx(probs.max(-1).values.tolist(), abs=1e-5)


@pytest.mark.parametrize("case, message", [
    ("missing_column", "tokens_column='words' is not a column of"),
    ("not_a_list", "tokens_column='tokens' must hold a list of words per row, row 1 of"),
    ("qa_missing_context", "context_column='context' is not a column of"),
    ("missing_file", "input_file: file not found:"),
    ("missing_model", "model_path: not found: ./nope")])
def test_bad_input_is_one_line(compose_cfg, models_dir, tmp_path: Path, case: str, message: str) -> None:
    path = write_jsonl(tmp_path / "in.jsonl", [{"tokens": ["anna"]}, {"tokens": "anna met bob"}])
    overrides = {"missing_column": [f"model_path={models_dir['ner']}", "tokens_column=words"],
                 "not_a_list": [f"model_path={models_dir['ner']}"],
                 "qa_missing_context": [f"model_path={models_dir['qa']}", "question_column=tokens"],
                 "missing_file": [f"model_path={models_dir['ner']}", f"input_file={tmp_path / 'none.jsonl'}"],
                 "missing_model": ["model_path=./nope"]}[case]
    with pytest.raises(UserError) as err:
        predict(compose_cfg([f"input_file={path}", *overrides], config_name="predict"))
    assert message in str(err.value) and "\n" not in str(err.value), str(err.value)


@pytest.mark.slow
def test_cli_on_a_trained_run_predicts_what_its_evaluation_wrote(run_cli, tmp_path: Path) -> None:
    """llm-train a tiny QA model, then llm-predict on its run directory (best checkpoint, the run's max_length and
    doc_stride from its saved config): equal to the run's predictions_test.json."""
    tiny = ["model.hidden_size=32", "model.num_hidden_layers=1", "model.num_attention_heads=2",
            "model.intermediate_size=64", "model.tokenizer_vocab_size=300", "trainer.max_epochs=1",
            "+trainer.limit_train_batches=4", "logger=none", "callbacks.rich_progress_bar=null", "export=false"]
    proc = run_cli("lightning_llm.train", "experiment=qa_demo", *tiny, f"paths.output_dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = json.loads((tmp_path / "run" / "predictions_test.json").read_text())
    out = tmp_path / "answers.json"
    proc = run_cli("lightning_llm.predict", f"model_path={tmp_path / 'run'}",
                   f"input_file={BUNDLED_DIR / 'qa_test.jsonl'}", f"output_file={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(out.read_text()) == expected and len(expected) == 200


@pytest.mark.slow
def test_cli_on_a_trained_ner_run_tags_what_its_evaluation_wrote(run_cli, tmp_path: Path) -> None:
    """llm-train a tiny NER model, then llm-predict on its run directory: each test sentence's tags equal the run's
    predictions_test.jsonl (on the words evaluation scored: a sentence cut at max_length keeps its first words,
    while llm-predict tags the rest in further windows)."""
    tiny = ["model.hidden_size=32", "model.num_hidden_layers=1", "model.num_attention_heads=2",
            "model.intermediate_size=64", "model.tokenizer_vocab_size=300", "trainer.max_epochs=2",
            "logger=none", "callbacks.rich_progress_bar=null", "export=false"]
    proc = run_cli("lightning_llm.train", "experiment=ner_demo", *tiny, f"paths.output_dir={tmp_path / 'run'}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = [json.loads(line) for line in (tmp_path / "run" / "predictions_test.jsonl").read_text().splitlines()]
    out = tmp_path / "tags.jsonl"
    proc = run_cli("lightning_llm.predict", f"model_path={tmp_path / 'run'}",
                   f"input_file={BUNDLED_DIR / 'ner_test.jsonl'}", f"output_file={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    predicted = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(predicted) == len(expected) > 0
    for mine, run in zip(predicted, expected):
        n = len(run["words"])
        assert mine["words"][:n] == run["words"] and mine["tags"][:n] == run["predicted"]
    assert len({tag for r in predicted for tag in r["tags"]}) > 1  # not a constant prediction
