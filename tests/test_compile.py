"""`model.compile=true`: the HF model runs under torch.compile and trains as the eager model does."""

from __future__ import annotations

import pytest
import torch

from lightning_llm.runtime.builders import build_trainer
from lightning_llm.train import train
from tests.conftest import TINY_BERT, compose_run_config

# data.max_length=16: nearly every batch has one shape, so inductor compiles few graphs. Dropout off: compiled code
# draws its dropout masks from its own RNG, so only without dropout do both runs compute the same thing.
RUN = ["experiment=classify_demo", *TINY_BERT, "trainer.max_epochs=1", "++trainer.limit_train_batches=3",
       "++trainer.limit_val_batches=1", "data.max_length=16", "test=false", "export=false",
       "callbacks.rich_progress_bar=null", "seed=1", "model.dropout=0.0"]


@pytest.mark.slow  # inductor compiles the training and evaluation graphs with a C++ compiler: ~1 min on 2 cores
def test_compiled_model_trains_like_eager(tmp_path) -> None:
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    compiled = train(compose_run_config(tmp_path / "compiled", [*RUN, "model.compile=true"]))
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    torch._dynamo.reset()
    eager = train(compose_run_config(tmp_path / "eager", RUN))
    assert graphs >= 2  # a training and an evaluation graph at least: the model did run compiled
    assert compiled["status"] == eager["status"] == "completed"
    assert compiled["val"]["val/loss"] == pytest.approx(eager["val"]["val/loss"], abs=1e-4)
    assert compiled["val"]["val/acc"] == eager["val"]["val/acc"]


@pytest.mark.parametrize(("overrides", "inference_mode"), [
    ([], True), (["model.compile=true"], False), (["model.compile=true", "++trainer.inference_mode=true"], True)])
def test_compiled_models_evaluate_under_no_grad(compose_cfg, overrides: list[str], inference_mode: bool) -> None:
    """Inference tensors (the test loop's batches) fail the guards of the graph compiled for validation: a compiled
    model evaluates under no_grad, so the test pass reuses that graph; a setting of the user's own is kept."""
    trainer = build_trainer(compose_cfg(["experiment=classify_demo", *overrides]), loggers=[], callbacks=[])
    assert trainer.validate_loop.inference_mode is trainer.test_loop.inference_mode is inference_mode
