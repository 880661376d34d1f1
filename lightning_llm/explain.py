"""`llm-explain`: which words made the model decide — token attributions with Captum's integrated gradients.

Writes `attributions.jsonl` (one object per text: tokens, token scores, words, word scores, prediction,
probability, convergence delta), `attributions.html` (self-contained, words coloured by score) and with
`png=true` `attributions.png` (a heatmap). Classifiers explain a class (`target=`, default the predicted one);
causal LMs explain a continuation (`target_text=`, default the most likely next token).
"""

from __future__ import annotations

from lightning_llm.runtime.console import quiet_known_noise

quiet_known_noise()  # before the imports below bring in transformers (and torchao with it)

import json
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from lightning_llm import registry
from lightning_llm.config import CONFIG_PATH
from lightning_llm.errors import require
from lightning_llm.interpret.attributions import class_index, explain_causal, explain_classification
from lightning_llm.interpret.render import html_page, write_png
from lightning_llm.runtime.cli import launch, run_or_exit
from lightning_llm.runtime.console import hf_progress_bars_off
from lightning_llm.runtime.extras import require_extra
from lightning_llm.runtime.inputs import read_inline_or_file
from lightning_llm.runtime.model_paths import Accepts, load_model_path
from lightning_llm.utils.io import write_text_atomic


def accepts() -> Accepts:
    """The tasks whose models llm-explain attributes: toward a label or toward a continuation (`explain_as`)."""
    return Accepts(lambda cls: cls.explain_as, "llm-explain", "explains")


def check_settings(cfg: DictConfig) -> None:
    """Every setting, checked before any model is loaded."""
    require(not OmegaConf.is_missing(cfg, "model_path") and bool(cfg.model_path),
            "model_path: required (a .ckpt file, a run directory, an HF model directory or a hub id)")
    require((cfg.text is None) != (cfg.texts_file is None), "text / texts_file: give exactly one of them")
    require(isinstance(cfg.n_steps, int) and cfg.n_steps >= 2, f"n_steps must be an integer >= 2, got {cfg.n_steps!r}")
    require(cfg.internal_batch_size is None or (isinstance(cfg.internal_batch_size, int) and cfg.internal_batch_size >= 1),
            f"internal_batch_size must be an integer >= 1 or null, got {cfg.internal_batch_size!r}")
    require(cfg.max_length is None or (isinstance(cfg.max_length, int) and cfg.max_length >= 2),
            f"max_length must be an integer >= 2 or null, got {cfg.max_length!r}")
    require(bool(cfg.output_dir), "output_dir: required")
    require_extra("captum.attr", "explain", "llm-explain")
    if cfg.png:
        require_extra("matplotlib", "report", "png=true")


def read_texts(cfg: DictConfig) -> list[str]:
    return read_inline_or_file(cfg.text, cfg.texts_file, "text")


def explain(cfg: DictConfig) -> list[dict[str, Any]]:
    """Check, load, attribute every text, write JSONL + HTML (+ PNG); returns the records."""
    check_settings(cfg)
    texts = read_texts(cfg)
    with hf_progress_bars_off():
        loaded = load_model_path(str(cfg.model_path), accepts(), bool(cfg.trust_remote_code))
    model, tokenizer = loaded.model.float(), loaded.tokenizer
    if registry.get(loaded.task).explain_as == "label":
        require(cfg.target_text is None, "target_text: only for causal LMs; a classifier takes target=<label>")
        target = class_index(model, cfg.target)
        records = [explain_classification(model, tokenizer, t, target, cfg.n_steps, cfg.internal_batch_size,
                                          cfg.max_length) for t in texts]
    else:
        require(cfg.target is None, "target: only for classifiers; a causal LM takes target_text=<continuation>")
        records = [explain_causal(model, tokenizer, t, cfg.target_text, cfg.n_steps, cfg.internal_batch_size)
                   for t in texts]
    out = Path(cfg.output_dir)
    write_text_atomic(out / "attributions.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    write_text_atomic(out / "attributions.html", html_page(records, f"Attributions: {cfg.model_path}"))
    if cfg.png:
        write_png(records, out / "attributions.png")
    for i, record in enumerate(records, 1):
        top = sorted(zip(record["words"], record["word_scores"]), key=lambda ws: -abs(ws[1]))[:5]
        what = record.get("predicted_label", repr(record.get("target_text")))
        warn = " (large: raise n_steps)" if _unconverged(record) else ""
        score = f"value={record['value']:.3f}" if "value" in record else f"p={record['probability']:.3f}"
        print(f"[{i}] {what} {score} delta={record['delta']:.2g}{warn} top: "
              + ", ".join(f"{w} {s:+.3f}" for w, s in top))
    print(f"wrote {len(records)} explanation(s) to {out}/attributions.{{jsonl,html{',png' if cfg.png else ''}}}")
    return records


def _unconverged(record: dict[str, Any]) -> bool:
    """The convergence delta is over 5% of what the attributions explain (f(x) - f(baseline)): a saturated model
    changes within a small part of the integration path, and more steps are needed."""
    base = record.get("baseline_probability", record.get("baseline_log_probability"))
    value = record.get("target_probability", record.get("log_probability"))
    return abs(record["delta"]) > 0.05 * abs(value - base) + 1e-4


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="explain")
def _main(cfg: DictConfig) -> None:
    run_or_exit(explain, cfg)


def main() -> None:
    launch(_main, "explain")



if __name__ == "__main__":
    main()
