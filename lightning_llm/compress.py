"""`llm-compress model_path=<run dir | HF dir> method=dynamic_int8`: int8 quantization of a sequence classifier's
Linear layers for CPU, and a report of what it costs and gains, fp32 and int8 side by side in one process:
weight size on disk, CPU latency per test batch (alternating rounds, median), the test score of both and how far
their predictions agree. The score follows the model's `problem_type`: accuracy (single-label), micro F1 at the
threshold (multi-label), RMSE (regression). Writes `<output_dir>/int8_model/` (reload it with
`lightning_llm.quantization.int8.load_quantized`) and `<output_dir>/compress_report.json`.
"""

from __future__ import annotations

from lightning_llm.runtime.console import quiet_known_noise

quiet_known_noise()  # before the imports below bring in transformers (and torchao with it)

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from torchmetrics.functional import mean_squared_error
from torchmetrics.functional.classification import multilabel_f1_score

from lightning_llm.config import CONFIG_PATH
from lightning_llm.config.targets import allowed_targets
from lightning_llm.errors import UserError, require
from lightning_llm.quantization.int8 import folder_bytes, quantize, resolve_backend, save_quantized
from lightning_llm.runtime import builders
from lightning_llm.runtime.checkpoints import saved_run_config
from lightning_llm.runtime.cli import launch, run_or_exit
from lightning_llm.runtime.console import hf_progress_bars_off
from lightning_llm.runtime.model_paths import Accepts, load_model_path
from lightning_llm.utils.io import write_dir_atomic, write_json_atomic

METHODS = ("dynamic_int8",)


def accepts() -> Accepts:
    """The tasks whose models llm-compress quantizes and scores (`compressible`: it reports test accuracy)."""
    return Accepts(lambda cls: cls.compressible, "llm-compress", "quantizes")


def check_settings(cfg: DictConfig) -> str:
    """Every setting, checked before any model is loaded; returns the backend `auto` resolves to."""
    require(not OmegaConf.is_missing(cfg, "model_path") and bool(cfg.model_path),
            "model_path: required (a run directory, a .ckpt file or an HF model directory)")
    require(cfg.method in METHODS, f"method must be one of {', '.join(METHODS)}, got {cfg.method!r}")
    for key in ("latency_batches", "latency_rounds"):
        require(isinstance(cfg[key], int) and cfg[key] >= 1, f"{key} must be an integer >= 1, got {cfg[key]!r}")
    require(cfg.num_threads is None or (isinstance(cfg.num_threads, int) and cfg.num_threads >= 1),
            f"num_threads must be an integer >= 1 or null, got {cfg.num_threads!r}")
    return resolve_backend(cfg.backend)


def _data_config(cfg: DictConfig, where: str) -> DictConfig:
    """`data=` given on the command line, else the data config of the run that wrote the model."""
    if cfg.get("data"):
        return OmegaConf.create(OmegaConf.to_container(cfg.data, resolve=True))  # ${paths.*} resolved here
    saved = saved_run_config(where)  # where: <run>/hf_model or <run>/checkpoints/x.ckpt
    if saved is None or "data" not in saved:
        raise UserError("data: not set and no saved run config next to model_path; pass data=<option> "
                        "(e.g. data=text_classification data.test_file=test.csv)")
    with open_dict(saved):
        saved.paths = cfg.paths  # the saved paths point at the old run's Hydra runtime
    return OmegaConf.create(OmegaConf.to_container(saved, resolve=True)["data"])


def _threshold(cfg: DictConfig, where: str, hparams: dict[str, Any]) -> float:
    """Multi-label decision threshold: `threshold=`, else the training run's `model.threshold`, else 0.5."""
    value = cfg.get("threshold")
    if value is None:
        value = hparams.get("threshold")
    if value is None:
        saved = saved_run_config(where)
        value = OmegaConf.select(saved, "model.threshold", default=None) if saved is not None else None
    value = 0.5 if value is None else float(value)
    require(0.0 <= value <= 1.0, f"threshold must be in [0, 1], got {value}")
    return value


def _inputs(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's inputs of an evaluation batch (not its labels or the data's row numbers)."""
    return {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask", "token_type_ids")}


SINGLE, MULTI, REGRESSION = "single_label_classification", "multi_label_classification", "regression"
# Per problem type: the reported test metric and whether higher is better.
_METRIC = {SINGLE: ("acc", True), MULTI: ("f1_micro", True), REGRESSION: ("rmse", False)}


@torch.inference_mode()
def predictions(model: torch.nn.Module, batches: list[dict[str, torch.Tensor]], problem_type: str = SINGLE,
                threshold: float = 0.5) -> torch.Tensor:
    """What the model predicts, as its `problem_type` reads the logits: class ids, multi-hot label sets (sigmoid
    above `threshold`, as the training metrics binarize) or numbers."""
    logits = torch.cat([model(**_inputs(b)).logits.float() for b in batches])
    if problem_type == MULTI:
        return (logits.sigmoid() > threshold).long()
    if problem_type == REGRESSION:
        return logits[:, 0]
    return logits.argmax(-1)


def score(predicted: torch.Tensor, labels: torch.Tensor, problem_type: str) -> float:
    """The test metric of `_METRIC` with torchmetrics' functions (the ones training logs)."""
    if problem_type == MULTI:
        return float(multilabel_f1_score(predicted, labels.long(), num_labels=labels.shape[-1], average="micro"))
    if problem_type == REGRESSION:
        return float(mean_squared_error(predicted, labels.float(), squared=False))
    return float((predicted == labels).float().mean())


def agreement(fp32: torch.Tensor, int8: torch.Tensor, problem_type: str) -> dict[str, float]:
    """Classifiers: the share of test examples with the same prediction (multi-label: the same label set);
    regression: the largest difference between the two models' numbers."""
    if problem_type == REGRESSION:
        return {"max_abs_difference": float((fp32 - int8).abs().max())}
    same = fp32 == int8
    return {"agreement": float((same.all(-1) if problem_type == MULTI else same).float().mean())}


@torch.inference_mode()
def latency(models: dict[str, torch.nn.Module], batches: list[dict[str, torch.Tensor]], rounds: int) -> dict[str, float]:
    """Median seconds per batch of each model, timed in alternating rounds (order flipped every round) so that
    load from other processes on a shared machine falls on both; one warm-up pass each first."""
    for model in models.values():
        model(**_inputs(batches[0]))
    times: dict[str, list[float]] = {name: [] for name in models}
    names = list(models)
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            start = time.perf_counter()
            for batch in batches:
                models[name](**_inputs(batch))
            times[name].append((time.perf_counter() - start) / len(batches))
    return {name: statistics.median(values) for name, values in times.items()}


def compress(cfg: DictConfig) -> dict[str, Any]:
    backend = check_settings(cfg)
    with hf_progress_bars_off():
        loaded = load_model_path(str(cfg.model_path), accepts())
    model, tokenizer, where = loaded.model.float(), loaded.tokenizer, loaded.source
    problem_type = getattr(model.config, "problem_type", None) or SINGLE
    require(problem_type in _METRIC, f"model_path: problem_type {problem_type!r} is not one llm-compress scores "
                                     f"({', '.join(_METRIC)})")
    threshold = _threshold(cfg, where, loaded.hparams)
    data = _data_config(cfg, where)
    if problem_type != SINGLE:  # encode the test labels as the model reads them (its label ids, its problem type)
        with open_dict(data):
            data.problem_type = problem_type
            if problem_type == MULTI and not data.get("label_names"):
                data.label_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    run_cfg = OmegaConf.create({"data": data, "allow_targets": list(allowed_targets(cfg))})
    datamodule = builders.build_datamodule(run_cfg, tokenizer, objective=loaded.task)
    datamodule.prepare_data()
    datamodule.setup("test")
    datamodule.require_splits("test")
    names = datamodule.model_kwargs().get("label_names")
    model_names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    require(problem_type == REGRESSION or not names or list(names) == model_names,
            f"data: labels {names} differ from the model's {model_names}")
    batches = list(datamodule.test_dataloader())
    labels = torch.cat([b["labels"] for b in batches])

    out = Path(cfg.output_dir)
    with tempfile.TemporaryDirectory() as tmp, hf_progress_bars_off():
        fp32_dir = Path(tmp)
        model.save_pretrained(fp32_dir)  # the fp32 size as exported (and torchao's source)
        fp32_bytes = folder_bytes(fp32_dir)
        int8 = quantize(fp32_dir, model, backend)
    write_dir_atomic(out / "int8_model", lambda folder: save_quantized(int8, tokenizer, backend, folder))
    int8_bytes = folder_bytes(out / "int8_model")

    fp32_preds, int8_preds = (predictions(m, batches, problem_type, threshold) for m in (model, int8))
    previous_threads = torch.get_num_threads()
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    try:
        seconds = latency({"fp32": model, "int8": int8}, batches[:cfg.latency_batches], cfg.latency_rounds)
    finally:
        torch.set_num_threads(previous_threads)
    metric, higher_is_better = _METRIC[problem_type]
    fp32_score, int8_score = (score(p, labels, problem_type) for p in (fp32_preds, int8_preds))
    # How much worse int8 scores: `<metric>_drop` for accuracy / F1, `rmse_rise` for RMSE.
    worse = {f"{metric}_drop": fp32_score - int8_score} if higher_is_better else \
        {f"{metric}_rise": int8_score - fp32_score}
    report = {
        "method": cfg.method, "backend": backend, "model_path": str(cfg.model_path), "loaded_from": where,
        "int8_model": str(out / "int8_model"),
        "size_bytes": {"fp32": fp32_bytes, "int8": int8_bytes, "ratio": fp32_bytes / int8_bytes},
        "latency_ms_per_batch": {"fp32": seconds["fp32"] * 1e3, "int8": seconds["int8"] * 1e3,
                                 "speedup": seconds["fp32"] / seconds["int8"]},
        "timing": {"batch_size": int(batches[0]["labels"].shape[0]), "batches": min(len(batches), cfg.latency_batches),
                   "rounds": cfg.latency_rounds, "threads": cfg.num_threads or previous_threads,
                   "torch": torch.__version__},
        "test": {"examples": int(labels.shape[0]), "problem_type": problem_type, "metric": metric,
                 f"fp32_{metric}": fp32_score, f"int8_{metric}": int8_score, **worse,
                 **agreement(fp32_preds, int8_preds, problem_type),
                 **({"threshold": threshold} if problem_type == MULTI else {})},
        "run_dir": str(out),
    }
    write_json_atomic(out / "compress_report.json", report)
    print(report_table(report))
    return report


def report_table(report: dict[str, Any]) -> str:
    size, speed, test = report["size_bytes"], report["latency_ms_per_batch"], report["test"]
    metric = test.get("metric", "acc")
    change = "drop" if f"{metric}_drop" in test else "rise"
    rows = [("", "fp32", "int8", "fp32/int8"),
            ("weights on disk (MB)", f"{size['fp32'] / 1e6:.3f}", f"{size['int8'] / 1e6:.3f}", f"{size['ratio']:.2f}x"),
            (f"CPU ms / batch of {report['timing']['batch_size']}", f"{speed['fp32']:.1f}", f"{speed['int8']:.1f}",
             f"{speed['speedup']:.2f}x"),
            (f"test {metric} ({test['examples']})", f"{test[f'fp32_{metric}']:.4f}", f"{test[f'int8_{metric}']:.4f}",
             f"{change} {test[f'{metric}_{change}']:+.4f}")]
    lines = [f"{a:<26}{b:>10}{c:>10}{d:>14}" for a, b, c, d in rows]
    agree = f"predictions agree on {test['agreement']:.2%} of the test set" if "agreement" in test else \
        f"predicted values differ by at most {test['max_abs_difference']:.4g}"
    return "\n".join([f"{report['method']} ({report['backend']}), {report['timing']['threads']} thread(s):", *lines,
                      agree])


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="compress")
def _main(cfg: DictConfig) -> None:
    run_or_exit(compress, cfg)


def main() -> None:
    launch(_main, "compress")



if __name__ == "__main__":
    main()
