"""The configs `llm-*` compose (conf/), their schema and the checks that run before any work.

The configs are the repository's top-level conf/, shipped in the wheel as the package `lightning_llm.conf`
(pyproject.toml maps it to conf/). `CONFIG_PATH` is what the entry points give `@hydra.main`; `CONFIG_DIR` is the
same directory as a path (for `initialize_config_dir`, scripts and tests)."""

from importlib import resources
from pathlib import Path

CONFIG_PACKAGE = "lightning_llm.conf"


def _config_location() -> tuple[str, str]:
    try:
        # A wheel: <site-packages>/lightning_llm/conf. `pip install -e .`: the repo's conf/, where setuptools'
        # editable finder maps the package.
        return f"pkg://{CONFIG_PACKAGE}", str(resources.files(CONFIG_PACKAGE))
    except ModuleNotFoundError:  # a checkout imported without installing it (PYTHONPATH=<repo>)
        path = str(Path(__file__).resolve().parents[2] / "conf")
        return path, path


CONFIG_PATH, CONFIG_DIR = _config_location()
