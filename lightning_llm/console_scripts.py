"""The console scripts (pyproject.toml [project.scripts]): each imports its entry point with the cyclic garbage
collector paused, then runs it as its own process (`run`, runtime/process_exit.py).

Why: importing an entry point (torch, transformers, Lightning, torchmetrics, Hydra) creates ~1M objects that live
as long as the process, and the collector's full passes over them took ~0.9 s of a 4.8 s import
(`python -c "import lightning_llm.train"`: 4.77 s, 3.85 s with collection paused; 2 CPU cores). After the
import those objects are frozen (`gc.freeze`: later collections skip them) and collection resumes for everything
the run creates. The price is ~18k import-time garbage objects (a few MB) that are never freed.

The import goes through `importlib` because the point is to control when it happens, and this module imports
nothing of the package at its top (`run`, the fast exit, comes with the entry point, under the pause);
`python -m lightning_llm.X` imports normally."""

from __future__ import annotations

import gc
import importlib
from collections.abc import Callable
from types import ModuleType


def import_entry(module: str) -> ModuleType:
    """`module` imported with garbage collection paused, its objects then frozen."""
    gc.disable()
    try:
        return importlib.import_module(module)
    finally:
        gc.freeze()
        gc.enable()


def _script(module: str) -> Callable[[], None]:
    def script() -> None:
        import_entry(module).run()

    script.__doc__ = f"The console script of `{module}`."
    return script


llm_train = _script("lightning_llm.train")
llm_eval = _script("lightning_llm.evaluate")
llm_generate = _script("lightning_llm.generate")
llm_predict = _script("lightning_llm.predict")
llm_report = _script("lightning_llm.report")
llm_explain = _script("lightning_llm.explain")
llm_compress = _script("lightning_llm.compress")
