"""`llm-generate`: text from a checkpoint, a run dir, an HF model dir or a hub id.

Prompts are generated in left-padded batches with the KV cache on; a single prompt streams to the terminal.
Every run writes JSONL: one `{"prompt": ..., "generations": [...]}` object per prompt, in prompt order.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import hydra
import torch
from omegaconf import DictConfig, OmegaConf
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    PreTrainedModel,
    TextStreamer,
    set_seed,
)

from lightning_llm.config import CONFIG_PATH
from lightning_llm.data.tokenizers import load_tokenizer
from lightning_llm.errors import UserError, require
from lightning_llm.modules.generation import generate_ids
from lightning_llm.runtime.builders import tokenizer_dir
from lightning_llm.runtime.checkpoints import load_module, run_dir_of
from lightning_llm.runtime.cli import launch, run_or_exit
from lightning_llm.runtime.console import hf_progress_bars_off
from lightning_llm.runtime.model_paths import looks_local as _looks_local
from lightning_llm.runtime.model_paths import run_checkpoint as _run_checkpoint

_CAUSAL_ARCH_SUFFIXES = ("ForCausalLM", "LMHeadModel")
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


# ----------------------------------------------------------------------------------------------- settings
def check_settings(cfg: DictConfig) -> None:
    """Every generation setting, checked before any model is loaded."""
    require(not OmegaConf.is_missing(cfg, "model_path") and bool(cfg.model_path),
            "model_path: required (a .ckpt file, a run directory, an HF model directory or a hub id)")
    require((cfg.prompt is None) != (cfg.prompts_file is None), "prompt / prompts_file: give exactly one of them")
    for key in ("max_new_tokens", "num_beams", "num_return_sequences", "batch_size"):
        require(isinstance(cfg[key], int) and cfg[key] >= 1, f"{key} must be an integer >= 1, got {cfg[key]!r}")
    require(cfg.top_p is None or 0 < cfg.top_p <= 1, f"top_p must be in (0, 1], got {cfg.top_p}")
    require(cfg.top_k is None or (isinstance(cfg.top_k, int) and cfg.top_k >= 0),
            f"top_k must be an integer >= 0 (0 = off), got {cfg.top_k!r}")
    require(not cfg.do_sample or cfg.temperature is None or cfg.temperature > 0,
            f"temperature must be > 0 when sampling (do_sample=true), got {cfg.temperature}")
    require(cfg.repetition_penalty is None or cfg.repetition_penalty > 0,
            f"repetition_penalty must be > 0 (1.0 = off), got {cfg.repetition_penalty}")
    require(cfg.do_sample or cfg.num_return_sequences <= cfg.num_beams,
            f"num_return_sequences={cfg.num_return_sequences} needs do_sample=true or num_beams >= "
            f"{cfg.num_return_sequences} (greedy search returns one sequence)")
    require(cfg.dtype is None or cfg.dtype in _DTYPES, f"dtype must be one of {sorted(_DTYPES)} or null")


def generation_config(model: PreTrainedModel, cfg: DictConfig, pad_token_id: int | None) -> GenerationConfig:
    """The model's own generation defaults (EOS, ...) updated with the user's settings, transformers' names."""
    config = copy.deepcopy(model.generation_config)
    config.update(max_new_tokens=cfg.max_new_tokens, do_sample=cfg.do_sample, num_beams=cfg.num_beams,
                  num_return_sequences=cfg.num_return_sequences, repetition_penalty=cfg.repetition_penalty,
                  use_cache=True, pad_token_id=pad_token_id)
    if cfg.do_sample:
        config.update(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)
    return config


def read_prompts(cfg: DictConfig) -> list[str]:
    """`prompt=...`, or `prompts_file`: one prompt per line (.txt) or objects with a `prompt` field (.jsonl)."""
    if cfg.prompt is not None:
        prompts = [str(cfg.prompt)]
    else:
        path = Path(cfg.prompts_file)
        require(path.is_file(), f"prompts_file: file not found: {path}")
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        if path.suffix == ".jsonl":
            try:
                prompts = [str(json.loads(line)["prompt"]) for line in lines]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise UserError(f"prompts_file: {path} needs one JSON object with a 'prompt' field per line "
                                f"({type(err).__name__})") from err
        else:
            prompts = lines
    require(bool(prompts), f"prompts_file: no prompts in {cfg.prompts_file}")
    require(all(p.strip() for p in prompts), "prompt: empty prompt")
    return prompts


# ----------------------------------------------------------------------------------------------- loading
def _from_checkpoint(path: Path) -> tuple[PreTrainedModel, Any]:
    module = load_module(path, key="model_path")
    require(getattr(module, "task", None) == "causal_lm",
            f"model_path: {path} is a {getattr(module, 'task', 'non-causal-LM')} checkpoint; llm-generate needs a "
            f"causal LM (model=gpt)")
    run_dir = run_dir_of(path)
    for candidate in (tokenizer_dir(run_dir), run_dir / "hf_model"):
        if (candidate / "tokenizer_config.json").is_file():
            return module.model, load_tokenizer(str(candidate), "model_path")
    raise UserError(f"model_path: no tokenizer next to {path} (looked in {tokenizer_dir(run_dir)} and "
                    f"{run_dir / 'hf_model'})")


def _from_pretrained(name: str, trust_remote_code: bool) -> tuple[PreTrainedModel, Any]:
    try:
        model = AutoModelForCausalLM.from_pretrained(name, trust_remote_code=trust_remote_code)
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise UserError(f"model_path: cannot load a causal LM from {name!r}: {first}") from err
    architectures = model.config.architectures or []
    require(not architectures or any(a.endswith(_CAUSAL_ARCH_SUFFIXES) for a in architectures),
            f"model_path: {name} holds a {'/'.join(architectures)}, not a causal LM")
    return model, load_tokenizer(name, "model_path", trust_remote_code)


def load_for_generation(model_path: str, trust_remote_code: bool = False) -> tuple[PreTrainedModel, Any]:
    """(HF model in eval mode, tokenizer) from a .ckpt, a run dir (hf_model/ or best checkpoint), an HF dir or a
    hub id."""
    path = Path(model_path).expanduser()
    if path.is_file():
        model, tokenizer = _from_checkpoint(path)
    elif path.is_dir() and (path / "config.json").is_file():
        model, tokenizer = _from_pretrained(str(path), trust_remote_code)
    elif path.is_dir() and (path / "hf_model" / "config.json").is_file():
        model, tokenizer = _from_pretrained(str(path / "hf_model"), trust_remote_code)
    elif path.is_dir():
        ckpt = _run_checkpoint(path)
        require(ckpt is not None, f"model_path: {path} has no config.json, hf_model/ or checkpoints/*.ckpt")
        model, tokenizer = _from_checkpoint(ckpt)
    elif _looks_local(model_path):
        raise UserError(f"model_path: not found: {model_path}")
    else:
        model, tokenizer = _from_pretrained(model_path, trust_remote_code)
    if tokenizer.pad_token_id is None:  # GPT-style tokenizers: pad with EOS (masked out by the attention mask)
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return model.eval(), tokenizer


def context_length(model: PreTrainedModel) -> int | None:
    config = model.config
    return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)


# ----------------------------------------------------------------------------------------------- generating
def generate(cfg: DictConfig) -> list[dict[str, Any]]:
    """Check settings, load, generate, print (or stream) and write JSONL; returns the records."""
    check_settings(cfg)
    prompts = read_prompts(cfg)
    with hf_progress_bars_off():  # loading bars would interleave with the streamed text
        model, tokenizer = load_for_generation(str(cfg.model_path), bool(cfg.trust_remote_code))
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device=device, dtype=_DTYPES[cfg.dtype] if cfg.dtype else None)
    prompt_ids = [tokenizer(p)["input_ids"] for p in prompts]
    limit = context_length(model)
    for i, ids in enumerate(prompt_ids):
        require(not limit or len(ids) + cfg.max_new_tokens <= limit,
                f"prompt {i + 1}: {len(ids)} tokens + max_new_tokens={cfg.max_new_tokens} exceed the model's context "
                f"of {limit} tokens: shorten the prompt or lower max_new_tokens")
    config = generation_config(model, cfg, tokenizer.pad_token_id)
    stream = len(prompts) == 1 and cfg.num_return_sequences == 1 and cfg.num_beams == 1
    streamer = TextStreamer(tokenizer, skip_special_tokens=True) if stream else None
    set_seed(cfg.seed)
    new_ids = generate_ids(model, prompt_ids, config, cfg.batch_size, streamer)
    records = [{"prompt": p, "generations": tokenizer.batch_decode(ids, skip_special_tokens=True)}
               for p, ids in zip(prompts, new_ids)]
    if not stream:
        for record in records:
            for k, text in enumerate(record["generations"]):
                print(f"--- prompt: {record['prompt']!r} [{k + 1}/{len(record['generations'])}]\n"
                      f"{record['prompt']}{text}")
    if cfg.output_file:
        _write_jsonl(Path(cfg.output_file), records)
        print(f"wrote {len(records)} prompt(s) to {cfg.output_file}")
    return records


def _write_jsonl(path: Path, records: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    os.replace(tmp, path)


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="generate")
def _main(cfg: DictConfig) -> None:
    run_or_exit(generate, cfg)


def main() -> None:
    launch(_main, "generate")


if __name__ == "__main__":
    main()
