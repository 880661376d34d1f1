"""Rules the test suite keeps so that its passes mean something (docs/correctness.md): no warning category ignored
wholesale, a deprecation in our own code fails, no clock in an assertion, no extra skipped when it is missing."""

from __future__ import annotations

import ast
import re
import warnings
from pathlib import Path

import pytest
import tomllib

from tests.conftest import REPO

TESTS = sorted(p for p in (REPO / "tests").glob("*.py") if p.name != Path(__file__).name)  # not the rules themselves


def _filters() -> list[str]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["filterwarnings"]


def test_no_warning_is_ignored_by_category_alone() -> None:
    for entry in _filters():
        action, message, category, module = (entry.split(":") + ["", "", ""])[:4]
        if action == "ignore":
            assert message and category and module and not module.startswith("lightning_llm"), entry


@pytest.mark.parametrize("category", [DeprecationWarning, FutureWarning])
def test_a_deprecation_raised_in_our_code_fails_the_test(category: type[Warning]) -> None:
    """Under the suite's filters (pyproject), a deprecation attributed to a lightning_llm module is an error."""
    with pytest.raises(category):
        warnings.warn_explicit("x is deprecated", category, "lightning_llm/x.py", 1, module="lightning_llm.x")


def _calls(tree: ast.AST, name: str) -> list[ast.Call]:
    return [node for node in ast.walk(tree) if isinstance(node, ast.Call)
            and ast.unparse(node.func).endswith(name)]


@pytest.mark.parametrize("path", TESTS, ids=[p.name for p in TESTS])
def test_no_clock_in_assertions_and_no_skipped_extras(path: Path) -> None:
    """Timed assertions fail on a busy machine and pass on a broken one; a missing extra must fail (CI installs
    every extra), not skip the tests that need it."""
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assert):
            text = ast.unparse(node)
            assert not any(clock in text for clock in ("perf_counter", "time.time", "monotonic")), \
                f"{path.name}:{node.lineno}: {text}"
    skips = _calls(tree, "importorskip")
    assert not skips, f"{path.name}:{skips[0].lineno}: pytest.importorskip (import the extra instead)"


_TEST_REFERENCE = re.compile(r"(tests/\w+\.py)?::(\w+)")


def test_every_test_the_docs_name_exists() -> None:
    """README and docs/ cite tests as evidence (`tests/test_x.py::test_y`, then `::test_z` for another test of
    the same file): each cited test must still be defined there, so a renamed or deleted test cannot leave a claim
    standing on nothing."""
    missing = []
    for doc in [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]:
        for n, line in enumerate(doc.read_text().splitlines(), 1):
            current = None
            for match in _TEST_REFERENCE.finditer(line):
                current = match.group(1) or current
                if current is None:
                    continue
                source = REPO / current
                if not source.is_file() or not re.search(rf"^def {match.group(2)}\(", source.read_text(), re.M):
                    missing.append(f"{doc.relative_to(REPO)}:{n}: {current}::{match.group(2)}")
    assert not missing, "\n".join(missing)
