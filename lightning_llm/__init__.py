"""lightning-llm: config-driven experiments for Hugging Face language models on PyTorch Lightning.

Importing the package changes one process-wide setting, for correctness: fast tokenizers deadlock or warn when a
process forks (dataloader workers, datasets' num_proc, W&B's service) after their thread pool has run in the
parent, so unless the user chose, the pool is off except while the data module tokenizes in this process
(`lightning_llm.data.base.parallel_tokenization`). Log filters and allocator settings belong to the commands."""

import os

TOKENIZERS_PARALLELISM_CHOSEN = "TOKENIZERS_PARALLELISM" in os.environ
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

__version__ = "0.1.0"
