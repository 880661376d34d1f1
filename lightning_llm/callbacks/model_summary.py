"""The model summary as one line: what is trained and how big it is."""

from __future__ import annotations

from typing import Any

import pytorch_lightning as pl
from pytorch_lightning.utilities.model_summary import get_formatted_model_size, get_human_readable_count


class CompactModelSummary(pl.callbacks.ModelSummary):
    """`model: BertForSequenceClassification, 389 K params (389 K trainable), 1.6 MB`, on global rank 0.

    Lightning's rich summary is a 17-line table whose FLOPs column (and `Total FLOPs: 0`) stays 0 unless the
    module defines `example_input_array`, and which counts metric objects as layers. This prints the top-level
    children that hold parameters, and the totals."""

    def __init__(self) -> None:
        super().__init__(max_depth=1)

    @staticmethod
    def summarize(summary_data: list[tuple[str, list[str]]], total_parameters: int, trainable_parameters: int,
                  model_size: float, total_training_modes: dict[str, int], total_flops: int = 0,
                  **summarize_kwargs: Any) -> None:
        columns = dict(summary_data)
        holders = [(name, kind, params) for name, kind, params in
                   zip(columns.get("Name", []), columns.get("Type", []), columns.get("Params", [])) if params.strip() != "0"]
        total = get_human_readable_count(int(total_parameters)).strip()
        trainable = get_human_readable_count(int(trainable_parameters)).strip()
        sizes = f"{total} params ({trainable} trainable), {get_formatted_model_size(model_size)} MB"
        if len(holders) == 1:
            print(f"{holders[0][0]}: {holders[0][1]}, {sizes}")
        else:
            print(", ".join(f"{name}: {kind} ({params.strip()})" for name, kind, params in holders) + f" | {sizes}")
