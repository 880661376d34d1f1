"""Keep API keys and tokens out of saved configs, printed trees, logs and W&B."""

from __future__ import annotations

import os
import re
from typing import Any

REDACTED = "***REDACTED***"
_SECRET_KEY = re.compile(r"(api_?key|token|secret|password|passwd|credential|auth)", re.IGNORECASE)
_SECRET_ENV = re.compile(r"(API_KEY|TOKEN|SECRET|PASSWORD|CREDENTIAL)", re.IGNORECASE)
# Keys that look secret by name but hold harmless numbers or ids in our configs.
_SAFE_KEYS = {"pad_token_id", "bos_token_id", "eos_token_id", "sep_token_id", "cls_token_id", "mask_token_id",
              "unk_token_id", "decoder_start_token_id", "max_new_tokens", "block_size", "tokenizer_name_or_path",
              "max_tokens", "num_tokens", "vocab_size", "token_type_ids", "tokens_per_sec"}


def secret_values() -> list[str]:
    """Values of environment variables that look like credentials (long enough to be worth hiding)."""
    return [v for k, v in os.environ.items() if _SECRET_ENV.search(k) and len(v) >= 8]


def _is_secret_key(key: str) -> bool:
    return key not in _SAFE_KEYS and not key.endswith("_token_id") and bool(_SECRET_KEY.search(key))


def redact(obj: Any, values: list[str] | None = None) -> Any:
    """Return a copy of a plain container with secret-looking keys and known secret values replaced."""
    values = secret_values() if values is None else values
    if isinstance(obj, dict):
        return {k: (REDACTED if _is_secret_key(str(k)) and obj[k] not in (None, "", False) and not
                    isinstance(obj[k], (dict, list)) else redact(v, values)) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(redact(v, values) for v in obj)
    if isinstance(obj, str):
        for secret in values:
            obj = obj.replace(secret, REDACTED)
        return obj
    return obj
