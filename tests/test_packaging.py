"""The package as users get it: the wheel ships the configs (as lightning_llm/conf), the Optuna sweeper plugin and
the bundled data; a non-editable install in a fresh venv runs the quickstart from an empty directory without any
extra; users add their own configs with --config-dir / hydra.searchpath; a missing extra is one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import venv
import zipfile
from pathlib import Path

import pytest
import yaml

import lightning_llm.train  # noqa: F401  (what the CLI imports, config schemas included, for compose_cfg)
from lightning_llm.config import CONFIG_DIR, CONFIG_PACKAGE, CONFIG_PATH
from lightning_llm.errors import UserError
from lightning_llm.runtime.extras import check_command_line, install_hint, require_extra
from tests.conftest import REPO, TINY_BERT

OPTIONAL = {"wandb": "wandb", "tensorboard": "tensorboard", "matplotlib": "report",
            "hydra_plugins.hydra_submitit_launcher": "slurm", "seqeval": "ner",
            "sacrebleu": "seq2seq", "rouge_score": "seq2seq"}  # module -> extra


def _missing(extra: str, what: str) -> str:
    return f"{what} needs the {extra} extra: {install_hint(extra)}"


# ------------------------------------------------------------------------------------------ where configs come from
def test_configs_are_the_repos_conf_found_as_a_package() -> None:
    """Installed (editable here, as in CI): Hydra reads pkg://lightning_llm.conf, which is the repo's conf/."""
    assert Path(CONFIG_DIR) == REPO / "conf"
    assert CONFIG_PATH == f"pkg://{CONFIG_PACKAGE}", \
        "lightning_llm.conf does not resolve: an install older than pyproject's package-dir? `pip install -e .`"


def test_a_checkout_without_install_uses_its_conf() -> None:
    """No install at all (no site-packages, no editable finder): the checkout's conf/ as a path."""
    code = "from lightning_llm.config import CONFIG_PATH, CONFIG_DIR; print(CONFIG_PATH); print(CONFIG_DIR)"
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}).stdout.split()
    assert out == [str(REPO / "conf")] * 2


# --------------------------------------------------------------------------------------------------------- wheel
def _source_copy(dest: Path) -> Path:
    """What the wheel is built from, copied without caches (an in-place build would leave build/ in the repo and
    could ship stale files from it)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, dest / name)
    for name in ("conf", "lightning_llm", "hydra_plugins"):
        shutil.copytree(REPO / name, dest / name, ignore=ignore)
    return dest


def _build_wheel(tmp: Path) -> Path:
    import setuptools  # noqa: F401  (the build backend, used without build isolation: missing, this fails)

    (tmp / "src").mkdir()
    src = _source_copy(tmp / "src")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp / "dist"), str(src)], check=True, capture_output=True, text=True, timeout=300)
    (wheel,) = (tmp / "dist").glob("lightning_llm-*.whl")
    return wheel


def _expected_files() -> set[str]:
    """Every source file of the packages, every config (under lightning_llm/conf) and the bundled data."""
    files = {p.relative_to(REPO).as_posix() for root in ("lightning_llm", "hydra_plugins")
             for p in (REPO / root).rglob("*.py")}
    files |= {"lightning_llm/conf/" + p.relative_to(REPO / "conf").as_posix()
              for p in [*(REPO / "conf").rglob("*.yaml"), REPO / "conf" / "__init__.py"]}
    files |= {p.relative_to(REPO).as_posix() for p in (REPO / "lightning_llm/data/bundled").iterdir() if p.is_file()}
    return files


def test_wheel_ships_configs_plugin_and_bundled_data(tmp_path: Path) -> None:
    with zipfile.ZipFile(_build_wheel(tmp_path)) as wheel:
        names = set(wheel.namelist())
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        metadata = wheel.read(f"{dist_info}/METADATA").decode()
        entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
    missing = sorted(_expected_files() - names)
    assert not missing, ("not in the wheel (a new package must be listed in pyproject.toml's "
                         f"[tool.setuptools] packages): {missing}")
    for name in ("lightning_llm/conf/train.yaml", "lightning_llm/conf/experiment/classify_demo.yaml",
                 "lightning_llm/conf/hydra/launcher/slurm.yaml", "hydra_plugins/lightning_llm_optuna/sweeper.py",
                 "lightning_llm/data/bundled/reviews_train.csv"):
        assert name in names
    assert not [n for n in names if n.split("/")[0] in ("conf", "tests", "scripts")]
    assert "hydra_plugins/__init__.py" not in names  # a namespace shared with Hydra's other plugins
    for name, module in [("llm-train", "train"), ("llm-eval", "evaluate"), ("llm-generate", "generate"),
                         ("llm-report", "report"), ("llm-predict", "predict"), ("llm-explain", "explain"),
                         ("llm-compress", "compress"), ("llm-chat", "chat"), ("llm-push", "push")]:
        assert f"{name} = lightning_llm.{module}:main" in entry_points
    requires = [line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    core = [r for r in requires if "extra ==" not in r]
    for package, extra in [("wandb", "wandb"), ("tensorboard", "tensorboard"), ("matplotlib", "report"),
                           ("hydra-submitit-launcher", "slurm")]:
        assert not [r for r in core if r.startswith(package)], f"{package} is a core dependency"
        assert [r for r in requires if r.startswith(package) and f'extra == "{extra}"' in r], (package, extra)
    for extra in ("wandb", "tensorboard", "report", "slurm", "all", "dev"):
        assert f"Provides-Extra: {extra}" in metadata


# ------------------------------------------------------------------------------------------------ users' configs
def _user_conf(root: Path) -> Path:
    """A user's own experiment, model and data options, built on the packaged ones (no fork, no copy)."""
    tiny = "".join(f"{key.removeprefix('model.')}: {value}\n" for key, value in (o.split("=") for o in TINY_BERT))
    files = {
        "experiment/mine.yaml": textwrap.dedent("""\
            # @package _global_
            defaults:
              - override /model: tiny_bert
              - override /data: my_reviews
            task_name: mine
            tags: [mine]
            """),
        "model/tiny_bert.yaml": "defaults:\n  - bert_classifier\n" + tiny,  # the packaged option, smaller
        "data/my_reviews.yaml": "defaults:\n  - text_classification\nmax_length: 24\nbatch_size: 16\n",
    }
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_config_dir_adds_users_experiment_model_and_data(run_cli, tmp_path: Path) -> None:
    conf = _user_conf(tmp_path / "my_conf")
    proc = run_cli("lightning_llm.train", "--config-dir", str(conf), "experiment=mine", "debug=fdr")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run_dir,) = (tmp_path / "outputs").glob("*/runs/*")  # debug=fdr names the task "debug"
    cfg = yaml.safe_load((run_dir / ".hydra" / "config.yaml").read_text())
    assert cfg["tags"] == ["mine"]  # experiment/mine.yaml
    assert (cfg["model"]["hidden_size"], cfg["model"]["num_hidden_layers"]) == (32, 1)  # model/tiny_bert.yaml
    assert (cfg["data"]["max_length"], cfg["data"]["batch_size"]) == (24, 16)  # data/my_reviews.yaml
    assert json.loads((run_dir / "results.json").read_text())["status"] == "completed"


def test_hydra_searchpath_adds_users_configs(compose_cfg, tmp_path: Path) -> None:
    """The same files through `hydra.searchpath` (command line or a config file), composed as the CLI does."""
    conf = _user_conf(tmp_path / "my_conf")
    cfg = compose_cfg([f"hydra.searchpath=[file://{conf}]", "experiment=mine"])
    assert (cfg.task_name, cfg.model.hidden_size, cfg.data.max_length) == ("mine", 32, 24)


# ------------------------------------------------------------------------------------------------ missing extras
@pytest.fixture
def without(monkeypatch: pytest.MonkeyPatch):
    """Make modules unimportable, as when their extra is not installed."""

    def _hide(*modules: str) -> None:
        for module in modules:
            monkeypatch.setitem(sys.modules, module, None)

    return _hide


@pytest.mark.parametrize(("argv", "hidden", "message"), [
    (["logger=wandb"], "wandb", _missing("wandb", "logger=wandb")),
    (["-m", "logger=csv,many"], "tensorboard", _missing("tensorboard", "logger=many")),
    (["logger=[csv,tensorboard]"], "tensorboard", _missing("tensorboard", "logger=tensorboard")),
    (["-m", "hydra/launcher=slurm"], "hydra_plugins.hydra_submitit_launcher", _missing("slurm", "hydra/launcher=slurm")),
])
def test_command_line_choice_needing_a_missing_extra(without, argv, hidden, message) -> None:
    check_command_line(argv)  # all installed here
    without(hidden)
    with pytest.raises(UserError) as err:
        check_command_line(argv)
    assert str(err.value) == message
    check_command_line(["logger=csv", "model.learning_rate=1e-3", "--cfg", "job"])


def test_loggers_and_report_name_their_extra(without, tmp_path: Path) -> None:
    from lightning_llm.report import write_report
    from lightning_llm.tracking.loggers import make_tensorboard_logger, make_wandb_logger

    without(*OPTIONAL)
    with pytest.raises(UserError, match=r'^logger=wandb needs the wandb extra: ' + re.escape(install_hint("wandb")) + r'$'):
        make_wandb_logger(project="p", save_dir=str(tmp_path))
    with pytest.raises(UserError, match=r"^logger=tensorboard needs the tensorboard extra"):
        make_tensorboard_logger(save_dir=str(tmp_path))
    with pytest.raises(UserError, match=r'^llm-report needs the report extra: ' + re.escape(install_hint("report")) + r'$'):
        write_report(tmp_path)


def test_require_extra_blames_only_the_missing_module(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert require_extra("json", "x", "y").dumps([]) == "[]"
    with pytest.raises(UserError, match="^logger=x needs the x extra"):
        require_extra("no_such_module_here", "x", "logger=x")
    (tmp_path / "half_installed.py").write_text("import no_such_module_here\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ModuleNotFoundError, match="no_such_module_here"):  # installed, but broken: its own error
        require_extra("half_installed", "x", "logger=x")


@pytest.mark.slow  # a CLI start (~8 s); the extras unit tests cover the message
def test_cli_missing_extra_is_one_line(tmp_path: Path) -> None:
    """`llm-train logger=wandb` without wandb: exit 2, one stderr line naming the extra, nothing written."""
    code = ("import sys; sys.modules['wandb'] = None; sys.argv[0] = 'llm-train'; "
            "from lightning_llm.train import main; main()")
    proc = subprocess.run([sys.executable, "-c", code, "experiment=classify_demo", "logger=wandb"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    # One line naming the extra and an install command. Which command depends on the metadata this interpreter
    # finds (a clone's egg-info on the test's own sys.path, the installed dist-info here): tests/test_extras.py
    # checks install_hint itself.
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: logger=wandb needs the wandb extra: pip install "), line
    assert not (tmp_path / "outputs").exists()


# ---------------------------------------------------------------------------------- non-editable install, fresh venv
def _constraints(path: Path) -> Path:
    """This environment's versions (torch's CPU build included), so the venv gets what the tests run with."""
    frozen = subprocess.run([sys.executable, "-m", "pip", "freeze", "--exclude-editable"], capture_output=True,
                            text=True, check=True).stdout.splitlines()
    path.write_text("\n".join(line for line in frozen if "==" in line and not line.startswith("lightning-llm")) + "\n")
    return path


@pytest.mark.slow
@pytest.mark.registry  # pip installs every dependency into the new venv: a package index or a local wheel folder
def test_pip_install_into_fresh_venv_runs_quickstart_from_empty_dir(tmp_path: Path) -> None:
    """`pip install .` (not editable) into a venv without system site-packages and without extras, then
    `llm-train experiment=classify_demo trainer.max_epochs=1` from an empty directory."""
    (tmp_path / "src").mkdir()
    src = _source_copy(tmp_path / "src")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LIGHTNING_LLM_CACHE", "VIRTUAL_ENV")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    install = subprocess.run([str(bin_dir / "pip"), "install", "-q", "-c", str(_constraints(tmp_path / "c.txt")),
                              str(src)], capture_output=True, text=True, env=env, timeout=1500)
    assert install.returncode == 0, install.stderr[-3000:]

    empty = tmp_path / "empty"
    empty.mkdir()
    probe = textwrap.dedent("""\
        import importlib.util, json, lightning_llm, hydra_plugins.lightning_llm_optuna as plugin
        from hydra.core.plugins import Plugins
        from hydra.plugins.sweeper import Sweeper
        from lightning_llm.config import CONFIG_DIR, CONFIG_PATH
        print(json.dumps({"package": lightning_llm.__file__, "plugin": plugin.__file__, "config_path": CONFIG_PATH,
                          "config_dir": CONFIG_DIR, "sweepers": [s.__name__ for s in Plugins.instance().discover(Sweeper)],
                          "optional": [m for m in %r if importlib.util.find_spec(m.split(".")[0]) is not None
                                       and importlib.util.find_spec(m) is not None]}))
        """) % sorted(OPTIONAL)
    found = json.loads(subprocess.run([str(bin_dir / "python"), "-c", probe], cwd=empty, env=env, check=True,
                                      capture_output=True, text=True).stdout)
    site = str(env_dir / "lib")
    assert found["package"].startswith(site) and found["plugin"].startswith(site), found
    assert found["config_path"] == "pkg://lightning_llm.conf" and found["config_dir"].startswith(site), found
    assert "OptunaSweeper" in found["sweepers"], found
    assert found["optional"] == [], "the default install pulls in an extra"

    run = subprocess.run([str(bin_dir / "llm-train"), "experiment=classify_demo", "trainer.max_epochs=1"], cwd=empty,
                         env=env, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, run.stderr[-3000:]
    (run_dir,) = (empty / "outputs" / "classify_demo" / "runs").iterdir()
    results = json.loads((run_dir / "results.json").read_text())
    assert results["status"] == "completed" and "test/acc" in results["test"]
    assert (run_dir / "hf_model" / "config.json").is_file()

    # A copy installed from a local path: the hint names that path with the extra (runtime/extras.install_hint).
    for command, start in [(["llm-train", "experiment=classify_demo", "logger=wandb"],
                            f'error: logger=wandb needs the wandb extra: pip install "{src}[wandb]"'),
                           (["llm-report", str(run_dir)], f'error: llm-report needs the report extra: pip install "{src}[report]"')]:
        proc = subprocess.run([str(bin_dir / command[0]), *command[1:]], cwd=empty, env=env, capture_output=True,
                              text=True, timeout=300)
        assert proc.returncode == 2 and proc.stderr.splitlines() == [start], proc.stderr[-3000:]
