"""Side-by-side comparisons: llm-train against transformers' Trainer / TRL, and one method against another
(LoRA vs full, distillation vs scratch, ...): `python -m scripts.compare.<name>`."""
