"""Every config file composes, alone and in the combinations users type."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightning_llm.config import CONFIG_DIR

GROUP_FILES = sorted(p for p in Path(CONFIG_DIR).glob("*/*.yaml") if p.parent.name != "hydra")


@pytest.mark.parametrize("path", GROUP_FILES, ids=lambda p: f"{p.parent.name}={p.stem}")
def test_every_group_option_composes(compose_cfg, path: Path) -> None:
    cfg = compose_cfg([f"{path.parent.name}={path.stem}"])
    assert cfg.task_name
    assert cfg.model._target_.startswith("lightning_llm.")


def test_root_keys_of_design(compose_cfg) -> None:
    cfg = compose_cfg()
    for key in ("task_name", "seed", "train", "test", "ckpt_path", "optimized_metric", "tags"):
        assert key in cfg, key


def test_eval_config_composes(compose_cfg) -> None:
    cfg = compose_cfg(["ckpt_path=x.ckpt", "data=text_classification"], config_name="eval")
    assert cfg.ckpt_path == "x.ckpt"
