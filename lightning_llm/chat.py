"""`llm-chat`: an interactive multi-turn chat in the terminal with a chat model (a `data=chat` run, or any HF
model whose tokenizer has a chat template), its replies streamed token by token.

Each turn renders the whole conversation with the model's chat template and generation prompt, generates until
the template's end of turn (generation settings as llm-generate's), and keeps the reply in the conversation.
Commands: `/reset` (start over, keeping the system message), `/system <text>` (set the system message and start
over; `/system` alone removes it), `/exit`; end of input (Ctrl-D) quits. When the conversation outgrows the model's
context the oldest turns are left out (the system message stays).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import hydra
import torch
from omegaconf import DictConfig
from transformers import TextStreamer, set_seed

from lightning_llm.config import CONFIG_PATH
from lightning_llm.data import chat_templates
from lightning_llm.errors import require
from lightning_llm.generate import _DTYPES, check_generation_settings, context_length, generation_config
from lightning_llm.runtime.cli import launch, run_or_exit
from lightning_llm.runtime.console import hf_progress_bars_off
from lightning_llm.runtime.model_paths import Accepts, load_model_path


def accepts() -> Accepts:
    """The tasks whose models are decoder-only generators (the chat template is checked once loaded)."""
    return Accepts(lambda cls: cls.generates and not cls.encoder_decoder, "llm-chat", "chats with")

HELP = "/reset starts over, /system TEXT sets the system message, /exit or Ctrl-D quits"


def fit_context(tokenizer: Any, messages: list[dict[str, str]], limit: int | None,
                max_new_tokens: int) -> tuple[list[int], int]:
    """(prompt ids of the conversation, number of oldest turns left out) so that the prompt and the reply fit
    the model's context; the system message is kept."""
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    rest, dropped = messages[len(system):], 0
    while True:
        ids = chat_templates.prompt_ids(tokenizer, system + rest)
        if not limit or len(ids) + max_new_tokens <= limit or len(rest) <= 1:
            return ids, dropped
        rest, dropped = rest[2:] if len(rest) > 2 else rest[1:], dropped + 1


def chat(cfg: DictConfig, read: Callable[[str], str] = input) -> list[dict[str, str]]:
    """Run the chat loop until end of input or /exit; returns the conversation."""
    check_generation_settings(cfg)
    with hf_progress_bars_off():
        loaded = load_model_path(str(cfg.model_path), accepts(), bool(cfg.trust_remote_code))
    model, tokenizer = loaded.model, loaded.tokenizer
    require(bool(getattr(tokenizer, "chat_template", None)),
            f"model_path: {loaded.source} has no chat template (llm-chat needs a chat model: model=gpt data=chat, "
            f"or a tokenizer with a chat_template)")
    device = cfg.device if cfg.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device=device, dtype=_DTYPES[cfg.dtype] if cfg.dtype else None)
    config = chat_templates.chat_generation_config(tokenizer, generation_config(model, cfg, tokenizer.pad_token_id))
    require((config.num_beams or 1) == 1, f"num_beams={config.num_beams}: llm-chat streams its replies, which beam "
                                          f"search cannot do: use num_beams=1 (or llm-generate)")
    system = [{"role": "system", "content": str(cfg.system)}] if cfg.get("system") else []
    messages = list(system)
    set_seed(cfg.seed)
    print(f"chatting with {loaded.source} ({HELP})", flush=True)
    while True:
        try:
            line = read("> ").strip()
        except EOFError:
            print(flush=True)
            return messages
        if not line:
            continue
        if line in ("/exit", "/quit"):
            return messages
        if line == "/reset":
            messages = list(system)
            print("(conversation cleared)", flush=True)
            continue
        if line == "/system" or line.startswith("/system "):
            text = line[len("/system"):].strip()
            system = [{"role": "system", "content": text}] if text else []
            messages = list(system)
            print(f"(system message {'set' if text else 'removed'}; conversation cleared)", flush=True)
            continue
        messages.append({"role": "user", "content": line})
        limit = context_length(model)
        ids, dropped = fit_context(tokenizer, messages, limit, config.max_new_tokens)
        if limit and len(ids) + config.max_new_tokens > limit:
            print(f"(too long: {len(ids)} tokens + max_new_tokens={config.max_new_tokens} exceed the model's context "
                  f"of {limit}; not sent)", flush=True)
            messages.pop()
            continue
        if dropped:
            print(f"(the {dropped} oldest turn(s) no longer fit the model's context and are left out)", flush=True)
        streamer = TextStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True)
        input_ids = torch.tensor([ids], device=model.device)
        with torch.inference_mode():
            out = model.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                                 generation_config=config, streamer=streamer)
        reply = tokenizer.decode(out[0, len(ids):], skip_special_tokens=True).strip()
        messages.append({"role": "assistant", "content": reply})


@hydra.main(version_base="1.3", config_path=CONFIG_PATH, config_name="chat")
def _main(cfg: DictConfig) -> None:
    run_or_exit(chat, cfg)


def main() -> None:
    launch(_main, "chat")


if __name__ == "__main__":
    main()
