"""Token classification (NER): an encoder with a per-token head, scored with seqeval over the whole split."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.utilities import dim_zero_cat
from transformers import AutoModelForTokenClassification

from lightning_llm.config.schema import Positive, UnitFraction
from lightning_llm.data.token_classification import EVAL_KEYS
from lightning_llm.errors import UserError
from lightning_llm.modules.base import HFTaskModule
from lightning_llm.runtime.extras import require_extra
from lightning_llm.utils.text_states import decode_objects, encode_objects

_PREFIXES = ("B-", "I-", "E-", "S-", "L-", "U-")  # IOB1/IOB2/IOE/IOBES/BILOU chunk prefixes
_AVERAGES = {"micro avg", "macro avg", "weighted avg"}


class SeqevalMetric(Metric):
    """seqeval's entity-level micro precision/recall/F1, per-type F1 and token accuracy over a whole split.

    Word-level tag ids are kept per sequence (positions labelled -100 are not words) in list states reduced by
    concatenation, so under DDP every rank's sentences are gathered and scored once, as one corpus: entity F1 is
    not a mean of batch F1s. Scoring is seqeval's default mode (as transformers' run_ner and `evaluate`'s
    seqeval use it), which reads IOB1, IOB2 and IOBES tags the way seqeval does. With `example_index` (the
    sentence's row) the sentences come back in row order and a row repeated by the distributed sampler's padding
    counts once; with `words` they come back with their words, for the predictions file.
    """

    full_state_update = False

    def __init__(self, label_names: list[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label_names = list(label_names)
        for name in ("preds", "target", "lengths", "example_index", "words", "words_lengths"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, preds: torch.Tensor, labels: torch.Tensor, example_index: torch.Tensor | None = None,
               words: list[list[str]] | None = None) -> None:
        """`preds`, `labels`: (batch, tokens) tag ids; labels -100 where no word starts."""
        starts = labels != -100
        self.preds.append(preds[starts].long())
        self.target.append(labels[starts].long())
        self.lengths.append(starts.sum(-1).long())
        if example_index is not None:
            self.example_index.append(example_index.long())
        if words is not None:
            blob, lengths = encode_objects(words, labels.device)
            self.words.append(blob)
            self.words_lengths.append(lengths)

    def _rows(self) -> list[tuple[list[int], list[int], list[str] | None]]:
        """(true ids, predicted ids, words or None) per sentence, in row order, each row once."""
        if not len(self.lengths):  # a list, or after a DDP sync a tensor (empty when no rank had any)
            return []
        lengths = dim_zero_cat(self.lengths).tolist()
        target, preds = dim_zero_cat(self.target).tolist(), dim_zero_cat(self.preds).tolist()
        words = decode_objects(self.words, self.words_lengths) if len(self.words_lengths) else [None] * len(lengths)
        rows, start = [], 0
        for n, row_words in zip(lengths, words):
            rows.append((target[start:start + n], preds[start:start + n], row_words))
            start += n
        if not len(self.example_index):
            return rows
        by_index: dict[int, tuple[list[int], list[int], list[str] | None]] = {}
        for index, row in zip(dim_zero_cat(self.example_index).tolist(), rows):
            by_index.setdefault(index, row)
        return [by_index[i] for i in sorted(by_index)]

    def sequences(self) -> tuple[list[list[str]], list[list[str]]]:
        """(true tags, predicted tags) per sentence, as names."""
        names = self.label_names
        rows = self._rows()
        return [[names[i] for i in t] for t, _, _ in rows], [[names[i] for i in p] for _, p, _ in rows]

    def records(self) -> list[dict[str, Any]]:
        """One object per sentence for `predictions_<stage>.jsonl`: the scored words (a sentence cut by
        max_length keeps its first words only; `truncated` says how many were dropped), gold and predicted tags."""
        names, out = self.label_names, []
        for target, preds, words in self._rows():
            record: dict[str, Any] = {}
            if words is not None:
                record["words"] = words[:len(target)]
                if len(words) > len(target):
                    record["truncated"] = len(words) - len(target)
            record["tags"] = [names[i] for i in target]
            record["predicted"] = [names[i] for i in preds]
            out.append(record)
        return out

    def compute(self) -> dict[str, float]:
        return self.scores()[0]

    def scores(self) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """(metric values, seqeval's per-type report with precision, recall, f1-score, support) from one pass:
        the report's micro average is what seqeval's precision/recall/f1_score compute (4 entity extractions
        were 40% of a demo validation's metric time)."""
        metrics = require_extra("seqeval.metrics", "ner", "model=token_classifier")
        truth, pred = self.sequences()
        if not truth:
            return {}, {}
        report = metrics.classification_report(truth, pred, output_dict=True, zero_division=0)
        micro = report.get("micro avg") or {"precision": 0.0, "recall": 0.0, "f1-score": 0.0}
        values = {"precision": micro["precision"], "recall": micro["recall"], "f1": micro["f1-score"],
                  "acc": metrics.accuracy_score(truth, pred)}
        # Every type the tag names define, present in this split or not, so each epoch logs the same keys.
        types = {name[2:] for name in self.label_names if name[:2] in _PREFIXES} | set(report) - _AVERAGES
        for name in sorted(types):
            values[f"f1_{name}"] = report.get(name, {}).get("f1-score", 0.0)
        report = {name: {k: float(v) for k, v in row.items()} for name, row in report.items()}
        return {name: float(value) for name, value in values.items()}, report


class TokenClassificationModule(HFTaskModule):
    """Logs `train/loss` and, for `val`/`test`: `loss`, `precision`, `recall`, `f1` (seqeval, entity-level micro),
    `acc` (token accuracy over words), `f1_<TYPE>` per entity type; `val/majority_f1` and `val/majority_acc` are
    the majority-tag baseline from the data module (`baseline_f1`, `baseline_acc`)."""

    auto_class = AutoModelForTokenClassification
    task = "token_classification"
    tokenizer_kind = "wordpiece"
    monitor = ("val/f1", "max")
    optimized_metric = ("val/f1", "max")
    progress_bar_metrics = frozenset({"loss", "f1"})
    data_kwargs = frozenset({"label_names", "baseline_f1", "baseline_acc"})
    eval_data_settings = frozenset({"label_names"})
    baseline_metrics = {"baseline_f1": "val/majority_f1", "baseline_acc": "val/majority_acc"}

    def __init__(self, *, num_labels: Positive[int] | None = None, label_names: list[str] | None = None,
                 baseline_f1: float | None = None, baseline_acc: float | None = None,
                 tokenizer_vocab_size: Positive[int] = 4000, learning_rate: Positive[float] = 5e-4,
                 warmup_ratio: UnitFraction = 0.1, **kwargs: Any) -> None:
        self._label_names = list(label_names) if label_names else None
        self._num_labels = num_labels or (len(label_names) if label_names else 2)
        super().__init__(tokenizer_vocab_size=tokenizer_vocab_size, learning_rate=learning_rate,
                         warmup_ratio=warmup_ratio, **kwargs)
        require_extra("seqeval", "ner", "model=token_classifier")  # fail before training, not at validation

    @classmethod
    def reconcile(cls, configured: Mapping[str, Any], from_data: Mapping[str, Any]) -> dict[str, Any]:
        """`num_labels` null = the data's tag count; a trained model's tags must be the data's (same ids)."""
        trained = configured.get("label_names")
        kwargs = super().reconcile(configured, from_data)
        names = from_data.get("label_names")
        if trained and names and list(trained) != list(names):
            raise UserError(f"data: the tags {names} are not the model's {list(trained)} (same names, same order)")
        if names and kwargs.get("num_labels") not in (None, len(names)):
            raise UserError(f"model.num_labels={kwargs['num_labels']} but the data has {len(names)} tags {names}: "
                            f"set model.num_labels=null")
        return kwargs

    def task_config(self) -> dict[str, Any]:
        names = self._label_names or [f"LABEL_{i}" for i in range(self._num_labels)]
        return {"num_labels": self._num_labels, "id2label": dict(enumerate(names)),
                "label2id": {name: i for i, name in enumerate(names)}}

    def make_metrics(self) -> nn.ModuleDict:
        names = self._label_names or [f"LABEL_{i}" for i in range(self._num_labels)]
        return nn.ModuleDict({"loss": MeanMetric(), "seqeval": SeqevalMetric(names)})

    def update_metrics(self, metrics: nn.ModuleDict, batch: dict[str, torch.Tensor]) -> None:
        out = self.model(**{k: v for k, v in batch.items() if k not in EVAL_KEYS})
        labels = batch["labels"]
        metrics["loss"].update(out.loss.detach(), weight=int((labels != -100).sum()))
        metrics["seqeval"].update(out.logits.argmax(-1), labels, batch.get("example_index"), batch.get("words"))

    def compute_metrics(self, metrics: nn.ModuleDict) -> dict[str, Any]:
        seqeval = metrics["seqeval"]
        with seqeval.sync_context():  # all ranks' sentences (what `compute()` gathers; these methods are not it)
            values, report = seqeval.scores()
            records = seqeval.records() if values and not self.trainer.sanity_checking else None
        if records is not None:
            self.write_predictions("test" if self.trainer.testing else "val", records, {"seqeval_report": report})
        return {"loss": float(metrics["loss"].compute()), **values}

    def fit_summary(self, metrics: Mapping[str, Any]) -> str | None:
        f1, baseline = metrics.get("val/f1"), self.hparams.get("baseline_f1")
        if f1 is None or baseline is None:
            return None
        acc = metrics.get("val/acc")
        tokens = f", token acc {float(acc):.4f} vs {self.hparams.baseline_acc:.4f}" if acc is not None else ""
        return f"val/f1 {float(f1):.4f} vs majority-tag baseline {baseline:.4f}{tokens} (all words tagged with the " \
               f"most frequent training tag)"
