"""The built-in tasks, one module each: everything specific to a task (its data module, encoding, collator,
metrics, model head, how a prediction is written) lives in `tasks/<name>.py`, which registers its module class
with `lightning_llm.registry`. Importing this package registers them all; the registry does it on first lookup.

Adding a task is adding one file here (or in a package of your own) plus its configs: docs/adding-a-task.md.
"""

from lightning_llm.tasks import (  # noqa: F401  (each registers itself)
    causal_lm,
    chat,
    classification,
    distillation,
    dpo,
    masked_lm,
    question_answering,
    seq2seq,
    text_corpus,
    token_classification,
)
