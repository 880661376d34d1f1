"""Knowledge distillation of a sequence classifier: a smaller student learns from the labels and from a trained
teacher's softened logits (Hinton et al., 2015)."""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy
from transformers import AutoModelForSequenceClassification

from lightning_llm import compat
from lightning_llm.config.schema import Positive, UnitFraction
from lightning_llm.data.tokenizers import load_tokenizer
from lightning_llm.errors import UserError, first_line
from lightning_llm.modules.classification import SequenceClassificationModule
from lightning_llm.runtime.console import hf_progress_bars_off


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """`T^2 * KL(p_teacher || p_student)` with both distributions softened by `T`, averaged over the batch (the
    T^2 keeps its gradients on the scale of the cross-entropy's as T changes). In fp32: bf16 log-softmax
    differences of near-equal logits are mostly rounding."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * temperature ** 2


def _vocab(path: str | Path) -> dict[str, int] | None:
    """The vocabulary of the tokenizer saved in `path`; None when it holds none."""
    if not (Path(path) / "tokenizer_config.json").exists():
        return None
    return load_tokenizer(str(path), "model.teacher_name_or_path").get_vocab()


def _parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class DistillationModule(SequenceClassificationModule):
    """A student classifier (`model.*` size fields from scratch, or `model.pretrained_model_name_or_path`) trained
    on `alpha * CE(labels) + (1 - alpha) * T^2 * KL(teacher || student)` against a fine-tuned teacher
    (`model.teacher_name_or_path`: an HF classifier folder, e.g. a classify run's `hf_model/`).

    The teacher is loaded when fitting starts (also for testing and `llm-eval` when its folder still exists), in
    eval mode without gradients, and is kept outside the module's tree: it is in no optimizer group, no checkpoint
    and no export (all of which hold the student alone). The student must use the teacher's tokenizer (the
    config's default `model.tokenizer_name_or_path`). Logs the classification metrics of the student plus
    `train/ce_loss`, `train/kd_loss`, `val|test/teacher_acc`; results.json details hold both parameter counts and
    inference speeds (examples/s, forward passes timed side by side on the same batches)."""

    def __init__(self, *, teacher_name_or_path: str, alpha: UnitFraction = 0.5, temperature: Positive[float] = 2.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.__dict__["teacher"] = None  # not an nn.Module attribute: no parameters, state dict or device moves
        self._seconds: dict[str, list[float]] = {}  # stage -> [student s, teacher s, examples]

    # ----------------------------------------------------------------- the teacher
    def setup(self, stage: str) -> None:
        path = self.hparams.teacher_name_or_path
        if self.teacher is None and (stage == "fit" or Path(path).expanduser().is_dir()):
            self.__dict__["teacher"] = self._load_teacher(path)

    def _load_teacher(self, path: str) -> nn.Module:
        where = "model.teacher_name_or_path"
        if not Path(path).expanduser().is_dir():
            hint = f" (a run directory? use {path}/hf_model)" if (Path(path) / "hf_model").is_dir() else ""
            raise UserError(f"{where}: directory not found: {path}{hint}")
        try:
            with hf_progress_bars_off():  # a "Loading weights" bar between the summary lines says nothing
                teacher = AutoModelForSequenceClassification.from_pretrained(str(Path(path).expanduser()))
        except Exception as err:
            raise UserError(f"{where}: cannot load a sequence classifier from {path!r}: {first_line(err)}") from err
        self._check_compatible(teacher, path)
        return teacher.eval().requires_grad_(False)

    def _check_compatible(self, teacher: nn.Module, path: str) -> None:
        """Same labels in the same order, and the same tokens: else the soft targets mean nothing."""
        where = "model.teacher_name_or_path"
        student = self.model.config
        if teacher.config.num_labels != student.num_labels:
            raise UserError(f"{where}: the teacher has {teacher.config.num_labels} labels, the student "
                            f"{student.num_labels}: distil a teacher trained on the same labels")
        names = (dict(teacher.config.id2label), dict(student.id2label))
        if all(not str(n).startswith("LABEL_") for n in (*names[0].values(), *names[1].values())) and \
                names[0] != names[1]:
            raise UserError(f"{where}: the teacher's labels {names[0]} differ from the data's {names[1]}")
        trainer = compat.attached_trainer(self)
        datamodule = trainer.datamodule if trainer is not None else None
        tokenizer = getattr(datamodule, "tokenizer", None)
        teacher_vocab = _vocab(path)
        if tokenizer is not None and teacher_vocab is not None and tokenizer.get_vocab() != teacher_vocab:
            raise UserError(f"model.tokenizer_name_or_path: the student's tokenizer is not the teacher's ({path}): "
                            f"distillation needs the same tokens; leave model.tokenizer_name_or_path at its default")
        vocab = len(tokenizer) if tokenizer is not None else student.vocab_size
        if teacher.get_input_embeddings().num_embeddings < vocab:
            raise UserError(f"{where}: the teacher knows {teacher.get_input_embeddings().num_embeddings} token ids, "
                            f"the student's tokenizer has {vocab}: use the teacher's tokenizer")

    def teacher_logits(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        teacher = self.teacher
        device = batch["input_ids"].device
        if next(teacher.parameters()).device != device:
            teacher.to(device)
        accepted = self._teacher_inputs(teacher)
        with torch.no_grad():
            return teacher(**{k: v for k, v in batch.items() if k in accepted}).logits

    @staticmethod
    def _teacher_inputs(teacher: nn.Module) -> frozenset[str]:
        """The batch keys the teacher's forward takes, labels excepted (e.g. ModernBERT has no token_type_ids)."""
        return frozenset(inspect.signature(teacher.forward).parameters) - {"labels"}

    # ----------------------------------------------------------------- training and metrics
    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        out = self.model(**batch)
        alpha = self.hparams.alpha
        if alpha == 1:  # cross-entropy alone: the teacher is not run (a same-budget baseline without it)
            loss, kd = out.loss, None
        else:
            kd = distillation_loss(out.logits, self.teacher_logits(batch), self.hparams.temperature)
            loss = alpha * out.loss + (1 - alpha) * kd
        self.log_train_loss(loss)
        if kd is not None and compat.logs_this_step(self.trainer):
            self.log_dict({"train/ce_loss": out.loss, "train/kd_loss": kd}, on_step=True, on_epoch=False)
        return loss

    def make_metrics(self) -> MetricCollection:
        metrics = super().make_metrics()
        metrics.add_metrics({"teacher_acc": MulticlassAccuracy(self._num_labels, average="micro")})
        return metrics

    def _timed(self, fn: Any, batch: Mapping[str, torch.Tensor]) -> tuple[Any, float]:
        if batch["input_ids"].is_cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        out = fn(batch)
        if batch["input_ids"].is_cuda:
            torch.cuda.synchronize()
        return out, time.perf_counter() - start

    def update_metrics(self, metrics: MetricCollection, batch: dict[str, torch.Tensor]) -> None:
        out, student_s = self._timed(lambda b: self.model(**b), batch)
        labels = batch["labels"]
        metrics["loss"].update(out.loss.detach(), weight=labels.shape[0])
        preds = out.logits.argmax(-1)
        metrics["acc"].update(preds, labels)
        metrics["f1"].update(preds, labels)
        if self.teacher is None:
            return
        teacher_logits, teacher_s = self._timed(self.teacher_logits, batch)
        metrics["teacher_acc"].update(teacher_logits.argmax(-1), labels)
        totals = self._seconds.setdefault("test" if self.trainer.testing else "val", [0.0, 0.0, 0])
        totals[0] += student_s
        totals[1] += teacher_s
        totals[2] += labels.shape[0]

    def compute_metrics(self, metrics: MetricCollection) -> dict[str, Any]:
        stage = "test" if self.trainer.testing else "val"
        values = {name: metric.compute() for name, metric in metrics.items()
                  if name != "teacher_acc" or self.teacher is not None}
        student_s, teacher_s, examples = self._seconds.pop(stage, [0.0, 0.0, 0])
        if self.teacher is not None and examples and not self.trainer.sanity_checking:
            self.stage_details[stage] = {
                "student_acc": float(values["acc"]), "teacher_acc": float(values["teacher_acc"]),
                "student_params": _parameter_count(self.model), "teacher_params": _parameter_count(self.teacher),
                "student_examples_per_s": examples / student_s, "teacher_examples_per_s": examples / teacher_s,
                "student_speedup": teacher_s / student_s, "teacher": str(self.hparams.teacher_name_or_path)}
        return values

    def fit_summary(self, metrics: Mapping[str, Any]) -> str | None:
        d = self.stage_details.get("val")
        if not d:
            return None
        return (f"distillation: student val/acc {d['student_acc']:.4f} ({d['student_params']:,} params) vs teacher "
                f"{d['teacher_acc']:.4f} ({d['teacher_params']:,} params); student inference "
                f"{d['student_speedup']:.1f}x the teacher's speed ({d['student_examples_per_s']:.0f} vs "
                f"{d['teacher_examples_per_s']:.0f} examples/s)")
