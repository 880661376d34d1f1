"""The engine's data half: `CachedTextDataModule` (base.py), the contract every task's data module implements
(lightning_llm/tasks/), and what all tasks share: sources, the tokenize-once cache, samplers, padding, masking,
tokenizer training."""
