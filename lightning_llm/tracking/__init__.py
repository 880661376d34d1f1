"""Experiment tracking: loggers (W&B, CSV, TensorBoard) and what a sweep job knows about itself."""
