"""Extractive question answering: an encoder with a start/end span head; answers rebuilt over all doc-stride
windows of a question (n-best post-processing, as transformers' run_qa) and scored with SQuAD v1.1's exact match
and F1 over questions, not windows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torchmetrics import MeanMetric, Metric
from torchmetrics.utilities import dim_zero_cat
from transformers import AutoModelForQuestionAnswering

from lightning_llm.config.schema import Positive, UnitFraction
from lightning_llm.data.question_answering import EVAL_KEYS, squad_scores, squad_v2_scores
from lightning_llm.modules.base import HFTaskModule
from lightning_llm.utils.io import write_json_atomic
from lightning_llm.utils.text_states import decode_objects, encode_objects

# What run_qa's postprocess_qa_predictions predicts for a question without any valid span.
NO_ANSWER = "empty"


# ----------------------------------------------------------------------------------------------- post-processing
def best_spans(start_logits: torch.Tensor, end_logits: torch.Tensor, offset_start: torch.Tensor,
               offset_end: torch.Tensor, attention_mask: torch.Tensor | None = None, n_best_size: int = 20,
               max_answer_length: int = 30) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The best span of each feature (window): `postprocess_qa_predictions`' candidates (the `n_best_size` top
    start and end tokens, pairs with both ends inside the context, end >= start, at most `max_answer_length`
    tokens) scored by start + end logit. Returns (score, start char, end char) per feature; -inf where none is
    valid. The best answer of a question is the best of its windows' bests (the top of run_qa's merged n-best)."""
    start_logits, end_logits = start_logits.float(), end_logits.float()
    if attention_mask is not None:  # padding is not part of a feature (run_qa pads only to a fixed length)
        pad = attention_mask == 0
        start_logits = start_logits.masked_fill(pad, float("-inf"))
        end_logits = end_logits.masked_fill(pad, float("-inf"))
    k = min(n_best_size, start_logits.shape[-1])
    s_val, s_idx = start_logits.topk(k, dim=-1)  # (B, k), sorted descending like argsort[-1:-k-1:-1]
    e_val, e_idx = end_logits.topk(k, dim=-1)
    s_char, e_char = offset_start.gather(-1, s_idx), offset_end.gather(-1, e_idx)
    length = e_idx[:, None, :] - s_idx[:, :, None] + 1
    valid = (s_char >= 0)[:, :, None] & (e_char >= 0)[:, None, :] & (length >= 1) & (length <= max_answer_length)
    scores = (s_val[:, :, None] + e_val[:, None, :]).masked_fill(~valid, float("-inf"))
    best, flat = scores.flatten(1).max(-1)  # first maximum: start-major order, as run_qa's loops
    rows = torch.arange(len(flat), device=flat.device)
    return best, s_char[rows, flat // k], e_char[rows, flat % k]


class SquadMetric(Metric):
    """Exact match and F1 (SQuAD v1.1, or v2.0 with `version_2_with_negative`) over the questions of a whole
    split, from per-window best spans.

    List states reduced by concatenation: under DDP the windows of every rank are gathered before a question's
    windows are merged, so a question whose windows fall on different ranks is answered from all of them, and a
    question repeated by the distributed sampler's padding is scored once. Each window carries its question's id,
    question, context and gold answers as UTF-8 bytes, so the texts travel with the tensors.

    SQuAD v2.0 follows run_qa's `postprocess_qa_predictions(version_2_with_negative=True)`: a question's null score
    is the lowest [CLS] start + end logit over its windows; it gets no answer ("") when the null score minus the
    best span's score exceeds `null_score_diff_threshold`.
    """

    full_state_update = False

    def __init__(self, n_best_size: int = 20, max_answer_length: int = 30, version_2_with_negative: bool = False,
                 null_score_diff_threshold: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.n_best_size, self.max_answer_length = n_best_size, max_answer_length
        self.version_2_with_negative, self.null_score_diff_threshold = version_2_with_negative, \
            null_score_diff_threshold
        for name in ("example_index", "score", "null_score", "start_char", "end_char", "text_bytes",
                     "text_lengths"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, start_logits: torch.Tensor, end_logits: torch.Tensor, batch: Mapping[str, Any]) -> None:
        score, start, end = best_spans(start_logits, end_logits, batch["offset_start"], batch["offset_end"],
                                       batch.get("attention_mask"), self.n_best_size, self.max_answer_length)
        self.example_index.append(batch["example_index"].long())
        self.score.append(score)
        cls = batch.get("cls_index")
        cls = torch.zeros_like(batch["example_index"]) if cls is None else cls
        rows = torch.arange(len(score), device=score.device)
        self.null_score.append(start_logits.float()[rows, cls] + end_logits.float()[rows, cls])
        self.start_char.append(start.long())
        self.end_char.append(end.long())
        texts = [[batch["context"][i], list(batch["answers"][i]), batch["example_id"][i] if "example_id" in batch else None,
                  batch["question"][i] if "question" in batch else None] for i in range(len(score))]
        blob, lengths = encode_objects(texts, score.device)
        self.text_bytes.append(blob)
        self.text_lengths.append(lengths)

    def records(self) -> dict[int, dict[str, Any]]:
        """Question row -> {id, question, prediction, answers} (+ `null_score_diff` for SQuAD v2.0), in row order."""
        if not len(self.example_index):  # a list, or after a DDP sync a tensor
            return {}
        index = dim_zero_cat(self.example_index).tolist()
        score, null = dim_zero_cat(self.score).tolist(), dim_zero_cat(self.null_score).tolist()
        start, end = dim_zero_cat(self.start_char).tolist(), dim_zero_cat(self.end_char).tolist()
        texts = decode_objects(self.text_bytes, self.text_lengths)
        best: dict[int, tuple[float, int, int]] = {}
        least_null: dict[int, float] = {}
        first: dict[int, int] = {}
        for i, row in enumerate(index):
            first.setdefault(row, i)
            if row not in best or score[i] > best[row][0]:
                best[row] = (score[i], start[i], end[i])
            least_null[row] = min(least_null.get(row, float("inf")), null[i])
        out = {}
        for row, (value, s, e) in sorted(best.items()):
            context, answers, qid, question = texts[first[row]]
            text = (context[s:e] if value != float("-inf") else "") or NO_ANSWER
            record = {"id": qid, "question": question, "prediction": text, "answers": answers}
            if self.version_2_with_negative:
                # run_qa: without a valid span the best non-null answer is "empty" with score 0
                diff = least_null[row] - (value if value != float("-inf") else 0.0)
                record["null_score_diff"] = diff
                if diff > self.null_score_diff_threshold:
                    record["prediction"] = ""
            out[row] = record
        return out

    def predictions(self) -> dict[int, tuple[str, list[str]]]:
        """Question row -> (predicted answer, gold answers)."""
        return {row: (r["prediction"], r["answers"]) for row, r in self.records().items()}

    def compute(self) -> dict[str, float]:
        predicted = self.predictions()
        if not predicted:
            return {}
        preds, golds = zip(*predicted.values())
        if self.version_2_with_negative:
            return squad_v2_scores(list(preds), list(golds))
        return squad_scores(list(preds), list(golds))


class ExtractiveQAModule(HFTaskModule):
    """Logs `train/loss` and, for `val`/`test`: `loss` (start/end cross-entropy over windows, [CLS] where a window
    does not hold the answer), `exact_match` and `f1` (SQuAD v1.1 over questions, in [0, 1]; with the data's
    `version_2_with_negative` SQuAD v2.0's, plus `HasAns_exact_match`/`HasAns_f1`/`NoAns_exact_match`/`NoAns_f1`);
    `val/first_sentence_f1` and `val/first_sentence_exact_match` are the data module's baseline (answer = the first
    sentence of the context). `n_best_size`, `max_answer_length` and `null_score_diff_threshold` are run_qa's
    post-processing settings. Each evaluation writes `predictions_<stage>.jsonl` (one object per question: id,
    question, prediction, answers) and `predictions_<stage>.json` (run_qa's `{id: answer}`)."""

    auto_class = AutoModelForQuestionAnswering
    task = "question_answering"
    tokenizer_kind = "wordpiece"
    monitor = ("val/f1", "max")
    optimized_metric = ("val/f1", "max")
    progress_bar_metrics = frozenset({"loss", "exact_match", "f1"})
    data_kwargs = frozenset({"baseline_f1", "baseline_exact_match", "version_2_with_negative"})
    baseline_metrics = {"baseline_f1": "val/first_sentence_f1",
                        "baseline_exact_match": "val/first_sentence_exact_match"}

    def __init__(self, *, n_best_size: Positive[int] = 20, max_answer_length: Positive[int] = 30,
                 null_score_diff_threshold: float = 0.0, version_2_with_negative: bool | None = None,
                 baseline_f1: float | None = None, baseline_exact_match: float | None = None,
                 tokenizer_vocab_size: Positive[int] = 4000, learning_rate: Positive[float] = 5e-4,
                 warmup_ratio: UnitFraction = 0.1, **kwargs: Any) -> None:
        self._post = {"n_best_size": n_best_size, "max_answer_length": max_answer_length,
                      "version_2_with_negative": bool(version_2_with_negative),
                      "null_score_diff_threshold": null_score_diff_threshold}
        super().__init__(tokenizer_vocab_size=tokenizer_vocab_size, learning_rate=learning_rate,
                         warmup_ratio=warmup_ratio, **kwargs)

    def make_metrics(self) -> nn.ModuleDict:
        return nn.ModuleDict({"loss": MeanMetric(), "squad": SquadMetric(**self._post)})

    def update_metrics(self, metrics: nn.ModuleDict, batch: dict[str, Any]) -> None:
        out = self.model(**{k: v for k, v in batch.items() if k not in EVAL_KEYS})
        metrics["loss"].update(out.loss.detach(), weight=int(batch["input_ids"].shape[0]))
        metrics["squad"].update(out.start_logits.detach(), out.end_logits.detach(), batch)

    def compute_metrics(self, metrics: nn.ModuleDict) -> dict[str, Any]:
        squad = metrics["squad"]
        with squad.sync_context():  # all ranks' windows (what `compute()` gathers; `records()` is not it)
            records = squad.records()
        if not records:
            return {"loss": float(metrics["loss"].compute())}
        preds, golds = [r["prediction"] for r in records.values()], [r["answers"] for r in records.values()]
        v2 = squad.version_2_with_negative
        scores = squad_v2_scores(preds, golds) if v2 else squad_scores(preds, golds)
        counts = {k: int(scores.pop(k)) for k in [k for k in scores if k.endswith("total")]}
        if not self.trainer.sanity_checking:
            stage = "test" if self.trainer.testing else "val"
            details = {"squad_version": "2.0" if v2 else "1.1", "questions": len(records), **counts}
            path = self.write_predictions(stage, records.values(), details)
            if path is not None:  # rank 0: run_qa's predictions.json as well
                write_json_atomic(path.with_suffix(".json"), {r["id"]: r["prediction"] for r in records.values()})
        return {"loss": float(metrics["loss"].compute()), **scores}

    def fit_summary(self, metrics: Mapping[str, Any]) -> str | None:
        f1, baseline = metrics.get("val/f1"), self.hparams.get("baseline_f1")
        if f1 is None or baseline is None:
            return None
        em = metrics.get("val/exact_match")
        em_text = f", exact match {float(em):.4f} vs {self.hparams.baseline_exact_match:.4f}" if em is not None else ""
        version = "v2.0" if self._post["version_2_with_negative"] else "v1.1"
        return f"val/f1 {float(f1):.4f} vs first-sentence baseline {baseline:.4f}{em_text} (SQuAD {version} over " \
               f"questions; the baseline answers every question with the context's first sentence)"
