"""`llm-predict`: a model's predictions for a file, no training split needed.

What a prediction is, how the input file is read and encoded, and the file it is written to are the task's own
(`predict`, `predictions_file` of its module class in lightning_llm/tasks/): token classification writes JSONL
`{"words", "tags"}`, extractive QA run_qa's predictions JSON `{id: answer}`, sequence classification JSONL `{"text",
"label", "probability"}`, sequence-to-sequence JSONL `{"source", "prediction"}`. The model is a .ckpt, a run directory or an exported HF model directory.
"""

from __future__ import annotations

from lightning_llm.runtime.console import quiet_known_noise

quiet_known_noise()  # before the imports below bring in transformers (and torchao with it)

import json
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from transformers import PreTrainedModel

from lightning_llm import registry
from lightning_llm.config import CONFIG_PATH
from lightning_llm.config.targets import allowed_targets
from lightning_llm.errors import require
from lightning_llm.runtime.cli import launch, run_or_exit
from lightning_llm.runtime.console import discard_run_dir, hf_progress_bars_off
from lightning_llm.runtime.model_paths import Accepts, load_model_path
from lightning_llm.utils.io import write_json_atomic, write_text_atomic


def accepts() -> Accepts:
    """The tasks whose module class implements `predict`."""
    return Accepts(lambda cls: cls.predict is not None, "llm-predict", "predicts with")


# ----------------------------------------------------------------------------------------------- loading
def load_for_prediction(model_path: str, trust_remote_code: bool = False,
                        allowed: tuple[str, ...] = ()) -> tuple[PreTrainedModel, Any, str, dict]:
    """(HF model in eval mode, tokenizer, task, settings) of any `model_path=` form. `settings` holds what the run
    knew (the task's `prediction_settings`), so that predictions match its evaluation: from its saved config, a
    checkpoint's own hyper-parameters over those."""
    loaded = load_model_path(model_path, accepts(), trust_remote_code, allowed)
    keys = registry.get(loaded.task).prediction_settings
    own = {k: loaded.hparams[k] for k in keys if loaded.hparams.get(k) is not None}
    settings = _run_settings(loaded.run_dir, keys) if loaded.run_dir is not None else {}
    return loaded.model, loaded.tokenizer, loaded.task, {**settings, **own}


def _run_settings(run_dir: Path, keys: tuple[str, ...]) -> dict[str, Any]:
    """`keys` of the run that trained the model, from its saved config (its `model` group over its `data` group)."""
    path = run_dir / ".hydra" / "config.yaml"
    if not path.is_file():
        return {}
    saved = OmegaConf.load(path)
    out = {}
    for group in ("data", "model"):
        node = saved.get(group)
        if not OmegaConf.is_config(node):
            continue
        for key in keys:
            value = OmegaConf.select(node, key, default=None)
            if isinstance(value, (int, float, bool, str)):
                out[key] = value
    return out


# ----------------------------------------------------------------------------------------------- entry point
def predict(cfg: DictConfig) -> dict[str, Any]:
    """Check settings, load, predict and write `output_file`; returns {task, output_file, count}."""
    require(not OmegaConf.is_missing(cfg, "model_path") and bool(cfg.model_path),
            "model_path: required (a .ckpt file, a run directory or an HF model directory)")
    require(not OmegaConf.is_missing(cfg, "input_file") and bool(cfg.input_file), "input_file: required")
    require(isinstance(cfg.batch_size, int) and cfg.batch_size >= 1, f"batch_size must be an integer >= 1, "
                                                                     f"got {cfg.batch_size!r}")
    require(Path(cfg.input_file).is_file(), f"input_file: file not found: {cfg.input_file}")
    with hf_progress_bars_off():
        model, tokenizer, task, settings = load_for_prediction(str(cfg.model_path), bool(cfg.trust_remote_code),
                                                                 allowed_targets(cfg))
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device)
    task_cls = registry.get(task)
    result = task_cls.predict(model, tokenizer, cfg, settings, device)
    output = Path(cfg.output_file) if cfg.output_file else Path(cfg.paths.output_dir) / task_cls.predictions_file
    if isinstance(result, dict):
        write_json_atomic(output, result)
    else:
        write_text_atomic(output, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in result))
    print(f"wrote {len(result)} {task} prediction(s) to {output}")
    return {"task": task, "output_file": str(output), "count": len(result)}


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="predict")
def _main(cfg: DictConfig) -> None:
    run_or_exit(predict, cfg)
    if cfg.output_file:  # written where asked: no outputs/predict/runs/<timestamp>/ holding only Hydra's files
        discard_run_dir(cfg.paths.output_dir, cfg.task_name)


def main() -> None:
    launch(_main, "predict")



if __name__ == "__main__":
    main()
