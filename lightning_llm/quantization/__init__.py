"""Model compression for inference: int8 quantization."""
