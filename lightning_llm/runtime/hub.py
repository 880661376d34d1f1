"""Publish a run on the Hugging Face Hub: its exported model (`hf_model/`, what `from_pretrained` loads), a model
card that says how it was made (composed config, final metrics, sha256 of the data files) and the run's config.

Through `huggingface_hub.HfApi` (`create_repo(exist_ok=True)`, `upload_folder`): one commit per push. The credential
is whatever huggingface_hub finds itself (`HF_TOKEN`, or a `hf auth login`); this module reads it only to scrub it
(`_secrets`) from every text it writes or prints (`config.secrets.redact`). The run directory is only read: what
is uploaded is staged in a temporary folder. Importing this module imports neither torch nor huggingface_hub
(`llm-push` stays light).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from lightning_llm.config.secrets import REDACTED, redact, secret_values
from lightning_llm.errors import UserError, first_line
from lightning_llm.utils.paths import looks_local

LIBRARY = "lightning-llm"
# The run's own files, beside the model in the repository.
RUN_FILES_DIR = "training"
# results.json keys that hold local paths (the user's directories), left out of what is uploaded.
_LOCAL_PATH_KEYS = ("best_checkpoint", "last_checkpoint", "hf_model", "run_dir")
_REPO_ID = re.compile(r"^([\w.-]+/)?[\w.-]+$")
# An Authorization header's value in an error text, whatever token it holds.
_BEARER = re.compile(r"(Bearer\s+)\S+", re.IGNORECASE)


@dataclass(frozen=True)
class PushSource:
    """What a push reads: the exported model folder and, when it came from a run, that run's directory."""

    hf_model: Path
    run_dir: Path | None


def check_repo_id(repo_id: Any, key: str) -> str:
    """`name` or `owner/name` (the Hub's own rules are checked by the Hub)."""
    if not isinstance(repo_id, str) or not _REPO_ID.match(repo_id) or repo_id.endswith((".git", ".")):
        raise UserError(f"{key}: {repo_id!r} is not a hub repository id (owner/name)")
    return repo_id


def resolve_source(model_path: str | os.PathLike[str], key: str = "model_path") -> PushSource:
    """A run directory (its `hf_model/`) or an exported model folder (config.json), checked before any upload."""
    path = Path(model_path).expanduser()
    if not path.exists():
        raise UserError(f"{key}: not found: {model_path}")
    if path.is_file():
        raise UserError(f"{key}: {model_path} is a file; llm-push uploads an exported model: give the run directory "
                        f"or its hf_model/")
    if (path / "config.json").is_file():
        parent = path.resolve().parent
        in_run = path.resolve().name == "hf_model" and ((parent / ".hydra").is_dir()
                                                         or (parent / "results.json").is_file())
        return PushSource(path, parent if in_run else None)
    if (path / "hf_model" / "config.json").is_file():
        return PushSource(path / "hf_model", path)
    if (path / ".hydra").is_dir() or (path / "results.json").is_file():
        raise UserError(f"{key}: {model_path} has no hf_model/ (the exported model): run with export=true "
                        f"(the default), or export=true ckpt_path=<its checkpoint> train=false to export it")
    raise UserError(f"{key}: {model_path} is neither a run directory nor an exported model folder (no config.json)")


def _secrets() -> list[str]:
    """What to scrub: the values of credential environment variables and the token huggingface_hub sends, which
    `hf auth login` keeps in a file that no environment variable shows."""
    from huggingface_hub import get_token

    try:
        token = get_token()
    except Exception:  # a failed OIDC exchange (HF_OIDC_RESOURCE): then there is no token to send either
        token = None
    return secret_values() + ([token] if token else [])


# ----------------------------------------------------------------------------------------------- model card
def _run_config(run_dir: Path | None, secrets: list[str]) -> tuple[dict[str, Any] | None, list[str]]:
    """The composed config (interpolations as written, `secrets` redacted) and the command-line overrides."""
    if run_dir is None or not (run_dir / ".hydra" / "config.yaml").is_file():
        return None, []
    config = redact(OmegaConf.to_container(OmegaConf.load(run_dir / ".hydra" / "config.yaml"), resolve=False),
                    secrets)
    overrides_file = run_dir / ".hydra" / "overrides.yaml"
    overrides = OmegaConf.to_container(OmegaConf.load(overrides_file)) if overrides_file.is_file() else []
    return config, redact([str(o) for o in overrides or []], secrets)


def _run_results(run_dir: Path | None, secrets: list[str]) -> dict[str, Any] | None:
    """results.json without the local paths, data files named by their file name (`secrets` redacted)."""
    if run_dir is None or not (run_dir / "results.json").is_file():
        return None
    try:
        results = json.loads((run_dir / "results.json").read_text())
    except ValueError as err:
        raise UserError(f"{run_dir / 'results.json'}: not valid JSON: {first_line(err)}") from err
    if results.get("status") not in (None, "completed"):
        raise UserError(f"{run_dir / 'results.json'}: the run's status is {results.get('status')!r}, not completed: "
                        f"push a finished run")
    trimmed = {k: v for k, v in results.items() if k not in _LOCAL_PATH_KEYS}
    for entry in ((trimmed.get("data") or {}).get("files") or {}).values():
        entry["file"] = Path(entry["file"]).name
    return redact(trimmed, secrets)


def _base_model(config: dict[str, Any] | None) -> str | None:
    """The hub id the run fine-tuned, when it started from one (not from a local folder or from scratch)."""
    name = ((config or {}).get("model") or {}).get("pretrained_model_name_or_path")
    if not isinstance(name, str) or "${" in name or looks_local(name) or Path(name).expanduser().exists():
        return None
    return name if _REPO_ID.match(name) else None


def _architecture(hf_model: Path) -> str | None:
    try:
        architectures = json.loads((hf_model / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError):
        return None
    return architectures[0] if architectures else None


def _count(n: Any, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _metric_rows(results: dict[str, Any]) -> list[str]:
    rows = []
    for split in ("val", "test"):
        for name, value in sorted((results.get(split) or {}).items()):
            if isinstance(value, (int, float)):
                rows.append(f"| {split} | `{name}` | {value:.4f} |")
    return rows


def _data_section(results: dict[str, Any] | None) -> list[str]:
    data = (results or {}).get("data")
    if not data:
        return ["Not recorded by this run."]
    if data.get("hub"):
        config = f" (config `{data['config']}`)" if data.get("config") else ""
        splits = ", ".join(f"{k}: `{v}`" for k, v in (data.get("splits") or {}).items() if v)
        return [f"Hub dataset `{data['hub']}`{config}, splits {splits}."]
    lines = ["| split | file | bytes | sha256 |", "|---|---|---|---|"]
    lines += [f"| {split} | `{entry.get('file')}` | {entry.get('bytes')} | `{entry.get('sha256')}` |"
              for split, entry in (data.get("files") or {}).items()]
    if data.get("bundled"):
        lines += ["", "The demo data bundled with lightning-llm."]
    return lines


def model_card(source: PushSource, repo_id: str, config: dict[str, Any] | None, overrides: list[str],
               results: dict[str, Any] | None) -> Any:
    """A `huggingface_hub.ModelCard`: metadata (library, tags, base model) and a body with how to load the model,
    its final metrics (`results`), the data it saw and the composed `config` (both as `stage` uploads them)."""
    from huggingface_hub import ModelCard, ModelCardData

    task = (results or {}).get("task_name") or (config or {}).get("task_name")
    tags = [LIBRARY] + ([str(task)] if task else []) + [str(t) for t in (config or {}).get("tags") or []
                                                        if isinstance(t, (str, int)) and str(t) != REDACTED]
    base = _base_model(config)
    hub_data = ((results or {}).get("data") or {}).get("hub")
    data = ModelCardData(library_name="transformers", tags=list(dict.fromkeys(tags)), base_model=base,
                         datasets=[hub_data] if hub_data else None)
    architecture = _architecture(source.hf_model) or "AutoModel"
    origin = f"fine-tuned from [`{base}`](https://huggingface.co/{base})" if base else \
        "trained from scratch" if config and not ((config.get("model") or {}).get("pretrained_model_name_or_path")) \
        else "trained"
    body = [f"# {repo_id.rsplit('/', 1)[-1]}", "",
            f"A {task or 'transformers'} model ({architecture}) {origin} with "
            f"{LIBRARY} (PyTorch Lightning + Hydra + transformers).", "",
            "## Use", "", "```python", f"from transformers import AutoTokenizer, {architecture}", "",
            f'model = {architecture}.from_pretrained("{repo_id}")',
            f'tokenizer = AutoTokenizer.from_pretrained("{repo_id}")', "```", "",
            "## Final metrics", ""]
    if results:
        optimized = results.get("optimized_metric") or {}
        rows = _metric_rows(results)
        body += ["| split | metric | value |", "|---|---|---|", *rows] if rows else ["No metrics were recorded."]
        if optimized.get("name"):
            value = optimized.get("value")
            body += ["", f"Optimized metric `{optimized['name']}`: "
                         f"{'n/a' if value is None else format(value, '.4f')}; "
                         f"{_count(results.get('global_step'), 'step')}, {_count(results.get('epochs'), 'epoch')}. "
                         f"All values: [`{RUN_FILES_DIR}/results.json`]({RUN_FILES_DIR}/results.json)."]
    else:
        body.append("Not known: the model was pushed from a folder outside a run directory (no results.json).")
    body += ["", "## Data (sha256 of the files)", "", *_data_section(results), "", "## Training config", ""]
    if config is not None:
        if overrides:
            body += ["Command line: `" + " ".join(overrides) + "`", ""]
        body += [f"The composed Hydra config as the run saved it, interpolations as written (also "
                 f"[`{RUN_FILES_DIR}/config.yaml`]({RUN_FILES_DIR}/config.yaml)):",
                 "", "```yaml", OmegaConf.to_yaml(config).rstrip(), "```"]
    else:
        body.append("Not known: the model was pushed from a folder outside a run directory (no .hydra/config.yaml).")
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body) + "\n")


# ----------------------------------------------------------------------------------------------- upload
def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # same filesystem: no copy of the weights
    except OSError:
        shutil.copy2(src, dst)


def _unlinked(path: Path) -> Path:
    """`path`, with whatever was staged there (possibly a hard link to a user's file) removed."""
    path.unlink(missing_ok=True)
    return path


def stage(source: PushSource, repo_id: str, folder: Path) -> list[str]:
    """Fill `folder` with what the repository receives; returns the relative paths."""
    for item in sorted(source.hf_model.rglob("*")):
        if item.is_file() and not any(part.startswith(".") for part in item.relative_to(source.hf_model).parts):
            target = folder / item.relative_to(source.hf_model)
            target.parent.mkdir(parents=True, exist_ok=True)
            _link_or_copy(item, target)
    secrets = _secrets()
    config, overrides = _run_config(source.run_dir, secrets)
    results = _run_results(source.run_dir, secrets)
    # Staged files may be hard links to the user's own: a file written here replaces its link first, so the
    # original (a README.md of the export, a hub cache entry) keeps its contents.
    _unlinked(folder / "README.md")
    model_card(source, repo_id, config, overrides, results).save(folder / "README.md")
    if config is not None or results is not None:
        (folder / RUN_FILES_DIR).mkdir(exist_ok=True)
    if config is not None:
        _unlinked(folder / RUN_FILES_DIR / "config.yaml").write_text(OmegaConf.to_yaml(config))
        _unlinked(folder / RUN_FILES_DIR / "overrides.yaml").write_text(OmegaConf.to_yaml(overrides))
    if results is not None:
        _unlinked(folder / RUN_FILES_DIR / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def push(model_path: str | os.PathLike[str], repo_id: str, *, private: bool = False, revision: str | None = None,
         commit_message: str | None = None, key: str = "model_path") -> str:
    """Create the repository if needed (and the branch `revision`), upload model + card + run config in one commit,
    return a line saying where it went. Any failure of the Hub (network, authentication, permissions) is one
    `UserError` line naming the repository; the local files are left as they were."""
    repo_id = check_repo_id(repo_id, "repo_id")
    source = resolve_source(model_path, key)
    from huggingface_hub import HfApi

    api = HfApi()
    with tempfile.TemporaryDirectory(prefix="llm-push-") as tmp:
        files = stage(source, repo_id, Path(tmp))
        message = commit_message or f"Upload {_architecture(source.hf_model) or 'model'} with {LIBRARY}"
        try:
            url = api.create_repo(repo_id, private=private, exist_ok=True)
            if revision:
                api.create_branch(repo_id, branch=revision, exist_ok=True)
            commit = api.upload_folder(repo_id=repo_id, folder_path=tmp, revision=revision, commit_message=message)
        except Exception as err:  # huggingface_hub's HTTP errors, httpx's connection errors, OSError
            raise UserError(f"push to {repo_id} failed: {_hub_error_line(err)} (nothing local was "
                            f"changed; check HF_TOKEN and the network, then retry with llm-push "
                            f"model_path={model_path} repo_id={repo_id})") from err
    where = getattr(commit, "commit_url", None) or str(url)
    return f"pushed {len(files)} files to {repo_id}" + (f" (revision {revision})" if revision else "") + f": {where}"


def _hub_error_line(err: BaseException) -> str:
    """The error's type and first line, scrubbed: an HTTP error may quote the request's headers."""
    line = redact(f"{type(err).__name__}: {' '.join(first_line(err).split())}", _secrets())
    return _BEARER.sub(lambda m: m.group(1) + REDACTED, line)

