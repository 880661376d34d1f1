"""`llm-generate`: text from a checkpoint, a run dir, an HF model dir or a hub id.

Causal LMs continue each prompt (left-padded batches); one whose tokenizer has a chat template (a `data=chat`
run's export) replies instead: the prompt becomes a user message (after `system=`), or `messages_file=` holds
conversations, rendered with the template and generation prompt, and replies stop at its end of turn; encoder-decoder models read each prompt as the
source text and return the target text (right-padded batches). The KV cache is on; a single prompt streams to the
terminal. Settings left null come from the model's own generation_config (an encoder-decoder run's export carries its
num_beams, max_new_tokens, ...). Every run writes JSONL: one `{"prompt": ..., "generations": [...]}` object per
prompt, in prompt order.
"""

from __future__ import annotations

from lightning_llm.runtime.console import quiet_known_noise

quiet_known_noise()  # before the imports below bring in transformers (and torchao with it)

import copy
import json
import sys
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from transformers import (
    GenerationConfig,
    PreTrainedModel,
    TextStreamer,
    set_seed,
)

from lightning_llm.config import CONFIG_PATH
from lightning_llm.data import chat_templates
from lightning_llm.errors import require
from lightning_llm.modules.generation import generate_ids
from lightning_llm.runtime.cli import launch, run_or_exit
from lightning_llm.runtime.console import hf_progress_bars_off
from lightning_llm.runtime.inputs import read_inline_or_file
from lightning_llm.runtime.model_paths import Accepts, load_model_path
from lightning_llm.utils.io import write_text_atomic

DEFAULT_MAX_NEW_TOKENS = 50  # when neither the command line nor the model's generation_config sets it
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ----------------------------------------------------------------------------------------------- settings
def check_settings(cfg: DictConfig) -> None:
    """Every setting, checked before any model is loaded."""
    given = [k for k in ("prompt", "prompts_file", "messages_file") if cfg.get(k) is not None]
    require(len(given) == 1, "prompt / prompts_file / messages_file: give exactly one of them")
    require(cfg.get("chat_template", "auto") in ("auto", True, False),
            f"chat_template must be auto, true or false, got {cfg.get('chat_template')!r}")
    check_generation_settings(cfg)


def check_generation_settings(cfg: DictConfig) -> None:
    """`model_path` and the generation settings (llm-generate's and llm-chat's)."""
    require(not OmegaConf.is_missing(cfg, "model_path") and bool(cfg.model_path),
            "model_path: required (a .ckpt file, a run directory, an HF model directory or a hub id)")
    for key in ("max_new_tokens", "num_beams", "num_return_sequences", "batch_size"):
        optional = key in ("max_new_tokens", "num_beams")  # null: the model's generation_config
        require((optional and cfg[key] is None) or (isinstance(cfg[key], int) and cfg[key] >= 1),
                f"{key} must be an integer >= 1{' or null' if optional else ''}, got {cfg[key]!r}")
    require(cfg.get("length_penalty") is None or isinstance(cfg.length_penalty, (int, float)),
            f"length_penalty must be a number or null, got {cfg.get('length_penalty')!r}")
    require(cfg.get("no_repeat_ngram_size") is None or (isinstance(cfg.no_repeat_ngram_size, int)
                                                        and cfg.no_repeat_ngram_size >= 0),
            f"no_repeat_ngram_size must be an integer >= 0 or null, got {cfg.get('no_repeat_ngram_size')!r}")
    require(cfg.top_p is None or 0 < cfg.top_p <= 1, f"top_p must be in (0, 1], got {cfg.top_p}")
    require(cfg.top_k is None or (isinstance(cfg.top_k, int) and cfg.top_k >= 0),
            f"top_k must be an integer >= 0 (0 = off), got {cfg.top_k!r}")
    require(not cfg.do_sample or cfg.temperature is None or cfg.temperature > 0,
            f"temperature must be > 0 when sampling (do_sample=true), got {cfg.temperature}")
    require(cfg.repetition_penalty is None or cfg.repetition_penalty > 0,
            f"repetition_penalty must be > 0 (1.0 = off), got {cfg.repetition_penalty}")
    require(cfg.dtype is None or cfg.dtype in _DTYPES, f"dtype must be one of {sorted(_DTYPES)} or null")


def generation_config(model: PreTrainedModel, cfg: DictConfig, pad_token_id: int | None) -> GenerationConfig:
    """The model's own generation_config (EOS, decoder start, and for an encoder-decoder export its beams, length...)
    updated with the settings the user gave (transformers' names; null = keep the model's)."""
    config = copy.deepcopy(model.generation_config)
    given = {key: cfg.get(key) for key in ("max_new_tokens", "do_sample", "num_beams", "repetition_penalty",
                                           "length_penalty", "no_repeat_ngram_size")}
    config.update(**{k: v for k, v in given.items() if v is not None}, use_cache=True, pad_token_id=pad_token_id)
    if config.max_new_tokens is None:
        config.max_new_tokens = DEFAULT_MAX_NEW_TOKENS
    require(config.do_sample or cfg.num_return_sequences <= (config.num_beams or 1),
            f"num_return_sequences={cfg.num_return_sequences} needs do_sample=true or num_beams >= "
            f"{cfg.num_return_sequences} (greedy search returns one sequence)")
    config.update(num_return_sequences=cfg.num_return_sequences)
    if config.do_sample:
        config.update(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
    return config


def read_prompts(cfg: DictConfig) -> list[str]:
    return read_inline_or_file(cfg.prompt, cfg.prompts_file, "prompt")


def uses_chat_template(cfg: DictConfig, tokenizer: Any, model: PreTrainedModel) -> bool:
    """`chat_template=auto`: a decoder whose tokenizer has a chat template (a data=chat run's export) chats."""
    setting = cfg.get("chat_template", "auto")
    has = bool(getattr(tokenizer, "chat_template", None)) and not model.config.is_encoder_decoder
    require(setting is not True or has, "chat_template=true: the model's tokenizer has no chat template")
    return has if setting == "auto" else bool(setting)


def read_conversations(cfg: DictConfig) -> list[list[dict[str, str]]]:
    """The conversations to reply to: `messages_file` (JSONL, a `messages` list per line), or each prompt as a
    user message, after `system` when given."""
    if cfg.get("messages_file") is None:
        system = [{"role": "system", "content": str(cfg.system)}] if cfg.get("system") else []
        return [system + [{"role": "user", "content": p}] for p in read_prompts(cfg)]
    path = Path(str(cfg.messages_file))
    require(path.is_file(), f"messages_file: file not found: {path}")
    conversations = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                messages = json.loads(line)["messages"]
                ok = isinstance(messages, list) and messages and all(
                    isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
                    for m in messages)
            except (json.JSONDecodeError, KeyError, TypeError):
                ok = False
            require(ok, f"messages_file: {path} line {n} needs a JSON object with a 'messages' list of "
                        f"{{role, content}} objects")
            conversations.append(messages)
    require(bool(conversations), f"messages_file: no conversations in {path}")
    return conversations


# ----------------------------------------------------------------------------------------------- loading
def accepts() -> Accepts:
    """The tasks whose models generate text (`generates`: decoder-only LMs and encoder-decoders)."""
    return Accepts(lambda cls: cls.generates, "llm-generate", "generates with")


def load_for_generation(model_path: str, trust_remote_code: bool = False) -> tuple[PreTrainedModel, Any]:
    """(HF model in eval mode, tokenizer) of any `model_path=` form that holds a decoder-only LM or an
    encoder-decoder."""
    loaded = load_model_path(model_path, accepts(), trust_remote_code)
    return loaded.model, loaded.tokenizer


def context_length(model: PreTrainedModel) -> int | None:
    config = model.config
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


def fit_prompts(model: PreTrainedModel, prompt_ids: list[list[int]], max_new_tokens: int) -> list[list[int]]:
    """Prompts checked against the model's context. A causal LM's prompt + new tokens must fit (an error); a
    encoder-decoder's source longer than its positions is cut to them (EOS kept, as the training data is), with
    one warning line counting the cut sources."""
    limit = context_length(model)
    if not limit:
        return prompt_ids
    if not model.config.is_encoder_decoder:
        for i, ids in enumerate(prompt_ids):
            require(len(ids) + max_new_tokens <= limit,
                    f"prompt {i + 1}: {len(ids)} tokens + max_new_tokens={max_new_tokens} exceed the model's "
                    f"context of {limit} tokens: shorten the prompt or lower max_new_tokens")
        return prompt_ids
    cut = sum(len(ids) > limit for ids in prompt_ids)
    if cut:
        print(f"warning: {cut} of {len(prompt_ids)} sources are longer than the model's {limit} positions and were "
              f"cut to them", file=sys.stderr)
    return [ids[:limit - 1] + ids[-1:] if len(ids) > limit else ids for ids in prompt_ids]


# ----------------------------------------------------------------------------------------------- generating
def generate(cfg: DictConfig) -> list[dict[str, Any]]:
    """Check settings, load, generate, print (or stream) and write JSONL; returns the records."""
    check_settings(cfg)
    with hf_progress_bars_off():  # loading bars would interleave with the streamed text
        model, tokenizer = load_for_generation(str(cfg.model_path), bool(cfg.trust_remote_code))
    chat = uses_chat_template(cfg, tokenizer, model)
    require(chat or cfg.get("messages_file") is None, "messages_file: the model's tokenizer has no chat template")
    conversations = read_conversations(cfg) if chat else None
    prompts = [c[-1]["content"] for c in conversations] if chat else read_prompts(cfg)
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device=device, dtype=_DTYPES[cfg.dtype] if cfg.dtype else None)
    config = generation_config(model, cfg, tokenizer.pad_token_id)
    if chat:  # the prompt rendered as the template's conversation; replies stop at its end of turn
        chat_templates.chat_generation_config(tokenizer, config)
    encoded = ([chat_templates.prompt_ids(tokenizer, c) for c in conversations] if chat
               else [tokenizer(p)["input_ids"] for p in prompts])
    prompt_ids = fit_prompts(model, encoded, config.max_new_tokens)
    encoder_decoder = bool(model.config.is_encoder_decoder)
    stream = len(prompts) == 1 and cfg.num_return_sequences == 1 and (config.num_beams or 1) == 1
    streamer = TextStreamer(tokenizer, skip_prompt=chat, skip_special_tokens=True) if stream else None
    set_seed(cfg.seed)
    new_ids = generate_ids(model, prompt_ids, config, cfg.batch_size, streamer)
    records = [{"prompt": p, "generations": [t.strip() if encoder_decoder or chat else t
                                             for t in tokenizer.batch_decode(ids, skip_special_tokens=True)]}
               for p, ids in zip(prompts, new_ids)]
    if chat:
        for record, conversation in zip(records, conversations):
            record["messages"] = conversation
    if not stream:
        for record in records:
            for k, text in enumerate(record["generations"]):
                print(f"--- prompt: {record['prompt']!r} [{k + 1}/{len(record['generations'])}]\n"
                      f"{text if encoder_decoder or chat else record['prompt'] + text}")
    if cfg.output_file:
        write_text_atomic(cfg.output_file, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        print(f"wrote {len(records)} prompt(s) to {cfg.output_file}")
    return records


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="generate")
def _main(cfg: DictConfig) -> None:
    run_or_exit(generate, cfg)


def main() -> None:
    launch(_main, "generate")



if __name__ == "__main__":
    main()
