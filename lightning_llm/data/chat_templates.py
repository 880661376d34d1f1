"""Chat templates and conversation rendering shared by chat SFT and preference (DPO) data.

Everything renders through transformers' own `apply_chat_template`; what is added here is (1) presets for
tokenizers without a template, (2) which tokens a loss should see: the assistant's turns (content + end-of-turn
token), from the template's `{% generation %}` blocks where it has them (`return_assistant_tokens_mask`), else by
rendering each conversation prefix and reading the assistant's span off the character offsets (exact: the same
text, tokenized once), and (3) the completion of a prompt (what follows the prompt rendered with the generation
prompt). TRL's SFTTrainer is the reference for these labels (tests/test_chat.py compares them).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from lightning_llm.errors import UserError, first_line

Message = Mapping[str, Any]
ROLES = ("system", "user", "assistant")

# ChatML with generation blocks around each assistant reply and its end-of-turn token (what
# `return_assistant_tokens_mask` marks), the newline after it left out, as in TRL's training templates.
CHATML = (
    "{%- for message in messages %}"
    "{%- if message['role'] == 'assistant' %}"
    "{{- '<|im_start|>assistant\n' }}"
    "{%- generation %}{{- message['content'] + '<|im_end|>' }}{%- endgeneration %}"
    "{{- '\n' }}"
    "{%- else %}"
    "{{- '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)
# Preset name -> (template, special tokens it needs in the vocabulary).
PRESETS: dict[str, tuple[str, tuple[str, ...]]] = {"chatml": (CHATML, ("<|im_start|>", "<|im_end|>"))}
# Conversations a template is checked with, the first it renders used: with a system turn, and without one for
# templates that refuse it (Gemma, Mistral-Instruct). They end with the reply, as templates that close the last turn
# differently (Phi-3's EOS, Qwen3's thinking block) render a prefix of the whole conversation only up to there.
_PROBES = ([{"role": "system", "content": "s"}, {"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}],
           [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}])


def no_template(key: str = "data.chat_template") -> str:
    """The one-line error for a tokenizer that has no chat template and was given none."""
    return f"{key}: the tokenizer has no chat_template: set {key}=chatml (or a Jinja template string or file)"


def has_generation_blocks(template: str | None) -> bool:
    import re

    return bool(template) and re.search(r"\{%-?\s*generation\s*-?%\}", template) is not None


def resolve_template(setting: str | None) -> tuple[str, tuple[str, ...]] | None:
    """`data.chat_template`: a preset name, a Jinja file or a Jinja string -> (template, special tokens to add);
    None for none given."""
    if not setting:
        return None
    if setting in PRESETS:
        return PRESETS[setting]
    path = Path(setting).expanduser()
    if "{" not in setting and path.suffix in (".jinja", ".j2", ".txt", "") and len(setting) < 4096:
        if not path.is_file():
            raise UserError(f"data.chat_template={setting!r}: neither a preset ({', '.join(PRESETS)}), a file nor a "
                            f"Jinja template")
        return path.read_text(), ()
    return setting, ()


def install_template(tokenizer: Any, setting: str | None, key: str = "data.chat_template") -> None:
    """Give `tokenizer` the chat template to train with: `setting` when given (added special tokens included),
    else its own. It is then saved with the tokenizer (`save_pretrained`), so the export chats in plain
    transformers. Checked by rendering a probe conversation: a broken template fails here, in one line."""
    resolved = resolve_template(setting)
    if resolved is not None:
        template, specials = resolved
        missing = [t for t in specials if t not in tokenizer.get_vocab()]
        if missing:
            tokenizer.add_special_tokens({"additional_special_tokens": missing}, replace_extra_special_tokens=False)
        tokenizer.chat_template = template
    if not tokenizer.chat_template:
        raise UserError(no_template(key))
    errors = []
    for probe in _PROBES:
        try:
            tokenizer.apply_chat_template(probe, tokenize=False)
            return
        except Exception as err:
            errors.append(err)
    raise UserError(f"{key}: the chat template does not render a user/assistant conversation: "
                    f"{first_line(errors[-1])}") from errors[-1]


def apply(tokenizer: Any, messages: Sequence[Message], **kwargs: Any) -> Any:
    """`apply_chat_template`, a conversation the template refuses (a role it does not take, turns that do not
    alternate) failing in one line."""
    try:
        return tokenizer.apply_chat_template(list(messages), **kwargs)
    except Exception as err:
        raise UserError(f"the chat template cannot render this conversation: {first_line(err)}") from err


def render(tokenizer: Any, messages: Sequence[Message], add_generation_prompt: bool = False) -> str:
    return apply(tokenizer, messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def prompt_ids(tokenizer: Any, messages: Sequence[Message]) -> list[int]:
    """Token ids of a conversation followed by the template's generation prompt (where a reply starts)."""
    return list(apply(tokenizer, messages, tokenize=True, add_generation_prompt=True, return_dict=True)["input_ids"])


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def assistant_mask(tokenizer: Any, messages: Sequence[Message]) -> tuple[list[int], list[int]]:
    """(input ids of the rendered conversation, 1 on each assistant turn's tokens: content and end-of-turn token).

    Templates with `{% generation %}` blocks: transformers' `return_assistant_tokens_mask`. Others: each assistant
    turn's characters are those between the conversation before it rendered with the generation prompt and the
    conversation up to it; the turn ends at the first added (special) token after its content, the template's
    end-of-turn token (scaffolding after it, e.g. ChatML's newline, is not trained, as TRL's training templates
    do); a turn with no such token is kept whole. Templates that render a conversation's beginning differently
    from the whole (Phi-3's EOS after the last turn, Qwen3's thinking block in it, DeepSeek's generation prompt)
    have each message's content found in order instead, the turn being its content and the first added token
    after it."""
    messages = list(messages)
    if has_generation_blocks(tokenizer.chat_template):
        out = apply(tokenizer, messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
        return list(out["input_ids"]), list(out["assistant_masks"])
    text = render(tokenizer, messages)
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), enc["offset_mapping"]
    added = set(tokenizer.get_added_vocab().values())
    mask = [0] * len(ids)
    spans = _turns_by_prefix(tokenizer, messages, text)
    whole_turns = spans is not None  # the prefix spans end where the template ends the turn
    if spans is None:
        spans = _turns_by_content(messages, text)
    for start, end, content_end in spans:
        turn = [j for j, (s, e) in enumerate(offsets) if e > start and s < end]
        stop = next((j for j in turn if offsets[j][0] >= content_end and ids[j] in added), None)
        if stop is None:
            stop = turn[-1] if whole_turns and turn else max((j for j in turn if offsets[j][0] < content_end),
                                                             default=None)
        for j in turn:
            if stop is None or j > stop:
                break
            mask[j] = 1
    return ids, mask


def _turns_by_prefix(tokenizer: Any, messages: list[Message], text: str) -> list[tuple[int, int, int]] | None:
    """(start, end, content end) characters of each assistant turn, from the renders of the conversation before it
    (with the generation prompt) and up to it; None when those are not prefixes of the whole."""
    spans = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        # A conversation that opens with the assistant: nothing before it renders, its turn starts at its content.
        before = render(tokenizer, messages[:i], add_generation_prompt=True) if i else ""
        upto = render(tokenizer, messages[:i + 1])
        if not (text.startswith(before) and text.startswith(upto) and len(before) <= len(upto)):
            return None
        content = str(message["content"]).strip()
        start, end = (len(before) if i else max(text.find(content, 0, len(upto)), 0)), len(upto)
        found = text.find(content, start, end) if content else -1
        spans.append((start, end, found + len(content) if found >= 0 else start))
    return spans


def _turns_by_content(messages: list[Message], text: str) -> list[tuple[int, int, int]]:
    """(start, end, content end) characters of each assistant turn: every message's content found in order, a turn
    running from its content to the next message's."""
    found, cursor = [], 0
    for message in messages:
        content = str(message["content"]).strip()
        at = text.find(content, cursor)
        if at < 0:
            raise UserError("data.chat_template: the template changes a message's text, so assistant turns cannot "
                            "be located: use a template with {% generation %} blocks (e.g. data.chat_template=chatml)")
        found.append((at, at + len(content)))
        cursor = at + len(content)
    return [(at, found[i + 1][0] if i + 1 < len(found) else len(text), end)
            for i, (message, (at, end)) in enumerate(zip(messages, found)) if message["role"] == "assistant"]


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The token that ends an assistant turn (ChatML `<|im_end|>`, Llama 3 `<|eot_id|>`): the last trained token of
    a probe reply, when it is an added (special) token; None when the template ends turns with plain text."""
    added = set(tokenizer.get_added_vocab().values())
    for probe in _PROBES:
        try:
            ids, mask = assistant_mask(tokenizer, probe)
        except Exception:  # a template that refuses this probe (a system turn) or cannot be read by prefixes
            continue
        trained = [t for t, m in zip(ids, mask) if m]
        return trained[-1] if trained and trained[-1] in added else None
    return None


def encode_conversation(tokenizer: Any, messages: Sequence[Message], *, assistant_only: bool = True,
                        prompt_turns: int = 0) -> tuple[list[int], list[int]]:
    """(input ids, labels mask) of a conversation. `assistant_only`: assistant turns only (else every token).
    `prompt_turns`: the first messages form a prompt whose tokens are never trained (TRL's completion mask: what
    follows the prompt rendered with the generation prompt), for prompt/completion data."""
    if assistant_only:
        ids, mask = assistant_mask(tokenizer, messages)
    else:
        ids = list(apply(tokenizer, messages, tokenize=True, return_dict=True)["input_ids"])
        mask = [1] * len(ids)
    if prompt_turns:
        start = common_prefix_length(prompt_ids(tokenizer, messages[:prompt_turns]), ids)
        mask = [0] * start + mask[start:]
    return ids, mask


def encode_text_completion(tokenizer: Any, prompt: str, completion: str) -> tuple[list[int], list[int]]:
    """Plain-text prompt/completion (no template), as TRL does: EOS appended to the completion, the prompt's
    tokens untrained."""
    eos = tokenizer.eos_token or ""
    if eos and not completion.endswith(eos):
        completion = completion + eos
    ids = list(tokenizer(prompt + completion)["input_ids"])
    start = common_prefix_length(list(tokenizer(prompt)["input_ids"]), ids)
    return ids, [0] * start + [1] * (len(ids) - start)


def chat_generation_config(tokenizer: Any, config: Any) -> Any:
    """`config` (a transformers GenerationConfig, changed in place) stopping at the chat template's end-of-turn
    token as well as at EOS, padding with the pad id."""
    stops = [t for t in (tokenizer.eos_token_id, end_of_turn_id(tokenizer)) if t is not None]
    given = config.eos_token_id if isinstance(config.eos_token_id, list) else [config.eos_token_id]
    config.eos_token_id = list(dict.fromkeys([*(t for t in given if t is not None), *stops]))
    if config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
    return config
