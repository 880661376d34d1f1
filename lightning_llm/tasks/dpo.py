"""Preference tuning (DPO): a causal LM trained to prefer the chosen reply of a pair over the rejected one,
against a frozen reference (its own starting weights).

`data=preference` reads rows of `prompt`, `chosen`, `rejected`: plain strings, or conversational (a prompt list of
`{role, content}` messages and chosen/rejected assistant messages, rendered with the chat template as the chat SFT
data is; a string reply to a conversational prompt is read as one assistant message; rows without a prompt whose
chosen and rejected conversations share their first messages get those as the prompt, TRL's implicit prompt).
Encoding and truncation are TRL's DPOTrainer's (1.16): the completion is what follows the longest common prefix of
the prompt rendered with the generation prompt and of prompt+chosen / prompt+rejected; plain-text replies get EOS;
each of prompt+chosen and prompt+rejected is cut to `max_length` (`truncation_mode`: keep_start cuts the end,
keep_end the start); `max_prompt_length` first cuts the prompt's start (older TRL's setting). Rows TRL would drop
silently or train on nothing (chosen equal to rejected, an empty side, a prompt with no room left under
`max_length`) stop the run before training, in one line naming the row.

`model=dpo` (`DPOModule`) is the causal LM task with DPO's loss: chosen and rejected run in one forward pass of
2B rows, log-probabilities are summed over the completion tokens only, the reference is a frozen copy of the
starting weights (dropout off), or with `peft=lora` the same network with its adapters disabled (no second copy).
`precompute_ref_log_probs` computes the reference's log-probabilities once when fitting starts, caches them beside
the tokenized data (keyed by the reference's weights) and frees the reference copy. docs/dpo.md has the commands.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Annotated, Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
from datasets import Dataset, DatasetDict
from filelock import FileLock
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics import Metric

from lightning_llm import compat, registry
from lightning_llm.config.schema import NonNegative, Positive, Range, UnitFraction
from lightning_llm.data import chat_templates as ct
from lightning_llm.data.chat_rows import ChatRowsDataModule
from lightning_llm.data.sources import stable_hash
from lightning_llm.errors import UserError
from lightning_llm.modules.generation import score_replies
from lightning_llm.tasks.causal_lm import CausalLMModule
from lightning_llm.tasks.chat import _check_messages

LOSS_TYPES = ("sigmoid", "ipo", "robust")
_REPLY_SAMPLES = 256  # validation prompts + chosen replies kept for generation checks (`model.eval_generation_samples`)


# ----------------------------------------------------------------------------------------------- rows
def _implicit_prompt(chosen: Any, rejected: Any) -> tuple[Any, Any, Any]:
    """TRL's `extract_prompt`: the longest common start of chosen and rejected is the prompt (for strings, minus
    the space before the replies diverge)."""
    idx = 0
    for idx in range(min(len(chosen), len(rejected))):
        if chosen[idx] != rejected[idx]:
            if chosen[idx - 1] == " ":
                idx -= 1
            break
    return chosen[:idx], chosen[idx:], rejected[idx:]


class PreferenceCollator:
    """Rows of (prompt_ids, chosen_ids, rejected_ids) -> one batch of 2B rows, chosen first (TRL's
    `DataCollatorForPreference`): each of prompt+chosen and prompt+rejected cut to `max_length` (keep_start cuts
    the end, keep_end the start), padded right, `completion_mask` 1 on the reply tokens. Precomputed reference
    log-probabilities (`ref_chosen_logps`, `ref_rejected_logps`) are passed through."""

    def __init__(self, pad_token_id: int, max_length: int | None = None, truncation_mode: str = "keep_start",
                 pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id, self.max_length = pad_token_id, max_length
        self.truncation_mode, self.pad_to_multiple_of = truncation_mode, pad_to_multiple_of

    def _cut(self, ids: list[int]) -> list[int]:
        if self.max_length is None:
            return ids
        return ids[:self.max_length] if self.truncation_mode == "keep_start" else ids[-self.max_length:]

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        rows, masks = [], []
        for side in ("chosen_ids", "rejected_ids"):
            for e in examples:
                prompt, reply = list(e["prompt_ids"]), list(e[side])
                rows.append(self._cut(prompt + reply))
                masks.append(self._cut([0] * len(prompt) + [1] * len(reply)))
        width = max(map(len, rows))
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(rows), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
        completion_mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, (ids, mask) in enumerate(zip(rows, masks)):
            input_ids[i, :len(ids)] = torch.as_tensor(ids, dtype=torch.long)
            attention_mask[i, :len(ids)] = 1
            completion_mask[i, :len(ids)] = torch.as_tensor(mask, dtype=torch.long)
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "completion_mask": completion_mask}
        if "ref_chosen_logps" in examples[0]:
            batch["ref_chosen_logps"] = torch.tensor([e["ref_chosen_logps"] for e in examples], dtype=torch.float32)
            batch["ref_rejected_logps"] = torch.tensor([e["ref_rejected_logps"] for e in examples],
                                                       dtype=torch.float32)
        return batch


class PreferenceDataModule(ChatRowsDataModule):
    """Preference pairs from local json/jsonl/parquet files or the hub (the bundled synthetic demo pairs when none
    is given; scripts/data/make_preference_data.py), encoded once as TRL's DPOTrainer encodes them (module
    docstring). `chat_template`: the tokenizer's own, or a preset name such as `chatml`, a Jinja string or file,
    which then wins. `max_length` (null: no cut) and `truncation_mode` cut each prompt+reply when batching;
    `max_prompt_length` (null: none) first keeps the last that many prompt tokens. Every row is checked before
    anything is trained, the failure naming the split and row."""

    objectives = frozenset({"dpo"})
    _bundled = {"train": "preference_train.jsonl", "validation": "preference_validation.jsonl",
                "test": "preference_test.jsonl"}
    eval_length_column = None  # rows hold prompt/chosen/rejected ids, no input_ids: the split's order is kept

    def __init__(self, *, prompt_column: str = "prompt", chosen_column: str = "chosen",
                 rejected_column: str = "rejected", max_length: Annotated[int, Range(2)] | None = 1024,
                 max_prompt_length: Annotated[int, Range(1)] | None = None,
                 truncation_mode: Literal["keep_start", "keep_end"] = "keep_start", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if truncation_mode not in ("keep_start", "keep_end"):
            raise UserError(f"data.truncation_mode={truncation_mode!r}: keep_start or keep_end")
        if max_length is not None and max_prompt_length is not None and max_prompt_length >= max_length:
            raise UserError(f"data.max_prompt_length={max_prompt_length} leaves no room for a reply within "
                            f"data.max_length={max_length}: make it smaller")
        self.prompt_column, self.chosen_column, self.rejected_column = prompt_column, chosen_column, rejected_column
        self.max_length = max_length
        self.max_prompt_length, self.truncation_mode = max_prompt_length, truncation_mode
        self.collate_fn = None  # set once the tokenizer is known
        self.reply_samples: list[dict[str, Any]] = []

    def _reply(self, value: Any, where: str, column: str, conversational: bool) -> Any:
        if isinstance(value, np.ndarray):
            value = value.tolist()
        if isinstance(value, str):
            if not value.strip():
                raise UserError(f"{where}: {column} is empty")
            return [{"role": "assistant", "content": value}] if conversational else value
        if not conversational:
            raise UserError(f"{where}: {column} must be a string like the prompt, got {type(value).__name__}")
        return _check_messages(value, where, column)

    def pair(self, row: Any, where: str) -> tuple[Any, Any, Any]:
        """(prompt, chosen, rejected) of one row, checked: strings, or message lists."""
        if not isinstance(row, Mapping):
            raise UserError(f"{where}: expected an object, got {type(row).__name__}")
        cols = (self.prompt_column, self.chosen_column, self.rejected_column)
        missing = [c for c in cols[1:] if row.get(c) is None]
        if missing:
            raise UserError(f"{where}: no {' or '.join(map(repr, missing))} (set data.chosen_column/"
                            f"data.rejected_column); the row has {', '.join(map(str, row)) or 'no fields'}")
        prompt, chosen, rejected = (v.tolist() if isinstance(v, np.ndarray) else v for v in (row.get(c) for c in cols))
        if isinstance(prompt, str) and isinstance(chosen, list) and isinstance(rejected, list):
            if chosen and rejected and chosen[0] == rejected[0]:
                prompt = None  # whole conversations beside the prompt text (ultrafeedback_binarized): their start
            else:
                prompt = [{"role": "user", "content": prompt}]
        if prompt is None:
            if isinstance(chosen, str) != isinstance(rejected, str):
                raise UserError(f"{where}: no {self.prompt_column!r}, and chosen/rejected are not of one kind")
            prompt, chosen, rejected = _implicit_prompt(chosen, rejected)
        conversational = not isinstance(prompt, str)
        if conversational:
            prompt = _check_messages(prompt, where, self.prompt_column)
        chosen = self._reply(chosen, where, self.chosen_column, conversational)
        rejected = self._reply(rejected, where, self.rejected_column, conversational)
        if chosen == rejected:
            raise UserError(f"{where}: {self.chosen_column} equals {self.rejected_column} (nothing to prefer)")
        return prompt, chosen, rejected

    def training_texts(self) -> Iterator[str]:
        raw = self.load_raw()
        for i, row in enumerate(self.rows(raw["train"])):
            for part in self.pair(row, self.where("train", i)):
                yield from ([part] if isinstance(part, str) else [m["content"] for m in part])

    # ----------------------------------------------------------------- template and encoding
    def _processing_params(self) -> dict[str, Any]:
        return {"columns": [self.prompt_column, self.chosen_column, self.rejected_column],
                "template": self.tokenizer.chat_template, "max_length": self.max_length,
                "max_prompt_length": self.max_prompt_length, "truncation_mode": self.truncation_mode, "v": 1}

    def encode_pair(self, prompt: Any, chosen: Any, rejected: Any, where: str) -> dict[str, list[int]]:
        """TRL's DPOTrainer tokenization of one checked pair: prompt ids (up to where prompt+chosen or
        prompt+rejected diverge from the prompt rendered alone) and each reply's ids after them."""
        tok = self.tokenizer
        if isinstance(prompt, str):
            eos = tok.eos_token or ""
            chosen, rejected = (r if not eos or r.endswith(eos) else r + eos for r in (chosen, rejected))

            def ids(text: str) -> list[int]:
                return list(tok(text=text)["input_ids"])

            prompt_ids, with_chosen, with_rejected = ids(prompt), ids(prompt + chosen), ids(prompt + rejected)
        else:
            self.require_template()

            def ids(messages: list, generation_prompt: bool = False) -> list[int]:
                try:
                    return list(ct.apply(tok, messages, tokenize=True, return_dict=True,
                                         add_generation_prompt=generation_prompt)["input_ids"])
                except UserError as err:
                    raise UserError(f"{where}: {err}") from err

            prompt_ids = ids(prompt, True)
            with_chosen, with_rejected = ids(prompt + chosen), ids(prompt + rejected)
        start = min(ct.common_prefix_length(prompt_ids, with_chosen),
                    ct.common_prefix_length(prompt_ids, with_rejected))
        out = {"prompt_ids": prompt_ids[:start], "chosen_ids": with_chosen[start:],
               "rejected_ids": with_rejected[start:]}
        for side, column in (("chosen_ids", self.chosen_column), ("rejected_ids", self.rejected_column)):
            if not out[side]:
                raise UserError(f"{where}: {column} adds no token after the prompt")
        if self.max_prompt_length is not None:
            out["prompt_ids"] = out["prompt_ids"][-self.max_prompt_length:]
        if self.max_length is not None and self.truncation_mode == "keep_start" \
                and len(out["prompt_ids"]) >= self.max_length:
            raise UserError(f"{where}: the prompt has {len(out['prompt_ids'])} tokens, data.max_length="
                            f"{self.max_length} leaves no room for a reply: raise data.max_length or set "
                            f"data.max_prompt_length")
        return out

    def _process(self, raw: DatasetDict) -> tuple[DatasetDict, dict[str, Any]]:
        processed, meta = DatasetDict(), {"reply_samples": [], "rows": {}}
        for split, ds in raw.items():
            columns: dict[str, list] = {"prompt_ids": [], "chosen_ids": [], "rejected_ids": []}
            for i, row in enumerate(self.rows(ds)):
                where = self.where(split, i)
                prompt, chosen, rejected = self.pair(row, where)
                for key, value in self.encode_pair(prompt, chosen, rejected, where).items():
                    columns[key].append(value)
                if split == "validation" and not isinstance(prompt, str) \
                        and len(meta["reply_samples"]) < _REPLY_SAMPLES:
                    meta["reply_samples"].append({"messages": prompt, "reference": chosen[-1]["content"]})
            if not columns["prompt_ids"]:
                raise UserError(f"data ({self.describe_split(split)}): no preference pairs")
            processed[split] = Dataset.from_dict(columns)
            meta["rows"][split] = len(columns["prompt_ids"])
        return processed, meta

    def _after_load(self, datasets: DatasetDict, meta: dict[str, Any]) -> None:
        self.reply_samples = meta.get("reply_samples", [])
        self.collate_fn = PreferenceCollator(self.tokenizer.pad_token_id, self.max_length, self.truncation_mode,
                                             self.pad_to_multiple_of)

    def model_attachments(self) -> dict[str, Any]:
        return {"reply_samples": self.reply_samples}  # scored with `model.eval_generation_samples`

    # ----------------------------------------------------------------- precomputed reference log-probabilities
    def add_reference_log_probs(self, compute: Callable[[dict[str, torch.Tensor]], tuple[torch.Tensor, torch.Tensor]],
                                key: str, device: torch.device) -> None:
        """Give every split the columns `ref_chosen_logps`, `ref_rejected_logps`: read from the cache beside the
        tokenized data (`reference-<key>.npz`, `key` naming the reference's weights), else computed with
        `compute(batch) -> (chosen, rejected)` over every row (not this rank's shard) and written there. A file lock
        lets the first process compute and the others read."""
        assert self.datasets is not None, "call setup() first"
        path = self.cache_path / f"reference-{key}.npz"
        with FileLock(str(path) + ".lock"):
            if path.exists():
                with np.load(path) as saved:
                    values = {name: saved[name] for name in saved.files}
            else:
                values = {}
                for split, ds in self.datasets.items():
                    plain = ds.remove_columns([c for c in ("ref_chosen_logps", "ref_rejected_logps")
                                               if c in ds.column_names])
                    loader = DataLoader(plain, batch_size=self.eval_batch_size, collate_fn=self.collate_fn)
                    chosen, rejected = [], []
                    for batch in loader:
                        c, r = compute({k: v.to(device) for k, v in batch.items()})
                        chosen.append(c.float().cpu())
                        rejected.append(r.float().cpu())
                    values[f"{split}/chosen"] = torch.cat(chosen).numpy()
                    values[f"{split}/rejected"] = torch.cat(rejected).numpy()
                tmp = path.with_name(path.name + ".tmp.npz")
                np.savez(tmp, **values)
                tmp.rename(path)
        for split, ds in list(self.datasets.items()):
            ds = ds.remove_columns([c for c in ("ref_chosen_logps", "ref_rejected_logps") if c in ds.column_names])
            ds = ds.add_column("ref_chosen_logps", values[f"{split}/chosen"].tolist())
            self.datasets[split] = ds.add_column("ref_rejected_logps", values[f"{split}/rejected"].tolist())


# ----------------------------------------------------------------------------------------------- the objective
def completion_log_probs(logits: torch.Tensor, input_ids: torch.Tensor,
                         completion_mask: torch.Tensor) -> torch.Tensor:
    """Per row, the sum of log p(token | what precedes it) over its completion tokens (`logits[:, t]` predicts
    `input_ids[:, t + 1]`). Only the positions predicting a completion token are normalized, in fp32."""
    mask = completion_mask[:, 1:].bool()
    rows = mask.nonzero()[:, 0]
    selected = logits[:, :-1][mask].float()
    token_logps = selected.log_softmax(-1).gather(-1, input_ids[:, 1:][mask].unsqueeze(-1)).squeeze(-1)
    return torch.zeros(mask.shape[0], dtype=token_logps.dtype, device=logits.device).index_add(0, rows, token_logps)


def preference_loss(chosen_logps: torch.Tensor, rejected_logps: torch.Tensor, ref_chosen_logps: torch.Tensor,
                    ref_rejected_logps: torch.Tensor, *, beta: float, loss_type: str = "sigmoid",
                    label_smoothing: float = 0.0, chosen_tokens: torch.Tensor | None = None,
                    rejected_tokens: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(per-pair loss, chosen rewards, rejected rewards) as TRL's DPOTrainer computes them; rewards are
    `beta * (log p_policy - log p_reference)` of each reply, detached.

    sigmoid: DPO, `-log sigmoid(beta * delta)` with delta the difference of the two log-ratios; with
    `label_smoothing` e it is conservative DPO, `-(1 - e) log sigmoid(beta delta) - e log sigmoid(-beta delta)` (TRL's
    sigmoid before 1.0; e = 0 is TRL 1.16's sigmoid). robust: TRL's robust DPO (unbiased under flip rate e).
    ipo: `(delta / tokens - 1 / (2 beta))^2` with each log-ratio averaged over its completion tokens (TRL)."""
    chosen_ratio, rejected_ratio = chosen_logps - ref_chosen_logps, rejected_logps - ref_rejected_logps
    delta = chosen_ratio - rejected_ratio
    if loss_type == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * delta) - label_smoothing * F.logsigmoid(-beta * delta)
    elif loss_type == "robust":
        losses = (-(1 - label_smoothing) * F.logsigmoid(beta * delta)
                  + label_smoothing * F.logsigmoid(-beta * delta)) / (1 - 2 * label_smoothing)
    elif loss_type == "ipo":
        assert chosen_tokens is not None and rejected_tokens is not None
        ipo_delta = chosen_ratio / chosen_tokens.clamp(min=1.0) - rejected_ratio / rejected_tokens.clamp(min=1.0)
        losses = (ipo_delta - 1 / (2 * beta)) ** 2
    else:
        raise UserError(f"model.loss_type={loss_type!r}: one of {', '.join(LOSS_TYPES)}")
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


class PreferenceMetrics(Metric):
    """Sums over a whole split (torchmetrics states, summed across DDP ranks) of the per-pair loss, rewards, reward
    margin, correct orderings and log-probabilities: each metric is its mean over the split's pairs."""

    full_state_update = False
    higher_is_better = True
    names = ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen",
             "logps/rejected")

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        for name in self.names:
            self.add_state(name.replace("/", "_"), torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("pairs", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, values: Mapping[str, torch.Tensor]) -> None:
        for name in self.names:
            state = name.replace("/", "_")
            setattr(self, state, getattr(self, state) + values[name].detach().double().sum())
        self.pairs += values["loss"].numel()

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.pairs.clamp(min=1)
        return {name: (getattr(self, name.replace("/", "_")) / n).float() for name in self.names}


def pair_values(losses: torch.Tensor, chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor,
                chosen_logps: torch.Tensor, rejected_logps: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-pair values of the logged metrics (TRL's meanings: accuracy = chosen reward strictly above rejected)."""
    return {"loss": losses.detach(), "rewards/chosen": chosen_rewards, "rewards/rejected": rejected_rewards,
            "rewards/accuracies": (chosen_rewards > rejected_rewards).float(),
            "rewards/margins": chosen_rewards - rejected_rewards, "logps/chosen": chosen_logps.detach(),
            "logps/rejected": rejected_logps.detach()}


def _weights_key(named: Iterator[tuple[str, torch.Tensor]]) -> str:
    """A short fingerprint of a set of weights (names, shapes, sums, sums of squares): equal for the same weights."""
    parts = []
    for name, p in named:
        p = p.detach().double()
        parts.append([name, list(p.shape), float(p.sum()), float((p * p).sum())])
    return stable_hash(parts)[:16]


class DPOModule(CausalLMModule):
    """A causal LM (`model.pretrained_model_name_or_path`: an SFT run's hf_model/ or a hub id) trained with DPO
    (`model=dpo`, `data=preference`). Logs, under `train/` per step and `val/`, `test/` over the whole split:
    `loss`, `rewards/chosen`, `rewards/rejected`, `rewards/accuracies`, `rewards/margins`, `logps/chosen`,
    `logps/rejected` (TRL's meanings); `val/rewards/accuracies` is what checkpoints and sweeps watch. With
    `eval_generation_samples` > 0, greedy replies to that many validation prompts are compared with the chosen
    reply before training and after each validation (`val/reply_exact_match`).

    `beta` scales the implicit reward (IPO: its regularization), `loss_type` sigmoid | ipo | robust,
    `label_smoothing` (sigmoid: conservative DPO; robust), `sft_weight` (> 0: plus that times the chosen replies'
    mean token NLL, TRL's `loss_type=[..., "sft"]`, RPO: keeps the chosen replies likely), `disable_dropout` (TRL's default: no dropout in policy
    and reference). Optimizer defaults are TRL's DPOConfig's (AdamW, 1e-6, linear decay, no warmup or decay)."""

    task = "dpo"
    architecture_suffixes = ()  # an exported DPO model is a plain causal LM: llm-generate reads it as causal_lm
    bare_config_default = False
    explain_as = None
    # The best checkpoint by loss: reward accuracy moves in steps of 1/pairs and often ties, and a tie keeps the first
    # checkpoint. Sweeps compare accuracy, as the loss's scale changes with beta.
    monitor = ("val/loss", "min")
    optimized_metric = ("val/rewards/accuracies", "max")
    best_metric = ("val/rewards/accuracies", "max")
    progress_bar_metrics = frozenset({"loss", "rewards/accuracies", "rewards/margins", "reply_exact_match"})
    baseline_metrics: dict[str, str] = {}

    def __init__(self, *, beta: Positive[float] = 0.1, loss_type: Literal["sigmoid", "ipo", "robust"] = "sigmoid",
                 label_smoothing: Annotated[float, Range(0, 0.5, high_open=True)] = 0.0,
                 sft_weight: NonNegative[float] = 0.0, precompute_ref_log_probs: bool = False,
                 disable_dropout: bool = True, learning_rate: Positive[float] = 1e-6,
                 weight_decay: NonNegative[float] = 0.0, warmup_ratio: UnitFraction = 0.0,
                 adam_betas: Sequence[float] = (0.9, 0.999), lr_scheduler: str = "linear",
                 **kwargs: Any) -> None:
        if loss_type not in LOSS_TYPES:
            raise UserError(f"model.loss_type={loss_type!r}: one of {', '.join(LOSS_TYPES)}")
        if not 0 <= label_smoothing < 0.5:
            raise UserError(f"model.label_smoothing={label_smoothing!r}: must be in [0, 0.5)")
        if not kwargs.get("pretrained_model_name_or_path") and kwargs.get("hf_config") is None:
            raise UserError("model.pretrained_model_name_or_path: DPO starts from a trained causal LM (an SFT run's "
                            "hf_model/ directory or a hub id)")
        if disable_dropout:
            kwargs["dropout"] = 0.0
        super().__init__(learning_rate=learning_rate, weight_decay=weight_decay, warmup_ratio=warmup_ratio,
                         adam_betas=adam_betas, lr_scheduler=lr_scheduler, **kwargs)
        if disable_dropout:  # TRL's disable_dropout_in_model: LoRA's dropout too
            for module in self.model.modules():
                if isinstance(module, nn.Dropout):
                    module.p = 0.0
        # The reference: under LoRA the same network with its adapters off (nothing copied). Otherwise a frozen copy
        # of the starting weights: a submodule (so checkpoints hold it and `llm-eval` restores it) in no optimizer
        # group and not exported, or, when its log-probabilities are precomputed, kept outside the module's tree and
        # freed once they are.
        self.__dict__["_detached_reference"] = None
        self.reference: nn.Module | None = None
        if not self.has_adapter:
            frozen = copy.deepcopy(self.model).eval().requires_grad_(False)
            if not precompute_ref_log_probs:
                self.reference = frozen
            elif kwargs.get("hf_config") is None:  # rebuilt from a checkpoint, the copy would be untrained weights
                self.__dict__["_detached_reference"] = frozen
        self.reply_exact_match_start: float | None = None

    def train(self, mode: bool = True) -> DPOModule:
        """Lightning switches the whole module to train mode around validation: the reference stays in eval."""
        super().train(mode)
        reference = getattr(self, "reference", None)
        if reference is not None:
            reference.eval()
        return self

    # ----------------------------------------------------------------- log-probabilities and loss
    @staticmethod
    def _inputs(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"], "use_cache": False}

    @contextmanager
    def _adapters_off(self) -> Iterator[None]:
        """The LoRA-wrapped network as its base model, in eval mode (dropout off) for the duration."""
        was_training = self.model.training
        self.model.eval()
        try:
            with self.model.disable_adapter():
                yield
        finally:
            self.model.train(was_training)

    def _starting_model(self) -> nn.Module:
        """The reference when neither a copy nor precomputed values are at hand (evaluating a checkpoint of a
        `precompute_ref_log_probs` run): the starting weights, loaded again."""
        reference = self.__dict__["_detached_reference"]
        if reference is None:
            path = self.hparams.pretrained_model_name_or_path
            try:
                reference = self.auto_class.from_pretrained(path)
            except Exception as err:
                raise UserError(f"model.pretrained_model_name_or_path: the reference (the starting weights {path!r}) "
                                f"is needed to score this checkpoint and cannot be loaded: {err}".splitlines()[0]
                                ) from err
            reference = reference.eval().requires_grad_(False)
            self.__dict__["_detached_reference"] = reference
        if next(reference.parameters()).device != self.device:
            reference.to(self.device)
        return reference

    @torch.no_grad()
    def reference_log_probs(self, batch: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen, rejected) summed completion log-probabilities under the reference."""
        if self.has_adapter:
            with self._adapters_off():
                logits = self.model(**self._inputs(batch)).logits
        else:
            model = self.reference if self.reference is not None else self._starting_model()
            logits = model(**self._inputs(batch)).logits
        return completion_log_probs(logits, batch["input_ids"], batch["completion_mask"]).chunk(2)

    def pair_forward(self, batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One forward pass of the 2B rows (chosen then rejected) -> per-pair loss and metric values."""
        logits = self.model(**self._inputs(batch)).logits
        chosen_logps, rejected_logps = completion_log_probs(logits, batch["input_ids"],
                                                            batch["completion_mask"]).chunk(2)
        if "ref_chosen_logps" in batch:
            ref_chosen, ref_rejected = batch["ref_chosen_logps"], batch["ref_rejected_logps"]
        else:
            ref_chosen, ref_rejected = self.reference_log_probs(batch)
        tokens = batch["completion_mask"].sum(dim=1).to(chosen_logps.dtype).chunk(2)
        hp = self.hparams
        losses, chosen_rewards, rejected_rewards = preference_loss(
            chosen_logps, rejected_logps, ref_chosen, ref_rejected, beta=hp.beta, loss_type=hp.loss_type,
            label_smoothing=hp.label_smoothing, chosen_tokens=tokens[0], rejected_tokens=tokens[1])
        if hp.sft_weight:  # TRL's loss_type=[<loss>, "sft"], loss_weights=[1, sft_weight]: chosen NLL per token
            predicted = batch["completion_mask"][:, 1:].sum(dim=1).chunk(2)[0].sum().clamp(min=1)
            losses = losses + hp.sft_weight * (-chosen_logps.sum() / predicted)
        return pair_values(losses, chosen_rewards, rejected_rewards, chosen_logps, rejected_logps) | {
            "losses": losses}

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        values = self.pair_forward(batch)
        loss = values.pop("losses").mean()
        if compat.logs_this_step(self.trainer) or self.trainer.fast_dev_run:
            self.log_dict({f"train/{name}": value.mean() for name, value in values.items()} | {"train/loss": loss},
                          on_step=True, on_epoch=False, sync_dist=self.trainer.world_size > 1)
        return loss

    def count_targets(self, batch: Mapping[str, torch.Tensor]) -> None:
        return None  # the loss is a mean over pairs, as TRL's

    def make_metrics(self) -> PreferenceMetrics:
        return PreferenceMetrics()

    def update_metrics(self, metrics: PreferenceMetrics, batch: dict[str, torch.Tensor]) -> None:
        values = self.pair_forward(batch)
        values.pop("losses")
        metrics.update(values)

    # ----------------------------------------------------------------- fitting
    def on_fit_start(self) -> None:
        super().on_fit_start()
        datamodule = self.trainer.datamodule
        if self.hparams.precompute_ref_log_probs and isinstance(datamodule, PreferenceDataModule):
            if self.has_adapter:
                key = _weights_key((n, p) for n, p in self.model.named_parameters() if "lora_" not in n)
            else:
                key = _weights_key(self._starting_model().named_parameters())
            datamodule.add_reference_log_probs(self.reference_log_probs, key, self.device)
            self.__dict__["_detached_reference"] = None  # the copy is no longer needed: its memory is freed
        if self.hparams.eval_generation_samples and self.reply_samples:
            was_training = self.model.training
            self.model.eval()
            samples = self.reply_samples[:int(self.hparams.eval_generation_samples)]
            self.reply_exact_match_start, _ = score_replies(self.model, self.tokenizer, samples)
            self.model.train(was_training)
            self.stage_details.setdefault("val", {})["reply_exact_match_start"] = self.reply_exact_match_start

    def fit_summary(self, metrics: Mapping[str, Any]) -> str | None:
        accuracy = metrics.get("val/rewards/accuracies")
        if accuracy is None:
            return None
        line = (f"val/rewards/accuracies {float(accuracy):.3f} (0.5: no preference), val/rewards/margins "
                f"{float(metrics.get('val/rewards/margins', float('nan'))):.3f}")
        exact = metrics.get("val/reply_exact_match")
        if exact is not None and self.reply_exact_match_start is not None:
            line += (f"; validation replies generated exactly as the chosen one: {float(exact):.1%} vs "
                     f"{self.reply_exact_match_start:.1%} before DPO (greedy, {self.hparams.eval_generation_samples} "
                     f"at most)")
        return line


registry.register(DPOModule)
