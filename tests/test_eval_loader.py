"""Evaluation loaders: every example once over the ranks, longest first, larger batches, inference mode; and
none of it changes a metric."""

from __future__ import annotations

import numpy as np
import pytest
import pytorch_lightning as pl
import torch

from lightning_llm.data.base import row_lengths
from lightning_llm.data.samplers import EvaluationSampler
from lightning_llm.runtime import builders
from tests.conftest import TINY_BERT


def test_ranks_share_an_odd_split_without_repeats_longest_first() -> None:
    lengths = np.random.default_rng(0).integers(1, 64, size=399)
    shards = [list(EvaluationSampler(range(399), lengths, num_replicas=2, rank=r)) for r in (0, 1)]
    assert [len(s) for s in shards] == [200, 199]
    assert sorted(shards[0] + shards[1]) == list(range(399))  # torch's DistributedSampler gives 400, one twice
    for shard in shards:
        assert list(lengths[shard]) == sorted(lengths[shard], reverse=True)
    assert list(EvaluationSampler(range(5))) == [0, 1, 2, 3, 4]  # no lengths: the split's order


class _RecordsGradMode(pl.Callback):
    def __init__(self) -> None:
        self.modes: set[tuple[bool, bool]] = set()

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.modes.add((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))


def test_length_ordered_larger_eval_batches_give_the_same_metrics(compose_cfg) -> None:
    cfg = compose_cfg(["experiment=classify_demo", *TINY_BERT, "data.batch_size=16"])
    datamodule, _, model = builders.build_data_and_model(cfg)
    assert datamodule.eval_batch_size == 32  # "auto": twice the training batch
    lengths = row_lengths(datamodule.datasets["validation"], "input_ids")
    assert lengths.tolist() == [len(ids) for ids in datamodule.datasets["validation"]["input_ids"]]
    assert len(set(lengths.tolist())) > 10  # something to sort

    def validate(**overrides) -> dict[str, float]:
        for name, value in overrides.items():
            setattr(datamodule, name, value)
        recorder = _RecordsGradMode()
        trainer = pl.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False,
                             enable_progress_bar=False, enable_model_summary=False, callbacks=[recorder],
                             default_root_dir=cfg.paths.output_dir)  # where predictions_val.jsonl goes
        metrics = {k: float(v) for k, v in trainer.validate(model, datamodule=datamodule, verbose=False)[0].items()}
        assert recorder.modes == {(True, False)}  # inference mode: no autograd state is kept
        return metrics

    ordered = validate()
    assert next(iter(datamodule.val_dataloader()))["input_ids"].shape[1] >= lengths.max()  # longest rows first
    in_order = validate(eval_length_column=None, eval_batch_size=16)
    assert ordered["val/acc"] == in_order["val/acc"] and ordered["val/f1"] == in_order["val/f1"]
    assert ordered["val/loss"] == pytest.approx(in_order["val/loss"], rel=1e-6)
