"""Shared entry-point plumbing: config tree printing and one-line errors instead of tracebacks."""

from __future__ import annotations

from lightning_llm.runtime.console import quiet_known_noise

# Before the imports below bring in transformers (and torchao with it): a SLURM job unpickles its task function,
# which imports this module before any command module.
quiet_known_noise()

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.utilities.rank_zero import rank_zero_only

from lightning_llm.config import store  # noqa: F401  (registers the config schemas and resolvers)
from lightning_llm.config.precheck import precheck
from lightning_llm.config.secrets import redact, refuse_secret_overrides
from lightning_llm.errors import UserError, user_error_in
from lightning_llm.runtime.argv import route_group_shorthands, route_output_dir
from lightning_llm.runtime.console import config_summary, discard_run_dir, failed_run_line, final_line
from lightning_llm.runtime.extras import check_command_line
from lightning_llm.runtime.hardware import follow_rank_zero_run_dir
from lightning_llm.tracking import sweep
from lightning_llm.tracking.jobs import in_multirun

T = TypeVar("T")


def print_config(cfg: DictConfig, save_to: str | Path | None = None) -> None:
    """Print a few summary lines (task, model, data, hardware, run dir), or with `print_config=full` the config as a
    rich tree (secrets redacted); the tree is always saved to `save_to`. Global rank 0 only (DDP relaunches and
    torchrun ranks run the same command)."""
    if rank_zero_only.rank != 0:
        return
    import rich
    import rich.syntax
    import rich.tree
    from rich.console import Console

    tree = rich.tree.Tree("CONFIG", style="dim")
    plain = redact(OmegaConf.to_container(cfg, resolve=False))
    for key, value in plain.items():
        body = OmegaConf.to_yaml(value) if isinstance(value, (dict, list)) else str(value)
        tree.add(str(key), style="bold").add(rich.syntax.Syntax(body, "yaml"))
    if cfg.get("print_config") == "full":
        rich.print(tree)
    else:
        print("\n".join(config_summary(cfg, save_to)))
    if save_to is not None:
        Path(save_to).parent.mkdir(parents=True, exist_ok=True)
        with open(save_to, "w") as f:
            Console(file=f, width=120, color_system=None).print(tree)


def run_or_exit(fn: Callable[[DictConfig], T], cfg: DictConfig) -> T | None:
    """Run an entry point; a `UserError` becomes `error: <one line>` on stderr and exit code 2. In a multirun
    any crash is recorded as the job's failure and None returned, so the sweep goes on (see sweep.py)."""
    try:
        result = fn(cfg)
    except Exception as err:
        if os.environ.get("HYDRA_FULL_ERROR") == "1":
            raise
        if in_multirun():
            sweep.record_failed_job(cfg, err)
            return None
        user_error = user_error_in(err)
        if user_error is None:
            raise
        line = failed_run_line(_run_dir(cfg))
        if line and rank_zero_only.rank == 0:
            print(line, flush=True)
        elif rank_zero_only.rank == 0:  # bad input found before any work: leave no orphan run directory behind
            discard_run_dir(_run_dir(cfg), cfg.get("task_name"))
        print(f"error: {user_error}", file=sys.stderr)
        sys.exit(2)
    if isinstance(result, dict) and result.get("run_dir") and rank_zero_only.rank == 0:
        print(final_line(result["run_dir"], result.get("hf_model")))  # the last line: where the output is
    return result


def _run_dir(cfg: DictConfig) -> str | None:
    try:
        return OmegaConf.select(cfg, "paths.output_dir")
    except Exception:  # outside Hydra's runtime ${hydra:...} does not resolve
        return None


def launch(hydra_main: Callable[[], Any], config_name: str) -> None:
    """What every entry point does before Hydra starts: refuse credentials on the command line, keep torchrun
    ranks in rank 0's run directory, route `paths.output_dir`, and check the composed config (one `error:` line,
    exit 2, nothing written). Then Hydra runs `hydra_main` with the rewritten arguments."""
    quiet_known_noise()  # first: the checks below ask Lightning whether SLURM started us, which may warn
    try:
        argv = sys.argv[1:]
        refuse_secret_overrides(argv)
        check_command_line(argv)  # logger=wandb etc. without the extra installed: one line
        argv = follow_rank_zero_run_dir(route_output_dir(route_group_shorthands(argv)))
        precheck(argv, config_name)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    sys.argv[1:] = argv
    hydra_main()
