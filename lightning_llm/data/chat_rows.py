"""The base of the data modules whose JSON rows are encoded with a chat template (chat SFT, preference pairs): the
template is installed on the tokenizer once, before anything reads it."""

from __future__ import annotations

from typing import Any

from lightning_llm.data import chat_templates as ct
from lightning_llm.data.json_rows import JsonRowsDataModule
from lightning_llm.errors import UserError


class ChatRowsDataModule(JsonRowsDataModule):
    """`chat_template`: the tokenizer's own when null, or a preset name such as `chatml`, a Jinja string or file,
    which then wins (with the special tokens a preset needs)."""

    def __init__(self, *, chat_template: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.chat_template = chat_template
        self._template_ready = False

    def install_template(self) -> None:
        """Install the template before the cache key is taken from the tokenizer and before the model's
        vocabulary size is read from it (a preset may add tokens)."""
        if not self._template_ready:
            if self.chat_template or self.tokenizer.chat_template:
                ct.install_template(self.tokenizer, self.chat_template)
            self._template_ready = True

    def require_template(self) -> None:
        """Conversational rows need a template: one line naming the setting when the tokenizer has none."""
        if not self.tokenizer.chat_template:
            raise UserError(ct.no_template())

    def prepare_data(self) -> None:
        if self.tokenizer is not None:
            self.install_template()
        super().prepare_data()

    def setup(self, stage: str | None = None) -> None:
        if self.tokenizer is not None:
            self.install_template()
        super().setup(stage)

    def where(self, split: str, index: int) -> str:
        """How an error names a row: its split (and file) and its 1-based number."""
        return f"data ({self.describe_split(split)}) row {index + 1}"
