"""lightning-llm: config-driven experiments for Hugging Face language models on PyTorch Lightning."""

import logging
import os
import re

# Fast tokenizers deadlock or warn when a process forks (dataloader workers, datasets' num_proc, W&B's service)
# after their thread pool has run in the parent. Unless the user chose, the pool is off except while the data
# module tokenizes in this process (`lightning_llm.data.base.parallel_tokenization`).
TOKENIZERS_PARALLELISM_CHOSEN = "TOKENIZERS_PARALLELISM" in os.environ
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# torchao (the compress extra) is imported by transformers whenever it is installed, in every run, often before an
# entry point starts. Its PyPI wheel ships CUDA kernels that fail to load on CPU-only torch and it warns that Triton
# is missing (neither is used on CPU), and torch warns that torchao registers its enums with pytree. Silenced here,
# message by message, so that they are filtered before anything imports transformers.
_TORCHAO_IMPORT_NOISE = {
    "torchao": re.compile(r"Failed to load .*: Could not load this library"),
    "torchao.kernel.intmm": re.compile(r"Warning: Detected no triton"),
    "torch.utils._pytree": re.compile(r".* is an Enum subclass and is now natively supported by torch\.compile"),
}
for _name, _pattern in _TORCHAO_IMPORT_NOISE.items():
    logging.getLogger(_name).addFilter(lambda record, p=_pattern: not p.match(record.getMessage()))

__version__ = "0.1.0"
