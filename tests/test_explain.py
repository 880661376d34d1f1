"""`llm-explain`: integrated gradients satisfy completeness within the reported delta, a planted trigger word gets
the largest attribution in a classifier trained to rely on it, JSONL/HTML/PNG outputs are valid."""

from __future__ import annotations

import json
import random
import re
import sys
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import captum  # noqa: F401  (the explain extra: CI installs every extra, so a missing one fails here)
import pytest
import torch
from transformers import (
    AutoModelForSequenceClassification,
    BertConfig,
    BertTokenizerFast,
)

from lightning_llm.data.tokenizers import train_tokenizer
from lightning_llm.errors import UserError
from lightning_llm.explain import accepts, check_settings, explain
from lightning_llm.interpret.attributions import baseline_ids, explain_causal, explain_classification
from lightning_llm.runtime.extras import install_hint
from lightning_llm.runtime.model_paths import load_model_path
from tests.conftest import tiny_gpt_dir

FILLERS = ("the a film plot actor scene music was is very quite rather long short slow bright dark story ending "
           "camera light old new").split()
TRIGGER = "zebra"


def _load(path: Path) -> tuple[Any, Any]:
    """(model, tokenizer) as llm-explain loads them."""
    loaded = load_model_path(str(path), accepts())
    return loaded.model, loaded.tokenizer


def _sentence(rng: random.Random, trigger: bool) -> str:
    words = [rng.choice(FILLERS) for _ in range(rng.randint(5, 9))]
    if trigger:
        words.insert(rng.randrange(len(words) + 1), TRIGGER)
    return " ".join(words)


def train_trigger_classifier(tmp: Path, steps: int = 200) -> tuple[Path, list[str]]:
    """A tiny BERT trained (a few hundred steps, synthetic data) to say `positive` iff the text holds TRIGGER,
    saved as an HF model dir with its tokenizer; also returns held-out texts (every other one has the trigger)."""
    rng = random.Random(0)
    texts = [_sentence(rng, i % 2 == 0) for i in range(512)]
    labels = torch.tensor([1 - i % 2 for i in range(512)])
    tokenizer = train_tokenizer(texts, "wordpiece", 100, tmp / "cache")
    torch.manual_seed(0)
    config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=32, num_labels=2,
                        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    model = AutoModelForSequenceClassification.from_config(config)
    batch = tokenizer(texts, padding=True, return_tensors="pt")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(texts), (32,))
        loss = model(input_ids=batch["input_ids"][idx], attention_mask=batch["attention_mask"][idx],
                     labels=labels[idx]).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    held_out = [_sentence(rng, i % 2 == 0) for i in range(64)]
    enc = tokenizer(held_out, padding=True, return_tensors="pt")
    with torch.no_grad():
        preds = model(**enc).logits.argmax(-1)
    accuracy = (preds == torch.tensor([1 - i % 2 for i in range(64)])).float().mean().item()
    assert accuracy >= 0.95, f"the trigger classifier did not learn (held-out accuracy {accuracy})"
    model.save_pretrained(tmp / "model")
    tokenizer.save_pretrained(tmp / "model")
    return tmp / "model", held_out


@pytest.fixture(scope="module")
def trigger_classifier(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_trigger_classifier(tmp_path_factory.mktemp("trigger"))[0]


@pytest.fixture(scope="module")
def tiny_gpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_gpt_dir(tmp_path_factory.mktemp("gpt"), corpus_lines=300)


@pytest.mark.parametrize("trained", [False, True])
def test_classifier_completeness_within_delta(trigger_classifier: Path, trained: bool) -> None:
    """sum of attributions = p(target | x) - p(target | baseline) up to the reported convergence delta, f computed
    here independently of llm-explain; special tokens stay in the baseline and get exactly zero. On a smooth
    (random, wide-init) model the delta shrinks with n_steps to ~0; the trained model is saturated (its
    probability jumps within ~5% of the path, so no step count is safe), there the identity must still hold."""
    if trained:
        model, tokenizer = _load(trigger_classifier)
    else:  # a fixed vocabulary (the trained WordPiece's merges vary run to run); "zebra" splits into sub-words
        words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLERS, "zeb", "##ra"]
        tokenizer = BertTokenizerFast(vocab={w: i for i, w in enumerate(words)})
        assert tokenizer.tokenize("zebra") == ["zeb", "##ra"]
        torch.manual_seed(1)  # a draw whose probability moves (|p(x) - p(baseline)| = 0.19)
        config = BertConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=64, max_position_embeddings=32, num_labels=2, initializer_range=0.5)
        model = AutoModelForSequenceClassification.from_config(config).eval()
    text = "the film was zebra very slow"
    enc = tokenizer(text, return_tensors="pt", return_special_tokens_mask=True)
    base = baseline_ids(enc["input_ids"], enc["special_tokens_mask"], tokenizer.pad_token_id)
    assert base[0, 0] == tokenizer.cls_token_id and base[0, -1] == tokenizer.sep_token_id
    assert set(base[0, 1:-1].tolist()) == {tokenizer.pad_token_id}
    for target in (0, 1):
        deltas = []
        for n_steps in (4, 64):
            record = explain_classification(model, tokenizer, text, target, n_steps=n_steps,
                                            internal_batch_size=32, max_length=None)
            with torch.no_grad():
                fx = model(input_ids=enc["input_ids"]).logits.softmax(-1)[0, target].item()
                fb = model(input_ids=base).logits.softmax(-1)[0, target].item()
            assert abs(fx - fb) > 0.1  # the test means something: the text moves the probability
            assert abs(sum(record["scores"]) - (fx - fb)) <= abs(record["delta"]) + 1e-5
            assert record["scores"][0] == 0 and record["scores"][-1] == 0  # [CLS], [SEP]
            assert sum(record["word_scores"]) == pytest.approx(sum(record["scores"]), abs=1e-6)
            deltas.append(abs(record["delta"]))
            if not trained:
                assert record["words"][3] == TRIGGER and len(record["words"]) == len(record["tokens"]) - 3
        if not trained:
            assert deltas[1] < 1e-4 * abs(fx - fb) and deltas[1] < deltas[0]


def test_planted_trigger_word_gets_the_largest_attribution(trigger_classifier: Path) -> None:
    model, tokenizer = _load(trigger_classifier)
    rng = random.Random(1)
    for _ in range(5):
        text = _sentence(rng, trigger=True)
        record = explain_classification(model, tokenizer, text, None, n_steps=128, internal_batch_size=None,
                                        max_length=None)
        assert record["predicted_label"] == "positive"
        best = max(range(len(record["words"])), key=lambda i: record["word_scores"][i])
        assert record["words"][best] == TRIGGER, (text, list(zip(record["words"], record["word_scores"])))


def test_causal_lm_completeness_for_a_continuation(tiny_gpt: Path) -> None:
    """Captum's LLMGradientAttribution: attributions sum to log P(continuation | prompt) - log P(... | baseline)
    within delta; log P recomputed here token by token."""
    model, tokenizer = _load(tiny_gpt)
    record = explain_causal(model, tokenizer, "The clever crow sat", " on the", n_steps=32, internal_batch_size=16)
    ids = tokenizer("The clever crow sat on the")["input_ids"]
    prompt_len = len(tokenizer("The clever crow sat")["input_ids"])
    with torch.no_grad():
        log_probs = model(input_ids=torch.tensor([ids])).logits[0].log_softmax(-1)
    expected = sum(log_probs[i - 1, ids[i]].item() for i in range(prompt_len, len(ids)))
    assert record["log_probability"] == pytest.approx(expected, abs=1e-4)
    moved = record["log_probability"] - record["baseline_log_probability"]
    assert abs(sum(record["scores"]) - moved) <= abs(record["delta"]) + 1e-5 and abs(record["delta"]) < 0.05
    assert record["words"] == ["The", "clever", "crow", "sat"] and len(record["tokens"]) == prompt_len
    assert len(record["token_scores_per_target"]) == len(ids) - prompt_len


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows, self.words, self.open = 0, [], []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in ("meta", "br"):  # void elements: no end tag
            return
        self.open.append(tag)
        self.rows += tag == "tr"
        if tag == "span" and ("class", "w") in attrs:
            self.words.append(None)

    def handle_endtag(self, tag: str) -> None:
        assert self.open and self.open.pop() == tag, f"unbalanced </{tag}>"

    def handle_data(self, data: str) -> None:
        if self.words and self.words[-1] is None and self.open[-1] == "span":
            self.words[-1] = data


def test_outputs_jsonl_html_png(compose_cfg, trigger_classifier: Path, tmp_path: Path) -> None:
    texts = ["the film was zebra slow", "a <b>dark</b> & long story"]
    texts_file = tmp_path / "texts.jsonl"
    texts_file.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "out"
    cfg = compose_cfg([f"model_path={trigger_classifier}", f"texts_file={texts_file}", "n_steps=8", "png=true",
                       f"output_dir={out}", "target=positive"], config_name="explain")
    explain(cfg)
    records = [json.loads(line) for line in (out / "attributions.jsonl").read_text().splitlines()]
    assert [r["text"] for r in records] == texts and all(r["target_label"] == "positive" for r in records)
    model, tokenizer = _load(trigger_classifier)
    for r in records:
        assert len(r["tokens"]) == len(r["scores"]) and len(r["words"]) == len(r["word_scores"])
        with torch.no_grad():  # the probabilities are the model's own for that text
            probs = model(**tokenizer(r["text"], return_tensors="pt")).logits.softmax(-1)[0]
        assert r["predicted_label"] == model.config.id2label[int(probs.argmax())]
        assert r["probability"] == pytest.approx(float(probs.max()), abs=1e-6)
        assert r["target_probability"] == pytest.approx(float(probs[1]), abs=1e-6)  # 1: positive
        assert isinstance(r["delta"], float)
    page = _Page()
    page.feed((out / "attributions.html").read_text())
    page.close()
    assert page.rows == 1 + len(texts) and not page.open
    assert page.words == [w for r in records for w in r["words"]]  # escaped text round-trips ("<b>dark</b>")
    assert (out / "attributions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_bad_settings_are_one_line_errors(compose_cfg, trigger_classifier: Path, monkeypatch) -> None:
    cfg = compose_cfg([f"model_path={trigger_classifier}", "text=x", "target=neutral"], config_name="explain")
    with pytest.raises(UserError, match="target: 'neutral' is not a label"):
        explain(cfg)
    with pytest.raises(UserError, match="give exactly one"):
        check_settings(compose_cfg([f"model_path={trigger_classifier}"], config_name="explain"))
    monkeypatch.setitem(sys.modules, "captum.attr", None)  # as if captum were not installed
    with pytest.raises(UserError, match=r'llm-explain needs the explain extra: ' + re.escape(install_hint("explain")) + r''):
        check_settings(cfg)


@pytest.mark.slow
def test_cli_on_a_run_dir_writes_outputs_and_fails_cleanly(run_cli, trigger_classifier: Path, tmp_path: Path) -> None:
    proc = run_cli("lightning_llm.explain", f"model_path={trigger_classifier}", "text='the zebra film'",
                   f"output_dir={tmp_path / 'out'}", "n_steps=8")
    assert proc.returncode == 0, proc.stderr
    assert "positive" in proc.stdout and (tmp_path / "out" / "attributions.html").is_file()
    proc = run_cli("lightning_llm.explain", f"model_path={tmp_path / 'missing'}", "text=x")
    assert proc.returncode == 2 and proc.stderr.strip().splitlines()[-1].startswith("error: model_path: not found")
