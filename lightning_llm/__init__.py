"""lightning-llm: config-driven experiments for Hugging Face language models on PyTorch Lightning."""

import os

# Fast tokenizers deadlock or warn when dataloader workers fork after the tokenizer has run in the parent.
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
