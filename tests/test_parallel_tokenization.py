"""Fast tokenizers encode on every core while the data module tokenizes, and with their pool off after it: a process
forked later (dataloader workers, datasets' num_proc) must not use a pool it did not inherit (older tokenizers
warn or deadlock there; the installed 0.23.3 has no fork warning left, tokenizers PR #2268 made its pool fork-safe,
so a fork test cannot tell the two apart here)."""

from __future__ import annotations

import os

import pytest

import lightning_llm
from lightning_llm.data.base import parallel_tokenization
from tests.conftest import TINY_BERT


def test_the_users_choice_and_forking_workers_keep_the_pool_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TOKENIZERS_PARALLELISM", "false")
    with parallel_tokenization(enabled=False):
        assert os.environ["TOKENIZERS_PARALLELISM"] == "false"
    monkeypatch.setattr(lightning_llm, "TOKENIZERS_PARALLELISM_CHOSEN", True)
    with parallel_tokenization(enabled=True):
        assert os.environ["TOKENIZERS_PARALLELISM"] == "false"


def test_the_data_module_tokenizes_with_the_pool(compose_cfg, monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    from lightning_llm.runtime import builders
    from lightning_llm.tasks.classification import TextClassificationDataModule

    monkeypatch.setattr(lightning_llm, "TOKENIZERS_PARALLELISM_CHOSEN", False)
    seen = []
    process = TextClassificationDataModule._process
    monkeypatch.setattr(TextClassificationDataModule, "_process",
                        lambda self, raw: seen.append(os.environ["TOKENIZERS_PARALLELISM"]) or process(self, raw))
    builders.build_data_and_model(compose_cfg([*TINY_BERT, f"paths.cache_dir={tmp_path / 'cache'}"]))  # cold cache
    assert seen == ["true"] and os.environ["TOKENIZERS_PARALLELISM"] == "false"
