"""The engine's LightningModule half: `HFTaskModule` (base.py), the contract every task's module class implements
(lightning_llm/tasks/), and what all tasks share: building the HF model (hf_models.py), LoRA (adapters.py),
batched generation (generation.py)."""
