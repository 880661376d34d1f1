"""README's and the docs' shell command blocks, run as written, so that a documented command cannot fail as written.

Every ```bash block of README.md and docs/**/*.md is a test case, unless the line before it (blank lines aside) is
a marker comment saying why it cannot run here, e.g. `<!-- no-test: needs a GPU -->` (the network, a GPU, a SLURM
cluster, installing packages). Keep that list short: prefer a command that runs.

- The fast test runs each page's blocks with bash in an empty directory holding only the user's own files that
  the docs name (`_user_files`: train.csv, train.conll, train.json, train.jsonl, ... made from the bundled data),
  with every `llm-*` command replaced by a shell function that records its arguments (after bash has expanded
  them, as written); each recorded command is then checked as the entry point checks it before Hydra starts
  (credential refusal, `paths.output_dir` routing, Hydra's compose API on the command's own root config,
  every setting against its class's signature). `llm-report` and `llm-push` are not Hydra commands and are only
  recorded.
- The slow test runs the same blocks for real, each page in its own empty directory, blocks in page order (a
  later block may use an earlier block's run). Every `llm-train` gets tiny overrides appended (`_TINY`: 2
  optimizer steps, 2 validation/test batches, batch size 4) by a shell function of the same name; the other
  commands run unchanged.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

BUNDLED = REPO / "lightning_llm" / "data" / "bundled"
PAGES = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
COMMANDS = {"llm-train": "train", "llm-eval": "eval", "llm-generate": "generate", "llm-predict": "predict",
            "llm-explain": "explain", "llm-compress": "compress", "llm-chat": "chat", "llm-report": None,
            "llm-push": None}
# Appended to every llm-train of the slow test (`++`: also where a config of the user's own lacks the key).
_TINY = ["++trainer.max_steps=2", "++trainer.limit_val_batches=2", "++trainer.limit_test_batches=2",
         "++data.batch_size=4"]
_BLOCK = re.compile(r"(?P<before>(?:^.*\n){0,3})^```bash\n(?P<body>[\s\S]*?)^```", re.M)
_MARKER = re.compile(r"<!--\s*no-test:\s*(?P<why>[^>]+?)\s*-->")


def blocks(page: Path) -> list[tuple[str, str | None]]:
    """The page's bash blocks in order: (body, reason not to run it or None). The marker must be the last
    non-blank line before the block."""
    found = []
    for match in _BLOCK.finditer(page.read_text()):
        before = [line for line in match["before"].splitlines() if line.strip()]
        marker = _MARKER.search(before[-1]) if before else None
        found.append((match["body"], marker["why"] if marker else None))
    return found


def runnable(page: Path) -> list[str]:
    return [body for body, why in blocks(page) if why is None]


def _page_id(page: Path) -> str:
    return str(page.relative_to(REPO))


def _user_files(directory: Path, rows: int = 48) -> None:
    """The files the docs call the user's own, small, made from the bundled demo data."""
    import csv

    def jsonl(name: str) -> list[dict]:
        return [json.loads(line) for line in (BUNDLED / name).read_text().splitlines()[:rows]]

    for split, name in [("train", "train"), ("validation", "dev"), ("test", "test")]:
        with open(BUNDLED / f"reviews_{split}.csv") as src, open(directory / f"{name}.csv", "w", newline="") as dst:
            out = csv.writer(dst)
            out.writerow(["sentence", "sentiment"])
            for i, row in enumerate(csv.DictReader(src)):
                if i < rows * 2:
                    out.writerow([row["text"], row["label"]])
        sentences = jsonl(f"ner_{split}.jsonl")
        (directory / f"{name}.conll").write_text("\n".join(
            "\n".join(f"{t} {g}" for t, g in zip(s["tokens"], s["tags"])) + "\n" for s in sentences))
        (directory / f"{name}.json").write_text("".join(json.dumps(r) + "\n" for r in jsonl(f"qa_{split}.jsonl")))
        pairs = jsonl(f"translation_{split}.jsonl")
        (directory / f"{name}.jsonl").write_text("".join(
            json.dumps({"translation": {"en": p["source"], "de": p["target"]}}) + "\n" for p in pairs))


def _env(directory: Path) -> dict[str, str]:
    bin_dir = str(Path(sys.executable).parent)
    return {**os.environ, "PATH": bin_dir + os.pathsep + os.environ.get("PATH", ""), "OMP_NUM_THREADS": "1",
            "HOME": os.environ.get("HOME", str(directory))}


def test_every_page_has_blocks_and_markers_are_few() -> None:
    """The extraction sees the pages' commands, and skipping stays the exception."""
    all_blocks = [b for page in PAGES for b in blocks(page)]
    assert len(all_blocks) >= 30
    skipped = [why for _, why in all_blocks if why]
    assert len(skipped) <= 9, skipped
    assert any("llm-train experiment=classify_demo" in body for body, _ in blocks(REPO / "README.md"))


_RECORDER = """
_record() {{ python -c 'import json, sys; print(json.dumps(sys.argv[1:]))' "$@" >> {log}; }}
{functions}
"""


@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_documented_commands_parse(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each page's blocks with bash, `llm-*` recorded instead of run; then every recorded command composes and
    passes the checks its entry point makes before Hydra starts."""
    bodies = runnable(page)
    if not any("llm-" in body for body in bodies):
        pytest.skip("no llm-* command")
    _user_files(tmp_path)
    log = tmp_path / "commands.jsonl"
    functions = "\n".join(f'{name}() {{ _record {name} "$@"; }}' for name in COMMANDS)
    prelude = _RECORDER.format(log=shlex.quote(str(log)), functions=functions)
    for body in bodies:
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", prelude + body], cwd=tmp_path,
                                capture_output=True, text=True, env=_env(tmp_path), timeout=300)
        assert result.returncode == 0, f"{_page_id(page)}: block failed in bash:\n{body}\n{result.stderr[-2000:]}"
    recorded = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    assert recorded, "no llm-* command was reached"

    from lightning_llm.config.precheck import precheck
    from lightning_llm.config.secrets import refuse_secret_overrides
    from lightning_llm.runtime.argv import route_group_shorthands, route_output_dir

    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))  # `PYTHONPATH=. llm-train ...`: the user's own package
    for name, *argv in recorded:
        config_name = COMMANDS[name]
        if config_name is None:
            continue
        try:
            refuse_secret_overrides(argv)
            precheck(route_output_dir(route_group_shorthands(argv)), config_name)
        except Exception as err:  # noqa: BLE001 (the message names the command)
            pytest.fail(f"{_page_id(page)}: `{name} {shlex.join(argv)}` is invalid: {err}")


@pytest.mark.slow
@pytest.mark.parametrize("page", PAGES, ids=_page_id)
def test_documented_commands_run(page: Path, tmp_path: Path) -> None:
    """Each page's blocks run for real in an empty directory (with the user's own files), `llm-train` with tiny
    overrides appended."""
    bodies = runnable(page)
    if not bodies:
        pytest.skip("no runnable block")
    _user_files(tmp_path)
    # The tiny overrides go after the user's, except for commands that only print (--cfg, --help, --info): an
    # override after their option is refused by Hydra's argument parser.
    prelude = (f'llm-train() {{ case " $* " in *" --cfg "*|*" --help "*|*" --info"*) command llm-train "$@";; '
               f'*) command llm-train "$@" {" ".join(_TINY)};; esac; }}\n')
    for body in bodies:
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", prelude + body], cwd=tmp_path,
                                capture_output=True, text=True, env=_env(tmp_path), timeout=1200)
        assert result.returncode == 0, (f"{_page_id(page)}: block failed as written:\n{body}\n"
                                        f"{result.stdout[-1500:]}\n{result.stderr[-3000:]}")
