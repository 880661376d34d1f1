"""Chat SFT data (`data=chat`): conversations rendered with a chat template, the loss on the assistant's turns.

Rows are a `messages` list of `{role, content}` (system/user/assistant, any number of turns), or `prompt` +
`completion` (both conversational lists, or both strings: plain text with EOS, as TRL does). Every row is checked
before anything is trained (one line naming the split and row). Encoding, labels and truncation follow TRL's
SFTTrainer (see `chat_templates`); with `packing` whole conversations share rows of `max_length` tokens,
best-fit decreasing, with position ids restarting at each one and no attention mask, so that transformers keeps
attention inside each conversation (it derives a block-diagonal mask from `position_ids` when the mask is None).
The model is `model=gpt` (causal LM): labels are -100 outside the trained tokens, so its split-level loss,
perplexity and token accuracy are over assistant tokens.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Annotated, Any

import numpy as np
import torch
from datasets import Dataset, DatasetDict

from lightning_llm.config.schema import Range
from lightning_llm.data import chat_templates as ct
from lightning_llm.data.chat_rows import ChatRowsDataModule
from lightning_llm.errors import UserError
from lightning_llm.tasks.causal_lm import unigram_perplexity

IGNORE_INDEX = -100
_REPLY_SAMPLES = 256  # validation prompts + references kept for generation checks (`model.eval_generation_samples`)


# ----------------------------------------------------------------------------------------------- rows
def _check_messages(value: Any, where: str, what: str = "messages") -> list[dict[str, str]]:
    """A conversation as a list of {role, content} dicts with known roles and non-empty text, or a UserError."""
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if not isinstance(value, list) or not value:
        raise UserError(f"{where}: {what} must be a non-empty list of {{role, content}} objects, got "
                        f"{type(value).__name__} {str(value)[:60]!r}")
    out = []
    for j, message in enumerate(value):
        if not isinstance(message, Mapping) or "role" not in message or "content" not in message:
            raise UserError(f"{where}: {what}[{j}] must be an object with role and content, got {str(message)[:60]!r}")
        role, content = message["role"], message["content"]
        if role not in ct.ROLES:
            raise UserError(f"{where}: {what}[{j}] has role {role!r}, expected one of {', '.join(ct.ROLES)}")
        if not isinstance(content, str):
            raise UserError(f"{where}: {what}[{j}] ({role}) content must be a string, got {type(content).__name__} "
                            f"{str(content)[:60]!r}")
        if not content.strip():
            raise UserError(f"{where}: {what}[{j}] ({role}) has empty content")
        out.append({"role": role, "content": content})
    return out


def pack_best_fit(lengths: Sequence[int], capacity: int) -> list[list[int]]:
    """Indices grouped into bins of at most `capacity` tokens, best-fit decreasing (longest first, each into the
    fullest bin it fits); no item is split. Bins are returned in creation order, items longest first."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    free: list[int] = []
    for i in order:
        n = lengths[i]
        best, best_free = -1, capacity + 1
        for b, room in enumerate(free):
            if n <= room < best_free:
                best, best_free = b, room
        if best < 0:
            bins.append([i])
            free.append(capacity - n)
        else:
            bins[best].append(i)
            free[best] -= n
    return bins


class ChatCollator:
    """Pads conversations (right, attention mask) or stacks packed rows (position ids restarting per conversation,
    no attention mask: transformers then masks attention block-diagonally). Labels pad with -100."""

    def __init__(self, pad_token_id: int, pad_to_multiple_of: int | None = None) -> None:
        self.pad_token_id, self.pad_to_multiple_of = pad_token_id, pad_to_multiple_of

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        lengths = [len(e["input_ids"]) for e in examples]
        width = max(lengths)
        if self.pad_to_multiple_of:
            width = -(-width // self.pad_to_multiple_of) * self.pad_to_multiple_of
        packed = "position_ids" in examples[0]
        input_ids = torch.full((len(examples), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(examples), width), IGNORE_INDEX, dtype=torch.long)
        positions = torch.zeros((len(examples), width), dtype=torch.long)
        mask = torch.zeros((len(examples), width), dtype=torch.long)
        for i, e in enumerate(examples):
            n = lengths[i]
            input_ids[i, :n] = torch.as_tensor(e["input_ids"])
            labels[i, :n] = torch.as_tensor(e["labels"])
            mask[i, :n] = 1
            if packed:
                positions[i, :n] = torch.as_tensor(e["position_ids"])
                positions[i, n:] = torch.arange(width - n)  # padding: a block of its own, never attended to
        if packed:
            return {"input_ids": input_ids, "labels": labels, "position_ids": positions}
        return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


class ChatDataModule(ChatRowsDataModule):
    """Conversations from local json/jsonl/parquet files or the hub (the bundled synthetic demo conversations
    when none is given), encoded once with the chat template (`chat_template`: the tokenizer's own, or a preset
    name such as `chatml`, a Jinja string or file, which then wins), truncated to `max_length` tokens.

    `assistant_only_loss`: train on the assistant turns (content + end-of-turn token) only; false: on whole
    conversations (prompt/completion data: on the completion, TRL's `completion_only_loss`). Conversations left
    with no trained token after truncation are dropped (counted on stderr). `packing`: several conversations per
    row (see the module docstring). `baseline_ppl` given to the model: a unigram model of the training split's
    trained tokens on the validation split's."""

    objectives = frozenset({"causal_lm"})
    _bundled = {"train": "chat_train.jsonl", "validation": "chat_validation.jsonl", "test": "chat_test.jsonl"}

    def __init__(self, *, messages_column: str = "messages", prompt_column: str = "prompt",
                 completion_column: str = "completion", max_length: Annotated[int, Range(2)] = 1024,
                 assistant_only_loss: bool = True, packing: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.messages_column, self.prompt_column, self.completion_column = (messages_column, prompt_column,
                                                                            completion_column)
        self.max_length = max_length
        self.assistant_only_loss, self.packing = assistant_only_loss, packing
        self.collate_fn = None  # set once the tokenizer is known
        self.unigram_ppl: float | None = None
        self.reply_samples: list[dict[str, Any]] = []

    def _conversation(self, row: Any, where: str) -> tuple[str, Any, int]:
        """("messages" | "text", content, prompt turns) of one row, checked."""
        if not isinstance(row, Mapping):
            raise UserError(f"{where}: expected an object, got {type(row).__name__}")
        if self.messages_column in row and row[self.messages_column] is not None:
            messages = _check_messages(row[self.messages_column], where, self.messages_column)
            if not any(m["role"] == "assistant" for m in messages):
                raise UserError(f"{where}: {self.messages_column} has no assistant turn (nothing to train on)")
            return "messages", messages, 0
        prompt, completion = row.get(self.prompt_column), row.get(self.completion_column)
        if prompt is None or completion is None:
            raise UserError(f"{where}: no {self.messages_column!r} column, nor {self.prompt_column!r} and "
                            f"{self.completion_column!r} (set data.messages_column or data.prompt_column/"
                            f"data.completion_column); the row has {', '.join(map(str, row)) or 'no fields'}")
        if isinstance(prompt, str) and isinstance(completion, str):
            if not completion.strip():
                raise UserError(f"{where}: {self.completion_column} is empty")
            return "text", (prompt, completion), 0
        prompt = _check_messages(prompt, where, self.prompt_column)
        completion = _check_messages(completion, where, self.completion_column)
        if not any(m["role"] == "assistant" for m in completion):
            raise UserError(f"{where}: {self.completion_column} has no assistant turn (nothing to train on)")
        return "messages", prompt + completion, len(prompt)

    def training_texts(self) -> Iterator[str]:
        raw = self.load_raw()
        for i, row in enumerate(self.rows(raw["train"])):
            kind, value, _ = self._conversation(row, self.where("train", i))
            if kind == "text":
                yield from value
            else:
                yield from (m["content"] for m in value)

    # ----------------------------------------------------------------- template and encoding
    def _processing_params(self) -> dict[str, Any]:
        return {"messages": self.messages_column, "prompt": self.prompt_column, "completion": self.completion_column,
                "template": self.tokenizer.chat_template, "max_length": self.max_length,
                "assistant_only_loss": self.assistant_only_loss, "packing": self.packing, "v": 1}

    def encode_row(self, row: Any, where: str) -> tuple[list[int], list[int]]:
        """(input ids, labels) of one checked row, before truncation."""
        kind, value, prompt_turns = self._conversation(row, where)
        if kind == "text":  # the completion only, whatever assistant_only_loss says (TRL's completion_only_loss)
            ids, mask = ct.encode_text_completion(self.tokenizer, *value)
        else:
            self.require_template()
            try:
                ids, mask = ct.encode_conversation(self.tokenizer, value, assistant_only=self.assistant_only_loss,
                                                   prompt_turns=prompt_turns)
            except UserError as err:
                raise UserError(f"{where}: {err}") from err
        return ids, [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]

    def _process(self, raw: DatasetDict) -> tuple[DatasetDict, dict[str, Any]]:
        processed, meta = DatasetDict(), {"dropped": {}, "reply_samples": []}
        if self.assistant_only_loss and self.tokenizer.chat_template and ct.end_of_turn_id(self.tokenizer) is None:
            print("warning: data.chat_template: no special token ends the trained part of an assistant turn, so the "
                  "model may not learn to stop", file=sys.stderr)
        for split, ds in raw.items():
            ids_rows, label_rows, dropped = [], [], 0
            for i, row in enumerate(self.rows(ds)):
                ids, labels = self.encode_row(row, self.where(split, i))
                ids, labels = ids[:self.max_length], labels[:self.max_length]
                if all(x == IGNORE_INDEX for x in labels[1:]):  # nothing left to predict (labels shift by one)
                    dropped += 1
                    continue
                ids_rows.append(ids)
                label_rows.append(labels)
                if split == "validation" and len(meta["reply_samples"]) < _REPLY_SAMPLES:
                    sample = self._reply_sample(row)
                    if sample:
                        meta["reply_samples"].append(sample)
            if dropped:
                print(f"warning: data ({self.describe_split(split)}): {dropped} of {dropped + len(ids_rows)} "
                      f"conversations have no trained token within data.max_length={self.max_length} and were "
                      f"dropped", file=sys.stderr)
            if not ids_rows:
                raise UserError(f"data ({self.describe_split(split)}): no conversation has a trained token within "
                                f"data.max_length={self.max_length}")
            meta["dropped"][split] = dropped
            columns = {"input_ids": ids_rows, "labels": label_rows}
            if self.packing:
                columns = self._pack(ids_rows, label_rows)
            processed[split] = Dataset.from_dict(columns)
        if "train" in processed and "validation" in processed:
            meta["unigram_ppl"] = self._baseline(processed["train"], processed["validation"])
        return processed, meta

    def _reply_sample(self, row: Any) -> dict[str, Any] | None:
        """The conversation up to its last assistant turn and that turn's text: a prompt and its reference."""
        kind, value, _ = self._conversation(row, "")
        if kind != "messages":
            return None
        last = max(i for i, m in enumerate(value) if m["role"] == "assistant")
        return {"messages": value[:last], "reference": value[last]["content"]} if last else None

    def _pack(self, ids_rows: list[list[int]], label_rows: list[list[int]]) -> dict[str, list]:
        """Whole conversations into rows of at most `max_length` tokens; each one's first label is -100 (it would
        be predicted from the previous conversation's last token) and its positions restart at 0."""
        columns: dict[str, list] = {"input_ids": [], "labels": [], "position_ids": []}
        for group in pack_best_fit([len(r) for r in ids_rows], self.max_length):
            ids, labels, positions = [], [], []
            for i in group:
                ids += ids_rows[i]
                labels += [IGNORE_INDEX] + label_rows[i][1:]
                positions += range(len(ids_rows[i]))
            columns["input_ids"].append(ids)
            columns["labels"].append(labels)
            columns["position_ids"].append(positions)
        return columns

    def _baseline(self, train: Dataset, validation: Dataset) -> float:
        """Unigram perplexity of the validation split's trained tokens (training-split frequencies)."""

        def targets(ds: Dataset) -> Iterator[list[int]]:
            for labels in ds["labels"]:
                yield [0] + [t for t in labels[1:] if t != IGNORE_INDEX]  # the first element is skipped there

        return unigram_perplexity(targets(train), targets(validation), len(self.tokenizer))

    def _after_load(self, datasets: DatasetDict, meta: dict[str, Any]) -> None:
        self.unigram_ppl = meta.get("unigram_ppl")
        self.reply_samples = meta.get("reply_samples", [])
        self.collate_fn = ChatCollator(self.tokenizer.pad_token_id, self.pad_to_multiple_of)

    def model_kwargs(self) -> dict[str, Any]:
        return {"baseline_ppl": self.unigram_ppl}

    def model_attachments(self) -> dict[str, Any]:
        # Scored with `model.eval_generation_samples`; packing checked against the model's attention.
        return {"reply_samples": self.reply_samples, "packed_conversations": self.packing}
