"""The GPU throughput check (`bash scripts/gpu_check.sh`, or `python -m scripts.gpu.check`)."""
