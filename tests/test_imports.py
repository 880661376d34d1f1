"""What importing costs and changes: `llm-report`, `llm-push` and the Hydra sweeper plugin import no torch or Lightning (every
Hydra application in the environment loads the plugin), importing the package changes no process-wide setting
beyond the documented one, and none of the process tricks that once won back import time remain."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_HEAVY = ("torch", "pytorch_lightning", "lightning_fabric", "transformers", "datasets")


def _modules_after(code: str, cwd: Path | None = None) -> set[str]:
    """The heavy modules loaded once `code` ran in a fresh interpreter (what it printed with `loaded()`)."""
    prelude = f"import sys\ndef loaded():\n    print(sorted(m for m in {_HEAVY!r} if m in sys.modules))\n"
    proc = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)], capture_output=True, text=True,
                          timeout=120, cwd=cwd or REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return set(eval(proc.stdout.strip().splitlines()[-1]))


def test_llm_report_imports_no_torch(tmp_path: Path) -> None:
    assert _modules_after("""
        import lightning_llm.report
        try:
            lightning_llm.report.main(["--help"])
        except SystemExit:
            pass
        loaded()
    """) == set()
    # and on a real (empty) sweep directory: a one-line error, still without torch
    assert _modules_after(f"""
        import lightning_llm.report
        try:
            lightning_llm.report.main([{str(tmp_path)!r}])
        except SystemExit:
            pass
        loaded()
    """) == set()


def test_llm_push_imports_no_torch(tmp_path: Path) -> None:
    """llm-push reads files and uploads them: its help, its errors and a push itself need no torch."""
    assert _modules_after(f"""
        import lightning_llm.push
        for argv in (["--help"], ["model_path={tmp_path}/none", "repo_id=me/x"]):
            try:
                lightning_llm.push.main(argv)
            except SystemExit:
                pass
        from lightning_llm.runtime import hub
        hub.model_card  # the module the push itself runs
        loaded()
    """) == set()


def test_a_plain_hydra_app_does_not_import_torch_through_our_plugin(tmp_path: Path) -> None:
    """Hydra imports every module under `hydra_plugins` at start-up, ours included."""
    (tmp_path / "app.py").write_text(textwrap.dedent("""
        import sys
        import hydra
        from hydra.core.plugins import Plugins
        from hydra.plugins.sweeper import Sweeper

        @hydra.main(version_base="1.3", config_path=None)
        def app(cfg):
            names = [p.__name__ for p in Plugins.instance().discover(Sweeper)]
            assert "OptunaSweeper" in names, names  # our plugin was found, so it was imported
            print(sorted(m for m in ("torch", "pytorch_lightning", "transformers") if m in sys.modules))

        app()
    """))
    proc = subprocess.run([sys.executable, "app.py", "hydra.run.dir=.", "hydra.output_subdir=null"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_importing_the_package_changes_only_the_documented_setting() -> None:
    code = """
        import logging, os, sys, warnings
        before_env, before_filters = dict(os.environ), list(warnings.filters)
        import lightning_llm
        changed = {k for k in os.environ if os.environ[k] != before_env.get(k)}
        assert changed <= {"TOKENIZERS_PARALLELISM"}, changed
        assert warnings.filters == before_filters
        assert not [n for n, l in logging.root.manager.loggerDict.items()
                    if isinstance(l, logging.Logger) and l.filters]
        loaded()
    """
    env = {k: v for k, v in os.environ.items() if k != "TOKENIZERS_PARALLELISM"}
    proc = subprocess.run([sys.executable, "-c", "import sys\ndef loaded(): print('ok')\n" + textwrap.dedent(code)],
                          capture_output=True, text=True, timeout=120, env=env, cwd=REPO)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_no_process_tricks_in_the_package() -> None:
    """Commands end the normal way (interpreter teardown, finalizers run) and the garbage collector is left alone."""
    tricks = re.compile(r"gc\.freeze|gc\.disable|os\._exit|threading\._shutdown|atexit\._run_exitfuncs"
                        r"|set_crc32_options")
    found = [f"{path.relative_to(REPO)}:{n}" for root in ("lightning_llm", "hydra_plugins")
             for path in sorted((REPO / root).rglob("*.py"))
             for n, line in enumerate(path.read_text().splitlines(), 1) if tricks.search(line)]
    assert found == []


def test_the_cache_is_per_user_not_per_directory(compose_cfg, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.delenv("LIGHTNING_LLM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compose_cfg([]).paths.cache_dir == str(tmp_path / "xdg" / "lightning_llm")
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert compose_cfg([]).paths.cache_dir == str(tmp_path / "home" / ".cache" / "lightning_llm")
    monkeypatch.setenv("LIGHTNING_LLM_CACHE", str(tmp_path / "mine"))
    assert compose_cfg(["paths.log_dir=elsewhere"]).paths.cache_dir == str(tmp_path / "mine")
