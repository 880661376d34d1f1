"""Keep API keys and tokens out of saved configs, printed trees, logs and W&B: they come from the environment."""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from typing import Any

from omegaconf import DictConfig, OmegaConf

from lightning_llm.errors import UserError

REDACTED = "***REDACTED***"
# `token` only as a whole last word: `max_new_tokens`, `pad_token_id`, `tokenizer_name_or_path` are not secrets.
_SECRET_KEY = re.compile(r"api_?key|private_?key|secret|passw(or)?d|credential|authorization|auth_?token|"
                         r"(^|_)token$|^auth$", re.IGNORECASE)
_SECRET_ENV = re.compile(r"(API_KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)
# Tokenizer special tokens are strings like "<pad>", not credentials.
_SAFE_KEYS = {f"{name}_token" for name in ("pad", "bos", "eos", "unk", "sep", "cls", "mask")}
ENV_HINT = "credentials come from the environment only (WANDB_API_KEY, HF_TOKEN, ...), never from configs"


def secret_values() -> list[str]:
    """Values of environment variables that look like credentials (long enough to be worth hiding)."""
    return [v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 8]


def is_secret_key(key: str) -> bool:
    return key.lower() not in _SAFE_KEYS and bool(_SECRET_KEY.search(key))


def redact(obj: Any, values: list[str] | None = None) -> Any:
    """Return a copy of a plain container with secret-looking keys and known secret values replaced."""
    values = secret_values() if values is None else values
    if isinstance(obj, dict):
        return {k: (REDACTED if is_secret_key(str(k)) and obj[k] not in (None, "", False) and not
                    isinstance(obj[k], (dict, list)) else redact(v, values)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, values) for v in obj)
    if isinstance(obj, str):
        for secret in values:
            obj = obj.replace(secret, REDACTED)
        return obj
    return obj


def _is_interpolation(value: str) -> bool:
    return value.strip().startswith("${")


def refuse_secret_overrides(args: Iterable[str]) -> None:
    """Refuse command-line overrides that carry a credential, before Hydra writes them to .hydra/*.yaml (and W&B
    copies the command line). Interpolations are left to `check_config_secrets`."""
    values = secret_values()
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or not value or value in ("null", "~") or _is_interpolation(value):
            continue
        leaf = key.lstrip("+~").rsplit(".", 1)[-1]
        if is_secret_key(leaf) or any(secret in value for secret in values):
            raise UserError(f"{key.lstrip('+~')}: looks like a credential on the command line; {ENV_HINT}")


def check_config_secrets(cfg: DictConfig, saved_verbatim: tuple[str, ...] = ("model", "data")) -> None:
    """Refuse a composed config that holds a credential: a secret-looking key with a literal value anywhere, or,
    in the groups saved verbatim as hyper-parameters (checkpoints, hparams.yaml, the exported config.json), a
    value that resolves to a credential from the environment (`${oc.env:HF_TOKEN}`). Elsewhere such references
    are redacted when logged. The libraries read their credentials from the environment themselves."""
    values = secret_values()

    def walk(raw: Any, resolved: Any, where: str, check_values: bool) -> None:
        if isinstance(raw, dict):
            for key in raw:
                path = f"{where}.{key}" if where else str(key)
                value = raw[key]
                if is_secret_key(str(key)) and isinstance(value, str) and value and not _is_interpolation(value):
                    raise UserError(f"{path}: holds a literal credential; {ENV_HINT}")
                walk(value, resolved.get(key) if isinstance(resolved, dict) else None, path,
                     check_values or (not where and key in saved_verbatim))
        elif isinstance(raw, list):
            for i, item in enumerate(raw):
                walk(item, resolved[i] if isinstance(resolved, list) and i < len(resolved) else None,
                     f"{where}[{i}]", check_values)
        elif check_values and isinstance(resolved, str) and any(secret in resolved for secret in values):
            raise UserError(f"{where}: resolves to a credential from the environment, and {where.split('.')[0]} "
                            f"settings are saved in checkpoints; {ENV_HINT}")

    walk(OmegaConf.to_container(cfg, resolve=False), OmegaConf.to_container(cfg, resolve=True), "", False)
