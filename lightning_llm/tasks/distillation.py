"""Logit distillation (alpha*CE + (1-alpha)*T^2*KL) from a teacher into a student, a wrapper of the sequence
classification and causal LM tasks.

Knowledge distillation (Hinton et al., 2015): a smaller student learns from the labels and from a trained
teacher's softened logits. A sequence classifier (`model=distill`) or a causal LM (`model=distill_gpt`): both are
their task's module with the teacher mixed in (`_Distillation`), so metrics, export and LoRA stay the task's.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric
from torchmetrics.classification import MulticlassAccuracy

from lightning_llm import compat, registry
from lightning_llm.config.schema import Positive, UnitFraction
from lightning_llm.data.tokenizers import load_tokenizer
from lightning_llm.errors import UserError, first_line
from lightning_llm.runtime.console import hf_progress_bars_off
from lightning_llm.tasks.causal_lm import IGNORE_INDEX, CausalLMModule, NextTokenMetrics
from lightning_llm.tasks.classification import SequenceClassificationModule


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """`T^2 * KL(p_teacher || p_student)` with both distributions softened by `T`, averaged over the rows (examples,
    or predicted tokens); the T^2 keeps its gradients on the scale of the cross-entropy's as T changes. In fp32:
    bf16 log-softmax differences of near-equal logits are mostly rounding."""
    log_student = F.log_softmax(student_logits.float() / temperature, dim=-1)
    log_teacher = F.log_softmax(teacher_logits.float() / temperature, dim=-1)
    return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * temperature ** 2


def next_token_distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor,
                                 temperature: float) -> torch.Tensor:
    """`distillation_loss` over the vocabulary at the positions that predict a token: `logits[:, t]` predicts
    `labels[:, t + 1]`, positions whose target is -100 (padding) are left out, the mean is per predicted token.
    Both models' logits are cut to the shorter vocabulary (one may be padded to a multiple of 8; the ids past the
    tokenizer's never occur)."""
    vocab = min(student_logits.shape[-1], teacher_logits.shape[-1])
    mask = labels[:, 1:] != IGNORE_INDEX
    if not mask.any():
        return student_logits.sum() * 0.0
    return distillation_loss(student_logits[:, :-1, :vocab][mask], teacher_logits[:, :-1, :vocab][mask], temperature)


def _vocab(path: str | Path) -> dict[str, int] | None:
    """The vocabulary of the tokenizer saved in `path`; None when it holds none."""
    if not (Path(path) / "tokenizer_config.json").exists():
        return None
    return load_tokenizer(str(path), "model.teacher_name_or_path").get_vocab()


def _parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


class _Distillation:
    """The teacher half of a distillation module, placed before the task module in its bases. Training loss:
    `alpha * <the task's loss> + (1 - alpha) * kd_loss`, where the task defines `kd_loss`, `teacher_metric`,
    `update_teacher_metric`, `teacher_values` and `headline` (the student metric shown next to the teacher's).

    The teacher (`model.teacher_name_or_path`: an HF folder of the task's Auto class, e.g. a run's `hf_model/`) is
    loaded when fitting starts (also for testing and `llm-eval` when its folder still exists), in eval mode
    without gradients, and is kept outside the module's tree: it is in no optimizer group, no checkpoint and no
    export (all of which hold the student alone). The student must use the teacher's tokenizer (the config's
    default `model.tokenizer_name_or_path`). Logs `train/ce_loss`, `train/kd_loss` and the teacher's metrics next to
    the student's; results.json details hold both headline metrics, parameter counts and inference speeds
    (examples/s, forward passes timed side by side on the same batches)."""

    headline: ClassVar[str]

    def __init__(self, *, teacher_name_or_path: str, alpha: UnitFraction = 0.5, temperature: Positive[float] = 2.0,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.__dict__["teacher"] = None  # not an nn.Module attribute: no parameters, state dict or device moves
        self._seconds: dict[str, list[float]] = {}  # stage -> [student s, teacher s, examples]

    # ----------------------------------------------------------------- what the task defines
    def kd_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def teacher_metric(self) -> Metric:
        raise NotImplementedError

    def update_teacher_metric(self, metric: Metric, logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def teacher_values(self, metric: Metric) -> dict[str, Any]:
        raise NotImplementedError

    def check_teacher_outputs(self, teacher: nn.Module, path: str) -> None:
        """Fail when the teacher's outputs cannot be compared with the student's (a classifier's labels; the tokens
        are checked for every task)."""

    # ----------------------------------------------------------------- the teacher
    def setup(self, stage: str) -> None:
        super().setup(stage)
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
                teacher = self.auto_class.from_pretrained(str(Path(path).expanduser()))
        except Exception as err:
            raise UserError(f"{where}: cannot load a {self.auto_class.__name__} teacher from {path!r}: "
                            f"{first_line(err)}") from err
        self.check_teacher_outputs(teacher, path)
        self._check_tokens(teacher, path)
        return teacher.eval().requires_grad_(False)

    def _check_tokens(self, teacher: nn.Module, path: str) -> None:
        """The same tokens: else the soft targets mean nothing."""
        tokenizer = self.tokenizer
        teacher_vocab = _vocab(path)
        if tokenizer is not None and teacher_vocab is not None and tokenizer.get_vocab() != teacher_vocab:
            raise UserError(f"model.tokenizer_name_or_path: the student's tokenizer is not the teacher's ({path}): "
                            f"distillation needs the same tokens; leave model.tokenizer_name_or_path at its default")
        vocab = len(tokenizer) if tokenizer is not None else self.model.config.vocab_size
        if teacher.get_input_embeddings().num_embeddings < vocab:
            raise UserError(f"model.teacher_name_or_path: the teacher knows "
                            f"{teacher.get_input_embeddings().num_embeddings} token ids, the student's tokenizer has "
                            f"{vocab}: use the teacher's tokenizer")

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
        if alpha == 1:  # the task's loss alone: the teacher is not run (a same-budget baseline without it)
            loss, kd = out.loss, None
        else:
            kd = self.kd_loss(out.logits, self.teacher_logits(batch), batch)
            loss = alpha * out.loss + (1 - alpha) * kd
        self.log_train_loss(loss)
        if kd is not None and compat.logs_this_step(self.trainer):
            self.log_dict({"train/ce_loss": out.loss, "train/kd_loss": kd}, on_step=True, on_epoch=False)
        return loss

    def make_metrics(self) -> nn.ModuleDict:
        return nn.ModuleDict({"student": super().make_metrics(), "teacher": self.teacher_metric()})

    @staticmethod
    def _sync(batch: Mapping[str, torch.Tensor]) -> None:
        if batch["input_ids"].is_cuda:
            torch.cuda.synchronize()

    def update_metrics(self, metrics: nn.ModuleDict, batch: dict[str, torch.Tensor]) -> None:
        """The student's metrics as the task computes them, then the teacher's. Only the forward passes are timed
        (the student's through hooks on the model the task runs), not the metric updates, which would dominate a
        small student's time."""
        seconds = [0.0, 0.0]  # student s, start of the running forward

        def started(*_: Any) -> None:
            self._sync(batch)
            seconds[1] = time.perf_counter()

        def finished(*_: Any) -> None:
            self._sync(batch)
            seconds[0] += time.perf_counter() - seconds[1]

        hooks = [self.model.register_forward_pre_hook(started), self.model.register_forward_hook(finished)]
        try:
            super().update_metrics(metrics["student"], batch)
        finally:
            for hook in hooks:
                hook.remove()
        if self.teacher is None:
            return
        self._sync(batch)
        start = time.perf_counter()
        logits = self.teacher_logits(batch)
        self._sync(batch)
        teacher_s = time.perf_counter() - start
        self.update_teacher_metric(metrics["teacher"], logits, batch)
        totals = self._seconds.setdefault("test" if self.trainer.testing else "val", [0.0, 0.0, 0])
        totals[0] += seconds[0]
        totals[1] += teacher_s
        totals[2] += batch["input_ids"].shape[0]

    def compute_metrics(self, metrics: nn.ModuleDict) -> dict[str, Any]:
        stage = "test" if self.trainer.testing else "val"
        values = super().compute_metrics(metrics["student"])
        if self.teacher is not None:
            values.update(self.teacher_values(metrics["teacher"]))
        student_s, teacher_s, examples = self._seconds.pop(stage, [0.0, 0.0, 0])
        if self.teacher is not None and examples and not self.trainer.sanity_checking:
            name = self.headline
            self.stage_details[stage] = {
                f"student_{name}": float(values[name]), f"teacher_{name}": float(values[f"teacher_{name}"]),
                "student_params": _parameter_count(self.model), "teacher_params": _parameter_count(self.teacher),
                "student_examples_per_s": examples / student_s, "teacher_examples_per_s": examples / teacher_s,
                "student_speedup": teacher_s / student_s, "teacher": str(self.hparams.teacher_name_or_path)}
        return values

    def fit_summary(self, metrics: Mapping[str, Any]) -> str | None:
        """The task's own line (e.g. a causal LM's unigram baseline), then student vs teacher."""
        task_line = super().fit_summary(metrics)
        d = self.stage_details.get("val")
        if not d:
            return task_line
        name = self.headline
        line = (f"distillation: student val/{name} {d[f'student_{name}']:.4f} ({d['student_params']:,} params) vs "
                f"teacher {d[f'teacher_{name}']:.4f} ({d['teacher_params']:,} params); student inference "
                f"{d['student_speedup']:.1f}x the teacher's speed ({d['student_examples_per_s']:.0f} vs "
                f"{d['teacher_examples_per_s']:.0f} examples/s)")
        return f"{task_line}\n{line}" if task_line else line


class DistillationModule(_Distillation, SequenceClassificationModule):
    """A student classifier (`model.*` size fields from scratch, or `model.pretrained_model_name_or_path`) trained
    on `alpha * CE(labels) + (1 - alpha) * T^2 * KL(teacher || student)` against a fine-tuned teacher classifier
    (`model=distill`). Logs the classification metrics of the student plus `val|test/teacher_acc`."""

    headline = "acc"

    @classmethod
    def reconcile(cls, configured: Mapping[str, Any], from_data: Mapping[str, Any]) -> dict[str, Any]:
        """Single-label only: the KL term is over one softmax."""
        kwargs = super().reconcile(configured, from_data)
        if kwargs.get("problem_type") not in (None, "single_label_classification"):
            raise UserError(f"model=distill distils single-label classifiers; these labels are "
                            f"{kwargs['problem_type']}")
        return kwargs

    def kd_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return distillation_loss(student_logits, teacher_logits, self.hparams.temperature)

    def teacher_metric(self) -> Metric:
        return MulticlassAccuracy(self._num_labels, average="micro")

    def update_teacher_metric(self, metric: Metric, logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> None:
        metric.update(logits.argmax(-1), batch["labels"])

    def teacher_values(self, metric: Metric) -> dict[str, Any]:
        return {"teacher_acc": metric.compute()}

    def check_teacher_outputs(self, teacher: nn.Module, path: str) -> None:
        """Same labels in the same order."""
        where = "model.teacher_name_or_path"
        student = self.model.config
        if teacher.config.num_labels != student.num_labels:
            raise UserError(f"{where}: the teacher has {teacher.config.num_labels} labels, the student "
                            f"{student.num_labels}: distil a teacher trained on the same labels")
        names = (dict(teacher.config.id2label), dict(student.id2label))
        if all(not str(n).startswith("LABEL_") for n in (*names[0].values(), *names[1].values())) and \
                names[0] != names[1]:
            raise UserError(f"{where}: the teacher's labels {names[0]} differ from the data's {names[1]}")


class CausalLMDistillationModule(_Distillation, CausalLMModule):
    """A student causal LM (size fields from scratch, or a pretrained one) trained on `alpha * CE(next token) +
    (1 - alpha) * T^2 * KL(teacher || student)` over the vocabulary, at every non-padded predicted position, against
    a teacher causal LM with the same tokenizer (`model=distill_gpt`). Logs the student's `val|test/loss, ppl,
    token_acc` plus `val|test/teacher_loss, teacher_ppl, teacher_token_acc`."""

    headline = "ppl"

    def __init__(self, *, temperature: Positive[float] = 1.0, **kwargs: Any) -> None:
        """T = 1: on the demo, T = 2 left the distilled student worse than one trained without the teacher (README)."""
        super().__init__(temperature=temperature, **kwargs)

    def kd_loss(self, student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return next_token_distillation_loss(student_logits, teacher_logits, batch["labels"],
                                            self.hparams.temperature)

    def teacher_metric(self) -> Metric:
        return NextTokenMetrics()

    def update_teacher_metric(self, metric: Metric, logits: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> None:
        metric.update(logits, batch["labels"])

    def teacher_values(self, metric: Metric) -> dict[str, Any]:
        return {f"teacher_{name}": value for name, value in metric.compute().items()}


registry.register_legacy({
    "lightning_llm.modules.distillation.DistillationModule": DistillationModule,
    "lightning_llm.modules.distillation.CausalLMDistillationModule": CausalLMDistillationModule})
