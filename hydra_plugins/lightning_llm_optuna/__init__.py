"""A Hydra sweeper driving current Optuna (>= 4) with ask/tell and a persistent, resumable study.

hydra-optuna-sweeper 1.3.0 pins optuna<3 and its sqlite storage breaks on SQLAlchemy 2, so we keep our own
small plugin. `hydra_plugins` itself is a namespace package (no __init__.py) so Hydra finds every plugin in it.
"""
