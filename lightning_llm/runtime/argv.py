"""Command-line rewrites made before Hydra reads the arguments."""

from __future__ import annotations

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import OverrideParseException

from lightning_llm.errors import UserError

OUTPUT_DIR_KEY = "paths.output_dir"
# `model.peft=lora` reads as the `peft` group choice it names (the node it fills is model.peft).
GROUP_SHORTHANDS = {"model.peft": "peft"}


def _key(arg: str) -> str | None:
    """The key of a `key=value` override (`+`/`++` prefixes dropped), or None for flags and deletions."""
    if arg.startswith("-") or arg.startswith("~") or "=" not in arg:
        return None
    return arg.split("=", 1)[0].lstrip("+")


def route_output_dir(argv: list[str]) -> list[str]:
    """`paths.output_dir=X` moves the whole run (Hydra's .hydra/ and log included) to X.

    `paths.output_dir` defaults to Hydra's job directory, so the override is replaced by `hydra.run.dir=X
    hydra.sweep.dir=X`: a single run then runs in X, and a multirun (`-m`, or a sweeper config such as
    hparams_search=optuna) uses X as its sweep directory with each job in its own `X/<job number>`. Which of
    the two Hydra uses needs no guess here: it ignores the other. Left alone when the command line sets
    `hydra.run.dir` or `hydra.sweep.dir` itself (the user separates them on purpose; Lightning's DDP relaunch
    and torchrun ranks > 0 add `hydra.run.dir`, but by then the override has already been replaced). Several
    values (`paths.output_dir=a,b`) are refused: one directory, not a sweep."""
    positions = [i for i, arg in enumerate(argv) if _key(arg) == OUTPUT_DIR_KEY]
    if not positions or any(_key(arg) in ("hydra.run.dir", "hydra.sweep.dir") for arg in argv):
        return argv
    arg = argv[positions[-1]]  # as in Hydra, the last value wins
    try:
        override = OverridesParser.create().parse_override(arg)
    except OverrideParseException:
        return argv  # Hydra reports its own parse error
    if override.is_sweep_override():
        raise UserError(f"{arg}: one directory, not a sweep (with -m it is the sweep directory and each job runs in "
                        f"<dir>/<job number>)")
    value = arg.split("=", 1)[1]
    routed = [a for i, a in enumerate(argv) if i not in positions]
    at = positions[0]
    return routed[:at] + [f"hydra.run.dir={value}", f"hydra.sweep.dir={value}"] + routed[at:]


def data_keys_onto_saved_config(argv: list[str]) -> list[str]:
    """`llm-eval`: without `data=<option>`, `data.x=v` sets a key of the checkpoint's saved data config, which Hydra
    never sees (eval.yaml has no `data`), so it would refuse the key; written `+data.x=v` it composes into a
    `data` node of the given keys alone, which `evaluate` lays over the saved config."""
    if any(_key(arg) == "data" for arg in argv):
        return argv
    return [f"+{arg}" if arg[:1] not in "+~-" and (_key(arg) or "").startswith("data.") else arg for arg in argv]


def route_group_shorthands(argv: list[str]) -> list[str]:
    """`model.peft=lora` -> `peft=lora`: a plain option name for a node a config group fills selects that group's
    option (`model.peft.r=16` and `model.peft={...}` stay overrides of the node)."""
    routed = []
    for arg in argv:
        key, _, value = arg.partition("=")
        group = GROUP_SHORTHANDS.get(key)
        routed.append(f"{group}={value}" if group and value.replace("_", "").isalnum() else arg)
    return routed
