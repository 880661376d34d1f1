#!/usr/bin/env bash
# GPU check: train a GPT-2-small-sized model (124M) from scratch in bf16 for a fixed number of steps and print
# tokens/s, MFU and peak memory on 1 GPU, then on 2 GPUs with DDP when there are 2 or more. Under 5 minutes
# including the install, for a borrowed accelerator. Extra arguments go to scripts/gpu/check.py (run as `python -m scripts.gpu.check` from the repository root), e.g.
#   bash scripts/gpu_check.sh                    # CUDA machine
#   bash scripts/gpu_check.sh --steps 100 --compile
#   bash scripts/gpu_check.sh --tiny             # the same logic on CPU with a tiny model
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1

if ! "$PYTHON" -c "import lightning_llm" 2>/dev/null; then
  # With the dependencies already there (a prepared image) install only this package: seconds, no network.
  if "$PYTHON" -c "import pytorch_lightning, transformers, hydra, datasets, torchdata, torchmetrics" 2>/dev/null; then
    "$PYTHON" -m pip install -q --no-deps --no-build-isolation -e .
  else
    "$PYTHON" -m pip install -q -e .
  fi
fi

"$PYTHON" -m scripts.gpu.check "$@"
if [[ " $* " != *" --tiny "* ]]; then
  gpus=$("$PYTHON" -c "import torch; print(torch.cuda.device_count())")
  if (( gpus >= 2 )); then
    "$PYTHON" -m scripts.gpu.check --devices 2 "$@"
  else
    echo "gpu_check: $gpus GPU(s) visible, DDP check skipped"
  fi
fi
