"""The module half of the task contract: what every task shares (HF model, AdamW + warmup schedule, training
step, per-stage metrics, best-so-far tracking, export) and the few things each task declares."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.strategies import FSDPStrategy
from torch import nn
from torchmetrics import Metric
from transformers import get_scheduler

from lightning_llm import compat
from lightning_llm.config.schema import NonNegative, Positive, Probability, UnitFraction
from lightning_llm.modules import adapters
from lightning_llm.modules.hf_models import build_config, build_model, set_token_ids
from lightning_llm.utils.io import write_text_atomic

# Generic size-field names mapped to what an architecture calls them (HF's attribute_map covers the rest).
_SIZE_ALIASES = {"gpt2": {"intermediate_size": "n_inner"}}
_NO_DECAY = ("bias", "LayerNorm.weight", "layer_norm.weight", "ln_1.weight", "ln_2.weight", "ln_f.weight",
             "norm.weight")
_WRAPPER_PREFIXES = ("_fsdp_wrapped_module.", "_checkpoint_wrapped_module.", "_orig_mod.")


def _unwrapped(name: str) -> str:
    """A parameter's name without the segments FSDP, activation checkpointing and torch.compile insert."""
    for prefix in _WRAPPER_PREFIXES:
        name = name.replace(prefix, "")
    return name


_BEST_KEY = "lightning_llm_best"  # checkpoint entry: best-so-far values, so a resumed run keeps them
# Checkpoint entry: the `val/*` metrics of the validation the checkpoint was saved after (results.json `val` is
# the best checkpoint's).
VAL_METRICS_KEY = "lightning_llm_val_metrics"


class HFTaskModule(pl.LightningModule):
    """Wraps one `transformers` Auto* model for one task.

    A task module declares (class attributes): `task` (the objective a data module must serve), `auto_class`,
    `tokenizer_kind` (what to train for a from-scratch model without a tokenizer), `monitor` and
    `optimized_metric` (name, "min"|"max": what checkpoints/early stopping watch and what sweeps optimize, unless
    the config says otherwise), `best_metric` (a validation metric whose best-so-far value is logged as
    `<name>_best` and kept in checkpoints), `progress_bar_metrics` (the val metrics the bar shows; None: all),
    `data_kwargs` (constructor arguments only a data module provides, see `CachedTextDataModule.model_kwargs`) and
    `eval_data_settings` (those of them `llm-eval` gives back to the data module).
    It implements `make_metrics` and `update_metrics`, and `compute_metrics` when a metric's `compute()` is not
    already the dict of values to log.

    Hyper-parameters are primitives only, so checkpoints load with `weights_only=True`; the model's config is saved
    in them, so restoring never needs the hub.
    """

    auto_class: ClassVar[Any]
    task: ClassVar[str]
    tokenizer_kind: ClassVar[str]
    monitor: ClassVar[tuple[str, str]] = ("val/loss", "min")
    optimized_metric: ClassVar[tuple[str, str]] = ("val/loss", "min")
    best_metric: ClassVar[tuple[str, str] | None] = None
    progress_bar_metrics: ClassVar[frozenset[str] | None] = None  # val metrics shown in the bar (None: all)
    # Hyper-parameters holding a baseline from the data (see `data_kwargs`) -> the val metric it is logged as.
    baseline_metrics: ClassVar[dict[str, str]] = {}
    # Filled by the builders from the tokenizer (all tasks) or by the data module (per task): never configured.
    derived_kwargs: ClassVar[frozenset[str]] = frozenset({"vocab_size", "special_token_ids", "hf_config",
                                                          "new_token_ids"})
    data_kwargs: ClassVar[frozenset[str]] = frozenset()
    # Attributes the builders set from the data module's `model_attachments()` (never hyper-parameters).
    data_attachments: ClassVar[frozenset[str]] = frozenset()
    # Settings the config may leave null for the data to decide (e.g. a problem type read from the labels): the
    # builders write the decided value back into the run's `model` config, so `metric_defaults` then follow it.
    data_settled: ClassVar[frozenset[str]] = frozenset()
    # Hyper-parameters `llm-eval` hands to the data module as settings of the same name, so that other data is
    # encoded the way the model was trained (label names in the model's id order), never re-derived from it.
    eval_data_settings: ClassVar[frozenset[str]] = frozenset()
    # What the engine and the commands ask of a task (lightning_llm/registry.py), instead of tables naming tasks:
    # the suffixes of HF architecture names with this task's head (an HF directory's task), or `encoder_decoder`
    # for a task told by `config.is_encoder_decoder` instead; whether a config.json naming no architecture is read
    # as this task; peft's task type and whether LoRA adapts the input embeddings too.
    architecture_suffixes: ClassVar[tuple[str, ...]] = ()
    encoder_decoder: ClassVar[bool] = False
    bare_config_default: ClassVar[bool] = False
    peft_task_type: ClassVar[str | None] = None
    lora_embeddings: ClassVar[bool] = False
    # The inference commands this task's models serve: llm-generate (`generates`), llm-explain ("label": toward a
    # class, "continuation": toward a target continuation), llm-compress (`compressible`), llm-predict (`predict`).
    generates: ClassVar[bool] = False
    explain_as: ClassVar[str | None] = None
    compressible: ClassVar[bool] = False
    predictions_file: ClassVar[str] = "predictions.jsonl"
    # Settings of the training run (its saved `data`/`model` config, the checkpoint's own hyper-parameters over
    # those) that `predict` receives, so that predictions are encoded and post-processed as evaluation was.
    prediction_settings: ClassVar[tuple[str, ...]] = ("max_length",)

    # `llm-predict` of this task's models: a staticmethod `predict(model, tokenizer, cfg, settings, device)` that
    # reads `cfg.input_file`, encodes it as the task's data module encodes evaluation data and returns records (a
    # list, written as JSONL) or a mapping (written as JSON); None: the task has no llm-predict.
    predict: ClassVar[Callable[..., Any] | None] = None

    def __init__(self, *, pretrained_model_name_or_path: str | None = None, tokenizer_name_or_path: str | None = None,
                 tokenizer_vocab_size: Positive[int] = 8000, model_type: str = "bert",
                 hidden_size: Positive[int] | None = None, num_hidden_layers: Positive[int] | None = None,
                 num_attention_heads: Positive[int] | None = None, intermediate_size: Positive[int] | None = None,
                 max_position_embeddings: Positive[int] | None = None, config_overrides: dict[str, Any] | None = None,
                 dropout: Probability | None = None, learning_rate: Positive[float] = 5e-5,
                 weight_decay: NonNegative[float] = 0.01, warmup_ratio: UnitFraction = 0.06,
                 adam_epsilon: Positive[float] = 1e-8, adam_betas: Sequence[float] = (0.9, 0.999),
                 lr_scheduler: str = "linear", gradient_checkpointing: bool = False, compile: bool = False,
                 attn_implementation: str | None = "sdpa", trust_remote_code: bool = False,
                 peft: dict[str, Any] | None = None, vocab_size: int | None = None,
                 special_token_ids: dict[str, int] | None = None, hf_config: dict[str, Any] | None = None,
                 new_token_ids: list[int] | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        # The tokenizer the data was encoded with, handed over by whoever builds the module (runtime/builders.py,
        # llm-eval); not a hyper-parameter. Tasks that decode (seq2seq metrics, reply scoring, samples) read it here.
        self.tokenizer: Any = None
        size = {"hidden_size": hidden_size, "num_hidden_layers": num_hidden_layers,
                "num_attention_heads": num_attention_heads, "intermediate_size": intermediate_size,
                "max_position_embeddings": max_position_embeddings, "vocab_size": vocab_size}
        aliases = _SIZE_ALIASES.get(model_type, {})
        size = {aliases.get(k, k): v for k, v in size.items()}
        ids = dict(special_token_ids or {})
        # A pad id that is also the EOS/BOS id (a tokenizer without a pad token) is set once the model is built, as
        # the transformers Trainer and TRL do: in the constructor's config it would become the embedding's
        # `padding_idx`, whose row (the end-of-turn token's) then never trains.
        shared_pad = ids.get("pad_token_id") is not None and ids["pad_token_id"] in (ids.get("eos_token_id"),
                                                                                      ids.get("bos_token_id"))
        late = {"pad_token_id": ids.pop("pad_token_id")} if shared_pad else {}
        extra = {**ids, **self.task_config(), **(config_overrides or {})}
        config = build_config(pretrained_model_name_or_path=pretrained_model_name_or_path, hf_config=hf_config,
                              model_type=model_type, size=size, extra=extra, trust_remote_code=trust_remote_code,
                              dropout=dropout)
        self.model = build_model(self.auto_class, config, pretrained_model_name_or_path=pretrained_model_name_or_path,
                                 from_saved_config=hf_config is not None, trust_remote_code=trust_remote_code,
                                 attn_implementation=attn_implementation)
        set_token_ids(self.model, late)
        pretrained_rows = self.model.get_input_embeddings().num_embeddings
        if vocab_size and pretrained_rows < vocab_size:
            self.model.resize_token_embeddings(vocab_size, pad_to_multiple_of=8)
            if peft and pretrained_model_name_or_path and new_token_ids is None:
                # Tokens the tokenizer gained (a chat template's turn markers): their rows start random, and LoRA
                # would keep them frozen, so they train (peft's trainable tokens; a tied output layer too).
                new_token_ids = list(range(pretrained_rows, vocab_size))
        # Saved so that `load_from_checkpoint` rebuilds this exact architecture (and adapter) without downloading
        # anything.
        self.hparams["hf_config"] = self.model.config.to_dict()
        self.hparams["new_token_ids"] = new_token_ids
        # from_pretrained returns the model in eval mode and Lightning keeps module modes: without this,
        # dropout would be off whenever a pretrained model is fine-tuned.
        self.model.train()
        if gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        if peft:  # `peft=lora`: the HF model inside LoRA adapters (modules/adapters.py); {} or None: full training
            if gradient_checkpointing:  # frozen embeddings: checkpointed blocks need inputs that require grad
                self.model.enable_input_require_grads()
            self.model = adapters.wrap(self.model, peft, self.peft_task_type, self.lora_embeddings, new_token_ids)
        # Which parameters decay is decided on the shapes seen here: FSDP (use_orig_params) later exposes sharded
        # parameters as 1-D views, which `ndim < 2` would put in the no-decay group.
        self._param_ndim = {name: p.ndim for name, p in self.named_parameters()}
        self.stage_metrics = nn.ModuleDict({"val": self.make_metrics(), "test": self.make_metrics()})
        self.best: dict[str, float] = {}
        self._token_reference: torch.Tensor | None = None  # see `token_weighted`
        self._token_total: torch.Tensor | None = None
        # Non-scalar results per stage (e.g. a scorer's signature, exact float64 values): results.json "details".
        self.stage_details: dict[str, dict[str, Any]] = {}

    # ----------------------------------------------------------------- what a task declares or implements
    @classmethod
    def reconcile(cls, configured: Mapping[str, Any], from_data: Mapping[str, Any]) -> dict[str, Any]:
        """Constructor arguments from the config and the data's `model_kwargs()`: the data fills what the config
        leaves null. Tasks override it to check that the two agree (e.g. label count); `llm-eval` calls it with
        a checkpoint's hyper-parameters to check that new data fits a trained model."""
        kwargs = dict(configured)
        for key, value in from_data.items():
            if kwargs.get(key) is None:
                kwargs[key] = value
        return kwargs

    @classmethod
    def metric_defaults(cls, settings: Mapping[str, Any]) -> dict[str, tuple[str, str] | None]:
        """`monitor`, `optimized_metric` and `best_metric` for a model configured with `settings` (its `model`
        config): the class's own unless a setting changes what the task measures. `${task_default:...}` asks it."""
        return {"monitor": cls.monitor, "optimized_metric": cls.optimized_metric, "best_metric": cls.best_metric}

    def task_config(self) -> dict[str, Any]:
        """Task-specific HF config fields (e.g. num_labels)."""
        return {}

    def make_metrics(self) -> nn.Module:
        """A fresh set of metric objects for one evaluation stage (torchmetrics: synced across DDP ranks)."""
        raise NotImplementedError

    def update_metrics(self, metrics: nn.Module, batch: dict[str, torch.Tensor]) -> None:
        """Run the model on an evaluation batch and update `metrics` (those of the current stage)."""
        raise NotImplementedError

    def compute_metrics(self, metrics: nn.Module) -> dict[str, Any]:
        """Metric name (without the stage prefix) -> value, over the whole stage."""
        return dict(metrics.compute())

    def fit_summary(self, metrics: Mapping[str, Any]) -> str | None:
        """One line printed when fitting ends (e.g. the metric against its baseline); None prints nothing."""
        return None

    def write_predictions(self, stage: str, records: Iterable[Mapping[str, Any]],
                          details: Mapping[str, Any] | None = None) -> Path | None:
        """Write `predictions_<stage>.jsonl` (one JSON object per example, all ranks' examples: gather before
        calling) in the run directory and keep `details` for results.json. A task calls it from
        `compute_metrics`; nothing is written in the sanity check or on ranks other than 0."""
        if self.trainer.sanity_checking:
            return None
        if details is not None:
            self.stage_details[stage] = dict(details)
        if not self.trainer.is_global_zero:
            return None
        path = Path(self.trainer.default_root_dir) / f"predictions_{stage}.jsonl"
        write_text_atomic(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        return path

    # ----------------------------------------------------------------- shared steps
    def configure_model(self) -> None:
        if self.hparams.compile and not getattr(self, "_compiled", False):
            self.model.compile()  # in place: parameter names (and so checkpoints) stay the same
            self._compiled = True

    def forward(self, **batch: torch.Tensor) -> Any:
        return self.model(**batch)

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = self.model(**batch).loss  # HF computes the task loss from `labels` (shifted for causal LMs)
        self.log_train_loss(loss)
        return self.token_weighted(loss, batch)

    # ----------------------------------------------------------------- token-weighted accumulation
    def count_targets(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """The number of tokens a token-level task's loss averages over in `batch` (None: the task's loss is a
        mean over examples, left as it is)."""
        return None

    def token_weighted(self, loss: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The micro-batch's mean token loss, weighted so that an optimizer step's gradient is that of the sum
        over all target tokens of its micro-batches (`trainer.accumulate_grad_batches`) and DDP ranks divided by
        their total count, as transformers' Trainer does with `num_items_in_batch`: k micro-batches of B/k rows
        then give the gradient of one batch of B, whatever their padding. Lightning divides the returned loss by
        k and DDP averages gradients over ranks; the loss is scaled here by count / reference (reference: the
        first micro-batch's count, averaged over ranks, so every rank uses the same) and the gradients by
        k * world * reference / total count in `on_before_optimizer_step`, before clipping. FSDP and DeepSpeed
        shard or own the gradients: there each micro-batch keeps its mean."""
        count = self.count_targets(batch)
        trainer = self.trainer
        if count is None or (trainer.accumulate_grad_batches == 1 and trainer.world_size == 1) \
                or isinstance(trainer.strategy, FSDPStrategy) or "deepspeed" in type(trainer.strategy).__name__.lower():
            return loss
        count = count.detach().to(torch.float32)
        if self._token_reference is None:
            reference = count.clamp(min=1.0)
            if trainer.world_size > 1:
                reference = trainer.strategy.reduce(reference, reduce_op="mean")
            self._token_reference, self._token_total = reference, torch.zeros_like(count)
        self._token_total = self._token_total + count
        return loss * count / self._token_reference

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        if self._token_reference is None:
            return
        total = self._token_total
        if self.trainer.world_size > 1:
            total = self.trainer.strategy.reduce(total, reduce_op="sum")
        factor = (self.trainer.accumulate_grad_batches * self.trainer.world_size * self._token_reference
                  / total.clamp(min=1.0))
        for group in optimizer.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    param.grad.mul_(factor.to(param.grad.device))
        self._token_reference = self._token_total = None

    def log_train_loss(self, loss: torch.Tensor) -> None:
        """`train/loss` on the steps whose metrics Lightning writes to the loggers (every
        `trainer.log_every_n_steps`) only: values logged in between are never written, and each `self.log` call
        costs ~1 ms of Python in Lightning (it copies the metric's metadata per call; B1 profile). Not `prog_bar`:
        the bar would read the tensor back, a CUDA sync, every step (see `LogIntervalProgressBar`)."""
        if compat.logs_this_step(self.trainer) or self.trainer.fast_dev_run:
            self.log("train/loss", loss, on_step=True, on_epoch=False)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.update_metrics(self.stage_metrics["val"], batch)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.update_metrics(self.stage_metrics["test"], batch)

    def _log_stage(self, stage: str) -> dict[str, Any]:
        metrics = self.stage_metrics[stage]
        values = {f"{stage}/{name}": value for name, value in self.compute_metrics(metrics).items()}
        for metric in metrics.modules():
            if isinstance(metric, Metric):
                metric.reset()
        shown = self.progress_bar_metrics
        for name, value in values.items():
            self.log(name, value, prog_bar=stage == "val" and (shown is None or name.split("/", 1)[1] in shown))
        return values

    def on_validation_epoch_end(self) -> None:
        values = self._log_stage("val")
        for hparam, name in self.baseline_metrics.items():
            if self.hparams.get(hparam) is not None:
                self.log(name, float(self.hparams[hparam]))
        if self.best_metric is None or self.trainer.sanity_checking:
            return
        name, mode = self.best_metric
        value, best = float(values[name]), self.best.get(name)
        if best is None or (value > best if mode == "max" else value < best):
            self.best[name] = best = value
        self.log(f"{name}_best", best)

    def on_test_epoch_end(self) -> None:
        self._log_stage("test")

    def setup(self, stage: str) -> None:
        """Give every metric state memory of this process's own. `hardware=ddp_sim` (ddp_spawn) pickles the module
        to its workers with every CPU tensor in shared memory; Lightning copies parameters and buffers out again,
        not torchmetrics states, so the ranks' in-place metric updates would all land in one tensor: counts summed
        twice after the sync, and float sums added in whatever order the processes ran (run-to-run rounding)."""
        super().setup(stage)
        for metric in self.modules():
            if isinstance(metric, Metric):
                metric.reset()

    def on_fit_start(self) -> None:
        if self.has_adapter and self.trainer.is_global_zero:  # the rate too: peft=lora brings its own default
            print(f"{adapters.describe(self.model)}, learning rate {self.hparams.learning_rate:g}")
            warning = adapters.low_rate_warning(self.hparams.learning_rate)
            if warning:
                print(warning, file=sys.stderr)

    def on_fit_end(self) -> None:
        line = self.fit_summary(self.trainer.callback_metrics)
        if line and self.trainer.is_global_zero:
            print(line)

    # ----------------------------------------------------------------- optimizer and schedule
    def configure_optimizers(self) -> dict[str, Any]:
        hp = self.hparams
        decay, no_decay = [], []
        for name, param in self.named_parameters():
            if param.requires_grad:
                ndim = self._param_ndim.get(_unwrapped(name), param.ndim)
                (no_decay if name.endswith(_NO_DECAY) or ndim < 2 else decay).append(param)
        groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        # Fused AdamW on CPU too: much faster optimizer steps than the default per-tensor loop. With a gradient scaler (16-mixed) Lightning
        # refuses clipping with a fused optimizer (it unscales inside its step): the default kernel is used there;
        # bf16-mixed has no scaler and clips in `configure_gradient_clipping`.
        scaled = getattr(self.trainer.precision_plugin, "scaler", None) is not None
        fused = self.device.type in ("cuda", "cpu") and not (scaled and self.trainer.gradient_clip_val)
        optimizer = torch.optim.AdamW(groups, lr=hp.learning_rate, eps=hp.adam_epsilon, betas=tuple(hp.adam_betas),
                                      fused=fused)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        scheduler = get_scheduler(hp.lr_scheduler, optimizer, num_warmup_steps=int(hp.warmup_ratio * total),
                                  num_training_steps=total)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val: float | None = None,
                                    gradient_clip_algorithm: str | None = None) -> None:
        """Norm clipping where Lightning's precision plugins refuse it: FSDP (the norm must be taken over all
        shards: the root module's `clip_grad_norm_`) and a fused optimizer without a gradient scaler (bf16-mixed:
        the gradients are not scaled, so plain norm clipping is right). Anything else: Lightning's own path, which
        under DeepSpeed is a no-op (DeepSpeed clips inside its step, from `trainer.gradient_clip_val`); its ZeRO
        optimizer, the one passed here, is no `torch.optim.Optimizer` and has no `defaults`."""
        if gradient_clip_val and gradient_clip_algorithm in (None, "norm"):
            if isinstance(self.trainer.strategy, FSDPStrategy):
                self.trainer.strategy.model.clip_grad_norm_(gradient_clip_val)
                return
            fused = isinstance(optimizer, torch.optim.Optimizer) and optimizer.defaults.get("fused")
            if fused and getattr(self.trainer.precision_plugin, "scaler", None) is None:
                params = [p for group in optimizer.param_groups for p in group["params"]]
                torch.nn.utils.clip_grad_norm_(params, gradient_clip_val)
                return
        self.clip_gradients(optimizer, gradient_clip_val=gradient_clip_val,
                            gradient_clip_algorithm=gradient_clip_algorithm)

    def on_train_start(self) -> None:
        """A resumed run gets the optimizer's and scheduler's learning rate back from the checkpoint, which would
        silently ignore a changed `model.learning_rate` (the advice after a divergence is to resume with a lower
        one). Rescale the restored schedule to the configured peak, keeping its position."""
        target = float(self.hparams.learning_rate)
        for config in self.trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            for index, group in enumerate(scheduler.optimizer.param_groups):
                restored = float(scheduler.base_lrs[index])
                if restored > 0 and restored != target:
                    group["lr"] *= target / restored
                    group["initial_lr"] = scheduler.base_lrs[index] = target
                    if index == 0 and self.trainer.is_global_zero:
                        print(f"model.learning_rate={target:g} (the checkpoint's schedule peaked at {restored:g}): "
                              f"resumed schedule rescaled to it")

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """`trainer.max_steps` ends training wherever it falls, and Lightning validates only on its schedule (epoch
        end): a budget inside the first epoch left no validation at all (early stopping and the best checkpoint
        crashed on the missing metric), a later one left its last steps unvalidated. Asking the trainer to stop on
        the last step makes Lightning validate that batch (its early-stopping path), once, on every rank."""
        if 0 < self.trainer.max_steps <= self.trainer.global_step:
            self.trainer.should_stop = True

    # ----------------------------------------------------------------- checkpoints and export
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        # Lets `llm-eval`/`llm-generate` pick the module class from the checkpoint alone.
        checkpoint["lightning_llm_module"] = f"{type(self).__module__}.{type(self).__qualname__}"
        checkpoint[_BEST_KEY] = dict(self.best)
        checkpoint[VAL_METRICS_KEY] = {name: float(value) for name, value in self.trainer.callback_metrics.items()
                                       if name.startswith("val/")}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.best = {str(k): float(v) for k, v in checkpoint.get(_BEST_KEY, {}).items()}

    def export(self, directory: str | Path, tokenizer: Any) -> None:
        """`save_pretrained` model (safetensors) and tokenizer into `directory`; with LoRA the merged model."""
        model = adapters.merged(self.model) if self.has_adapter else self.model
        model.save_pretrained(str(directory), safe_serialization=True)
        if tokenizer is not None:
            tokenizer.save_pretrained(str(directory))

    @property
    def has_adapter(self) -> bool:
        return adapters.is_wrapped(self.model)

    def export_adapter(self, directory: str | Path) -> None:
        """The LoRA adapter alone (+ the trained head) into `directory` (`PeftModel.from_pretrained` loads it)."""
        adapters.save_adapter(self.model, directory)
