"""Int8 dynamic quantization of a model's Linear layers for CPU inference, written in a form that reloads.

Two backends (`backend=`), both int8 weights with activations quantized per batch at run time:
- `torch_ao`: torch's eager `torch.ao.quantization.quantize_dynamic` (fbgemm kernels). Deprecated since torch 2.10
  in favour of torchao, but still present in torch 2.13 and faster than fp32 on CPU without compiling
  (torchao's eager int8 path was slower than fp32 there; docs/benchmarks.md). Saved as config + a `weights_only` state dict.
- `torchao`: torchao's `quantize_` with `Int8DynamicActivationInt8WeightConfig`, applied through transformers'
  `TorchAoConfig`, so the folder reloads with plain `from_pretrained`. Fast on CPU only under `torch.compile`.
`auto` takes `torch_ao` while torch still has it, else `torchao`. `load_quantized(dir)` reloads either.
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedModel

from lightning_llm.errors import UserError, require
from lightning_llm.runtime.extras import require_extra
from lightning_llm.runtime.model_paths import auto_class

BACKENDS = ("auto", "torch_ao", "torchao")
MARKER = "quantization.json"  # {"method", "backend"}: how load_quantized rebuilds the folder
_STATE_DICT = "model_int8.pt"


def torch_ao_available() -> bool:
    return hasattr(getattr(torch, "ao", None), "quantization") and hasattr(torch.ao.quantization, "quantize_dynamic")


def resolve_backend(backend: str) -> str:
    require(backend in BACKENDS, f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "torch_ao" if torch_ao_available() else "torchao"
    require(backend != "torch_ao" or torch_ao_available(),
            "backend=torch_ao: this torch has no torch.ao.quantization.quantize_dynamic; use backend=torchao")
    if backend == "torchao":
        require_extra("torchao", "compress", "backend=torchao")
    return backend


def _torch_ao_quantize(model: PreTrainedModel) -> PreTrainedModel:
    with warnings.catch_warnings():  # the deprecation notice, said once in the module docstring and README
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.filterwarnings("ignore", message=".*quantize_per_tensor.*deprecated", category=UserWarning)
        return torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)


def _torchao_config() -> Any:
    from torchao.quantization import Int8DynamicActivationInt8WeightConfig
    from transformers import TorchAoConfig

    return TorchAoConfig(Int8DynamicActivationInt8WeightConfig())


def quantize(fp32_dir: Path, model: PreTrainedModel, backend: str) -> PreTrainedModel:
    """The int8 model of `model` (saved as an HF folder at `fp32_dir`); `model` itself is left as it is."""
    if backend == "torch_ao":
        return _torch_ao_quantize(copy.deepcopy(model)).eval()
    return auto_class(model.config).from_pretrained(
        str(fp32_dir), quantization_config=_torchao_config()).eval()


def save_quantized(model: PreTrainedModel, tokenizer: Any, backend: str, folder: Path) -> None:
    """Config, tokenizer, int8 weights and the marker `load_quantized` reads."""
    tokenizer.save_pretrained(folder)
    if backend == "torch_ao":
        model.config.save_pretrained(folder)
        torch.save(model.state_dict(), folder / _STATE_DICT)
    else:
        model.save_pretrained(folder)
    (folder / MARKER).write_text(json.dumps({"method": "dynamic_int8", "backend": backend}) + "\n")


def load_quantized(folder: str | Path) -> PreTrainedModel:
    """A folder written by `llm-compress`, as a model in eval mode (torch_ao: rebuilt from its config, quantized
    the same way, then loaded with `weights_only=True`; torchao: `from_pretrained`)."""
    folder = Path(folder)
    require((folder / MARKER).is_file(), f"model_path: {folder} has no {MARKER} (not written by llm-compress)")
    backend = json.loads((folder / MARKER).read_text())["backend"]
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    cls = auto_class(config)
    if backend == "torchao":
        require_extra("torchao", "compress", f"loading {folder}")
        return cls.from_pretrained(folder).eval()
    if not torch_ao_available():
        raise UserError(f"model_path: {folder} was quantized with torch.ao, which this torch no longer has")
    model = _torch_ao_quantize(cls.from_config(config).eval())
    model.load_state_dict(torch.load(folder / _STATE_DICT, map_location="cpu", weights_only=True))
    return model.eval()


def folder_bytes(folder: Path) -> int:
    """Bytes of the model weights in a folder (safetensors / .bin / .pt files; config and tokenizer excluded)."""
    return sum(p.stat().st_size for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".pt"))
