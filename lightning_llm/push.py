"""`llm-push model_path=<run dir | hf_model dir> repo_id=<owner/name>`: a finished run's exported model on the Hugging
Face Hub, with a model card (composed config, final metrics, sha256 of the data files) and the run's config
(lightning_llm/runtime/hub.py). What `llm-train push_to_hub=<repo id>` does after training.

Arguments are `key=value` like the other commands' (`--key value` works too), but this is not a Hydra app: it
composes no config and creates no run directory. The credential is huggingface_hub's own (`HF_TOKEN`, or `hf auth
login`). No torch import: it reads files and uploads them.
"""

from __future__ import annotations

import argparse
import sys

from lightning_llm.errors import UserError, exit_on_user_error

KEYS = ("model_path", "repo_id", "private", "revision", "commit_message")
_BOOLS = {"true": True, "false": False}


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="llm-push", description=__doc__.split("\n\n")[0],
        epilog="example: llm-push model_path=outputs/<task>/runs/<timestamp> repo_id=me/my-classifier "
               "private=true")
    p.add_argument("--model_path", help="a run directory (its hf_model/) or an exported model folder (required)")
    p.add_argument("--repo_id", help="the Hub repository, owner/name; created if missing (required)")
    p.add_argument("--private", default="false", help="true: a new repository is private (default false)")
    p.add_argument("--revision", default=None, help="a branch to push to, created if missing (default main)")
    p.add_argument("--commit_message", default=None, help="default: 'Upload <architecture> with lightning-llm'")
    return p


def parse(argv: list[str]) -> argparse.Namespace:
    """`key=value` and `--key value` arguments; an unknown key or a missing required one is one line naming it."""
    args: list[str] = []
    for arg in argv:
        if arg.startswith("-"):
            args.append(arg)
            continue
        key, sep, value = arg.partition("=")
        if not sep:
            raise UserError(f"{arg}: expected key=value (keys: {', '.join(KEYS)})")
        if key not in KEYS:
            raise UserError(f"{key}: no such setting of llm-push (keys: {', '.join(KEYS)})")
        args.append(f"--{key}={value}")
    ns, unknown = parser().parse_known_args(args)
    if unknown:
        raise UserError(f"{unknown[0]}: no such setting of llm-push (keys: {', '.join(KEYS)})")
    for key in ("model_path", "repo_id"):
        if not getattr(ns, key):
            raise UserError(f"{key}: required (llm-push model_path=<run dir> repo_id=<owner/name>)")
    if str(ns.private).lower() not in _BOOLS:
        raise UserError(f"private={ns.private!r}: must be true or false")
    ns.private = _BOOLS[str(ns.private).lower()]
    return ns


@exit_on_user_error
def main(argv: list[str] | None = None) -> None:
    from lightning_llm.config.secrets import refuse_secret_overrides
    from lightning_llm.runtime.hub import push

    argv = sys.argv[1:] if argv is None else argv
    refuse_secret_overrides(argv)  # a token pasted on the command line ends up in shell history, not in a card
    ns = parse(argv)
    print(push(ns.model_path, ns.repo_id, private=ns.private, revision=ns.revision,
               commit_message=ns.commit_message))


if __name__ == "__main__":
    main()
