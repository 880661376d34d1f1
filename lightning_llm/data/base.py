"""What every data module shares: raw loading, tokenize-once caching, seeded validation splits, loaders."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytorch_lightning as pl
import torch
from datasets import Dataset, DatasetDict, load_from_disk
from filelock import FileLock
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch.utils.data import DataLoader
from torchdata.stateful_dataloader import StatefulDataLoader

import lightning_llm
from lightning_llm.config.schema import NonNegative, OpenUnitFraction, Positive
from lightning_llm.data.padding import auto_pad_multiple
from lightning_llm.data.samplers import EvaluationSampler, LengthGroupedSampler, ResumableRandomSampler
from lightning_llm.data.sources import SPLITS, data_fingerprints, load_raw, source_fingerprint, stable_hash
from lightning_llm.errors import UserError
from lightning_llm.utils.paths import user_cache_dir


@contextmanager
def progress_bars(enabled: bool) -> Iterator[None]:
    """`datasets`' progress bars on or off for a block, restored afterwards."""
    was = datasets.is_progress_bar_enabled()
    (datasets.enable_progress_bars if enabled else datasets.disable_progress_bars)()
    try:
        yield
    finally:
        (datasets.enable_progress_bars if was else datasets.disable_progress_bars)()


@contextmanager
def parallel_tokenization(enabled: bool) -> Iterator[None]:
    """Fast tokenizers batch-encode on every core for a block (TOKENIZERS_PARALLELISM=true), as they do by default
    in the transformers examples (docs/benchmarks.md), then their
    pool is off again: a process forked later must not use it (tokenizers before the fork-safe pool of
    huggingface/tokenizers#2268 warn or deadlock). Nothing changes when the user set the variable, or when
    `enabled` is false (datasets' `num_proc` workers fork from the tokenizing process)."""
    if not enabled or lightning_llm.TOKENIZERS_PARALLELISM_CHOSEN:
        yield
        return
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    try:
        yield
    finally:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Identity of a tokenizer's behaviour: its serialized fast-tokenizer JSON plus special tokens."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        state.pop("truncation", None)  # runtime state that tokenizing with truncation=True changes
        state.pop("padding", None)
        body = json.dumps(state, sort_keys=True)
    else:
        body = repr(sorted(tokenizer.get_vocab().items()))
    return stable_hash([body, tokenizer.all_special_tokens, type(tokenizer).__name__,
                        getattr(tokenizer, "padding_side", None)])


def arrow_column(dataset: Dataset, column: str) -> pa.ChunkedArray:
    """`column` as Arrow, in the dataset's row order and selection. Scans of it with `pyarrow.compute` take ~1 ms
    per 3k rows where iterating `dataset[column]` in Python takes ~20 ms (a label set, a minimum, a sum)."""
    return dataset.select_columns([column]).with_format("arrow")[:].column(column)


def row_lengths(dataset: Dataset, column: str | None) -> np.ndarray | None:
    """Length of each row's `column` list (None without one), read from Arrow's offsets (no Python rows)."""
    if column is None or column not in dataset.column_names:
        return None
    return pc.list_value_length(arrow_column(dataset, column)).to_numpy(zero_copy_only=False)


# Bumped when what `_process` writes changes, so older cache entries are not read (3: meta.json records a carved
# validation split; 4: classification evaluation splits keep each row's number).
_CACHE_FORMAT = 4
# meta.json's record of a validation split carved from train (`with_validation`), said once per run at `setup`.
CARVED_KEY = "carved_validation"


class CachedTextDataModule(pl.LightningDataModule):
    """The data half of the task contract: loads raw splits, tokenizes them once into a keyed on-disk cache, and
    serves data loaders.

    A task's data module declares `objectives` (the module `task`s it can feed; the builders pass the model's as
    `objective`) and, once set up, says what it gives the model through `model_kwargs()` (label names and counts,
    baseline statistics: names of the module's constructor arguments listed in its `data_kwargs`). It defines
    `_bundled` (demo files used when no source is given), `training_texts()` (for training a tokenizer),
    `_processing_params()` (what changes the tokenized result), `_process(raw) -> (DatasetDict, meta)` (tokenize,
    check columns; `meta` is JSON kept beside the cache), `_after_load(datasets, meta)` and `collate_fn`.
    """

    objectives: ClassVar[frozenset[str]]
    # Filled by the builders, never configured.
    derived_kwargs: ClassVar[frozenset[str]] = frozenset({"tokenizer", "objective", "splits"})
    _bundled: ClassVar[dict[str, str]] = {}
    # What a task needs a fast (Rust) tokenizer for, e.g. "word_ids()"; None: any tokenizer.
    needs_fast_tokenizer: ClassVar[str | None] = None
    # The list column whose length orders evaluation batches (longest first, see `EvaluationSampler`); None keeps
    # the split's order (a task whose results depend on it).
    eval_length_column: ClassVar[str | None] = "input_ids"

    def __init__(self, *, tokenizer: Any = None, objective: str | None = None, dataset_name: str | None = None,
                 dataset_config: str | None = None, train_file: str | None = None,
                 validation_file: str | None = None, test_file: str | None = None, train_split: str = "train",
                 validation_split: str | None = "validation", test_split: str | None = "test",
                 val_fraction: OpenUnitFraction = 0.1, batch_size: Positive[int] = 32,
                 eval_batch_size: Positive[int] | Literal["auto"] | None = "auto",
                 pad_to_multiple_of: Positive[int] | Literal["auto"] | None = "auto", num_workers: NonNegative[int] = 0,
                 pin_memory: bool | None = None, preprocessing_num_workers: Positive[int] | None = None,
                 cache_dir: str | None = None, seed: int = 42, group_by_length: bool = False,
                 splits: Sequence[str] | None = None) -> None:
        super().__init__()
        if objective is None and len(self.objectives) == 1:
            objective = next(iter(self.objectives))
        if objective not in self.objectives:
            raise UserError(f"data: {type(self).__name__} serves {'/'.join(sorted(self.objectives))}, not "
                            f"{objective!r}: pick matching model= and data= options")
        self.objective = objective
        self.tokenizer = tokenizer
        self.dataset_name, self.dataset_config = dataset_name, dataset_config
        # `splits`: the only splits to load and tokenize (None: all the source has); `llm-eval` loads "test" alone.
        self.splits = tuple(splits) if splits else SPLITS
        files = {"train": train_file, "validation": validation_file, "test": test_file}
        self.files = {split: files[split] if split in self.splits else None for split in SPLITS}
        names = {"train": train_split, "validation": validation_split, "test": test_split}
        self.split_names = {split: names[split] if split in self.splits else None for split in SPLITS}
        self.val_fraction, self.seed = val_fraction, seed
        # "auto": twice the training batch. Evaluation keeps no activations for a backward pass (inference mode),
        # so twice the rows fit in the memory training used; null: the training batch size.
        self.batch_size = batch_size
        self.eval_batch_size = 2 * batch_size if eval_batch_size == "auto" else eval_batch_size or batch_size
        # Batches are padded to their longest row, rounded up to this ("auto": 8 on CUDA, none on CPU).
        self.pad_to_multiple_of = auto_pad_multiple() if pad_to_multiple_of == "auto" else pad_to_multiple_of
        self.num_workers, self.pin_memory = num_workers, pin_memory
        self.group_by_length = group_by_length  # training batches of similar lengths (see `LengthGroupedSampler`)
        self.preprocessing_num_workers = preprocessing_num_workers
        self.cache_dir = Path(cache_dir or user_cache_dir())  # None: the per-user cache
        self.datasets: DatasetDict | None = None
        self._cache_path: Path | None = None
        self._carved: dict[str, Any] | None = None  # what `with_validation` carved from train, if it did

    # ----------------------------------------------------------------- raw data
    def load_raw(self) -> DatasetDict:
        with progress_bars(enabled=bool(self.dataset_name)):  # hub downloads show progress; local files are read at once
            raw = load_raw(dataset_name=self.dataset_name, dataset_config=self.dataset_config, files=self.files,
                           split_names=self.split_names, cache_dir=str(self.cache_dir / "raw"),
                           bundled=self.bundled_files())
        return self.with_validation(raw)

    def with_validation(self, raw: DatasetDict) -> DatasetDict:
        """`raw` with a validation split: a seeded `val_fraction` of train when the source has none (recorded in the
        cache's meta.json, so that `setup` says so on every run, cached or not)."""
        if "validation" not in raw and "train" in raw:
            parts = raw["train"].train_test_split(test_size=self.val_fraction, seed=self.seed, shuffle=True)
            raw = DatasetDict({**raw, "train": parts["train"], "validation": parts["test"]})
            self._carved = {"rows": len(parts["test"]), "of": len(parts["test"]) + len(parts["train"]),
                            "fraction": self.val_fraction, "seed": self.seed}
        return raw

    def carved_line(self, carved: dict[str, Any]) -> str:
        """`validation: none given, so 10% of the train split (50 of 500 rows, seed 42) ...`: the one line a run
        prints when its validation rows come out of train."""
        where = "give a validation split (data.validation_split)" if self.dataset_name else "give data.validation_file"
        return (f"validation: none given, so {carved['fraction']:.0%} of the train split ({carved['rows']} of "
                f"{carved['of']} rows, seed {carved['seed']}) is held out for it; data.val_fraction sets the share, "
                f"or {where}")

    def data_fingerprints(self) -> dict[str, Any]:
        """sha256 of the data files this module reads (or the hub dataset it loads): results.json's `data`."""
        return data_fingerprints(dataset_name=self.dataset_name, dataset_config=self.dataset_config, files=self.files,
                                 split_names=self.split_names, bundled=self.bundled_files())

    def bundled_files(self) -> dict[str, str]:
        """The bundled demo files of the splits this module loads (`_bundled` filtered by `splits`)."""
        return {split: name for split, name in self._bundled.items() if split in self.splits}

    def training_texts(self) -> Iterator[str]:
        """Raw training text, for training a tokenizer when the model has none."""
        raise NotImplementedError

    def model_kwargs(self) -> dict[str, Any]:
        """What the data determines about the model (after `setup`): constructor arguments of the task module,
        e.g. `num_labels` and `label_names`, or a baseline the module reports its metric against."""
        return {}

    def model_attachments(self) -> dict[str, Any]:
        """What the data gives the model that is not a hyper-parameter (not saved in its checkpoint), e.g.
        validation prompts with their references to generate replies from. The builders set each as an
        attribute of the module when the module class lists it in `data_attachments`."""
        return {}

    def describe_split(self, split: str) -> str:
        """`test split, /path/test.csv`: how a message names a split (and its file when one was given)."""
        path = self.files.get(split)
        return f"{split} split, {path}" if path else f"{split} split"

    @rank_zero_only
    def warn_missing_labels(self, names: list[str], present: dict[str, list[int]], what: str = "rows labelled") -> None:
        """One warning line per split that lacks some of the label ids `0..len(names)-1` (`present`: the ids
        each split holds), e.g. a test file with one class of two: fine to score, worth knowing."""
        for split, ids in present.items():
            missing = [name for i, name in enumerate(names) if i not in set(ids)]
            if missing:
                print(f"warning: data ({self.describe_split(split)}) has no {what} {missing[:5]}"
                      f"{' ...' if len(missing) > 5 else ''} ({len(missing)} of the {len(names)} labels {names[:10]})",
                      file=sys.stderr)

    def require_splits(self, *names: str) -> None:
        """Fail now, naming the setting, if a split the run will need is missing (after `setup`)."""
        for name in names:
            self._split(name)

    # ----------------------------------------------------------------- tokenize once
    def _processing_params(self) -> dict[str, Any]:
        raise NotImplementedError

    def _process(self, raw: DatasetDict) -> tuple[DatasetDict, dict[str, Any]]:
        raise NotImplementedError

    def cache_key(self) -> str:
        source = source_fingerprint(dataset_name=self.dataset_name, dataset_config=self.dataset_config,
                                    files=self.files, split_names=self.split_names, bundled=self.bundled_files())
        return stable_hash({"cls": type(self).__name__, "format": _CACHE_FORMAT, "source": source, "val_fraction": self.val_fraction,
                            "seed": self.seed, "tokenizer": tokenizer_fingerprint(self.tokenizer),
                            "params": self._processing_params()})

    @property
    def cache_path(self) -> Path:
        if self._cache_path is None:
            self._cache_path = self.cache_dir / "tokenized" / self.cache_key()
        return self._cache_path

    def prepare_data(self) -> None:
        """Tokenize into the cache unless it is there; a file lock lets the first process (rank 0) go first."""
        if self.tokenizer is None:
            raise UserError("the data module needs a tokenizer (build it through lightning_llm.runtime.builders)")
        if self.needs_fast_tokenizer and not getattr(self.tokenizer, "is_fast", False):
            raise UserError(f"{type(self).__name__} needs a fast tokenizer ({self.needs_fast_tokenizer}); "
                            f"{type(self.tokenizer).__name__} is not one: set model.tokenizer_name_or_path")
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.cache_path) + ".lock"):
            if (self.cache_path / "dataset_dict.json").exists():
                return
            with progress_bars(enabled=bool(self.dataset_name)):  # tokenizing local data takes seconds
                raw = self.load_raw()
                with parallel_tokenization(enabled=(self.preprocessing_num_workers or 1) == 1):
                    processed, meta = self._process(raw)
            if self._carved is not None:
                meta = {**meta, CARVED_KEY: self._carved}
            tmp = self.cache_path.with_name(self.cache_path.name + ".tmp")
            shutil.rmtree(tmp, ignore_errors=True)
            with progress_bars(enabled=False):
                processed.save_to_disk(str(tmp))
            (tmp / "meta.json").write_text(json.dumps(meta))
            tmp.rename(self.cache_path)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets is None:
            if not (self.cache_path / "dataset_dict.json").exists():
                self.prepare_data()
            self.datasets = load_from_disk(str(self.cache_path))
            meta = json.loads((self.cache_path / "meta.json").read_text())
            self._after_load(self.datasets, meta)
            if meta.get(CARVED_KEY) and "validation" in self.datasets:
                self._say(self.carved_line(meta[CARVED_KEY]))

    @staticmethod
    @rank_zero_only
    def _say(line: str) -> None:
        print(line, flush=True)

    def _after_load(self, datasets: DatasetDict, meta: dict[str, Any]) -> None:
        """Hook for subclasses to read metadata (label names, sizes) saved by `_process`."""

    # ----------------------------------------------------------------- loaders
    collate_fn: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]]
    # The validation/test collator where it differs from training's (e.g. masks fixed per batch); None: the same.
    eval_collate_fn: Callable[[list[dict[str, Any]]], dict[str, torch.Tensor]] | None = None

    def _split(self, name: str) -> Dataset:
        assert self.datasets is not None, "call setup() first"
        if name not in self.datasets:
            hint = ", or test=false to skip testing" if name == "test" else ""
            raise UserError(f"data: no {name} split (give data.{name}_file or a hub split{hint})")
        return self.datasets[name]

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        dataset = self._split(split)
        collate = self.collate_fn if shuffle or self.eval_collate_fn is None else self.eval_collate_fn
        common = {"collate_fn": collate, "num_workers": self.num_workers, "pin_memory": self._pin_memory(),
                  "persistent_workers": self.num_workers > 0}
        if not shuffle:
            return DataLoader(dataset, batch_size=self.eval_batch_size, sampler=self._eval_sampler(dataset), **common)
        # A stateful loader and a sampler ordering by (seed, epoch) let a mid-epoch resume continue with the same
        # data order; the generator only seeds workers (the global RNG is left alone).
        return StatefulDataLoader(dataset, batch_size=self.batch_size, sampler=self._train_sampler(dataset),
                                  generator=torch.Generator().manual_seed(self.seed), **common)

    def _train_sampler(self, dataset: Dataset) -> ResumableRandomSampler | LengthGroupedSampler:
        """Shuffled rows, or with `group_by_length` rows grouped by the length of their `input_ids` (the
        Trainer's `model_input_name`), sharded over the ranks by the sampler itself (Lightning leaves it alone)."""
        if not self.group_by_length:
            return ResumableRandomSampler(dataset, self.seed)
        lengths = row_lengths(dataset, "input_ids")
        if lengths is None:
            raise UserError(f"data.group_by_length=true needs an input_ids column (the training split has "
                            f"{', '.join(dataset.column_names)})")
        shard = (self.trainer.distributed_sampler_kwargs if self.trainer is not None else None) or {}
        return LengthGroupedSampler(dataset, lengths, self.batch_size, self.seed,
                                    num_replicas=shard.get("num_replicas", 1), rank=shard.get("rank", 0))

    def _eval_sampler(self, dataset: Dataset) -> EvaluationSampler:
        """This rank's share of an evaluation split, longest rows first (see `EvaluationSampler`)."""
        shard = (self.trainer.distributed_sampler_kwargs if self.trainer is not None else None) or {}
        replicas = shard.get("num_replicas", 1)
        if len(dataset) < replicas:  # a rank without a batch would wait forever for the others' metric states
            raise UserError(f"data: {len(dataset)} evaluation rows for {replicas} processes: give a larger split "
                            f"or fewer hardware.devices")
        return EvaluationSampler(dataset, lengths=row_lengths(dataset, self.eval_length_column),
                                 num_replicas=replicas, rank=shard.get("rank", 0))

    def _pin_memory(self) -> bool:
        """Page-locked batches copy to a GPU faster (and asynchronously); None means: when training on CUDA."""
        if self.pin_memory is not None:
            return self.pin_memory
        return self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("validation", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
