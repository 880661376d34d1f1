# Makes conf/ the package lightning_llm.conf (pyproject.toml maps it), which Hydra reads as pkg://lightning_llm.conf.
