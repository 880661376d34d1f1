"""Seeded generators of the demo data bundled in lightning_llm/data/bundled/ (`python -m scripts.data.<name>`)."""
