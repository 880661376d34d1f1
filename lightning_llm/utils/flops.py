"""Model FLOPs utilisation (MFU): training FLOPs per token and the GPUs' dense peaks per precision, stated
explicitly (Lightning's own table misses recent GPUs and mixes dense and sparse figures)."""

from __future__ import annotations

import re

import torch
from torch import nn

# Dense (no 2:4 sparsity) tensor-core peaks per GPU from NVIDIA's datasheets, FLOP/s: (16-bit, TF32).
# bf16 and fp16 share a peak; 32-true matmuls run as TF32 after torch.set_float32_matmul_precision("high").
# Matched in order against torch.cuda.get_device_name(), so specific names come first (GH200 before H200).
PEAK_FLOPS: tuple[tuple[str, float, float], ...] = (
    (r"GH200", 989e12, 494e12),
    (r"H200 NVL", 835e12, 417e12),
    (r"H200", 989e12, 494e12),          # SXM
    (r"H100 NVL", 835e12, 417e12),
    (r"H100 PCIe", 756e12, 378e12),
    (r"H100", 989e12, 494e12),          # SXM ("NVIDIA H100 80GB HBM3")
    (r"A100", 312e12, 156e12),          # SXM and PCIe, 40 and 80 GB
    (r"L40S", 362e12, 183e12),
    (r"L40\b", 181e12, 90e12),
    (r"L4\b", 121e12, 60e12),
    (r"A10\b", 125e12, 62e12),
)


def peak_flops(device: torch.device | str, precision: str | int = "bf16-mixed") -> float | None:
    """Dense peak FLOP/s of one GPU for a Lightning precision (`trainer.precision`). `device` is a torch device
    or a name like torch.cuda.get_device_name()'s. None for CPUs, fp64/fp8 and GPUs missing from the table."""
    if isinstance(device, str) and re.fullmatch(r"(cuda|cpu|mps)(:\d+)?", device):
        device = torch.device(device)
    if isinstance(device, torch.device):
        if device.type != "cuda":
            return None
        device = torch.cuda.get_device_name(device)
    text = str(precision)
    column = 1 if text.startswith(("bf16", "16")) else 2 if text.startswith("32") else None
    if column is None:
        return None
    for row in PEAK_FLOPS:
        if re.search(row[0], device, flags=re.IGNORECASE):
            return row[column]
    return None


def matmul_params(model: nn.Module) -> int:
    """Parameters that cost a multiply-add per token: all of them except embedding lookups, but including the
    output projection even when it shares its weight with the input embedding (GPT-2)."""
    params = {id(p): p.numel() for p in model.parameters()}
    lookups = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None:
        lookups.discard(id(output.weight))
    return sum(n for key, n in params.items() if key not in lookups)


def training_flops_per_token(n_matmul_params: int, n_layers: int, hidden_size: int, seq_len: int) -> float:
    """Forward + backward FLOPs per token: 6N for the weights plus 12*L*H*T for attention scores and values
    (PaLM, appendix B; recomputed activations are not counted, by convention)."""
    return 6.0 * n_matmul_params + 12.0 * n_layers * hidden_size * seq_len


def mfu(tokens_per_sec: float, flops_per_token: float, peak_flops_per_device: float, n_devices: int = 1) -> float:
    """Achieved model FLOP/s over the peak of all devices (0..1)."""
    return tokens_per_sec * flops_per_token / (peak_flops_per_device * n_devices)
