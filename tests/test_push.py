"""Pushing a run to the Hugging Face Hub (`push_to_hub=` of llm-train, `llm-push`), never over the network:
huggingface_hub's `HfApi` is replaced at its boundary (`create_repo`, `create_branch`, `upload_folder`) by a stand-in
that copies each upload into a local folder and records the arguments. What is checked is what the Hub would
receive: the model and tokenizer (loadable with from_pretrained), a model card whose metrics equal results.json,
the composed config, the sha256 of the data files, no credential in any file; and the one-line errors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path
from typing import Any

import pytest
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import HfHubHTTPError
from omegaconf import OmegaConf

from lightning_llm import push as push_cli
from lightning_llm.config.validation import check_push_settings
from lightning_llm.data.sources import BUNDLED_DIR
from lightning_llm.errors import UserError
from lightning_llm.runtime.hub import RUN_FILES_DIR
from lightning_llm.train import train
from tests.conftest import REPO, TINY_BERT, compose_run_config

# A tiny run: one epoch of two batches, one validation and one test batch.
TINY_RUN = [*TINY_BERT, "trainer.max_epochs=1", "++trainer.limit_train_batches=2", "++trainer.limit_val_batches=1",
            "++trainer.limit_test_batches=1", "logger=none"]
TOKEN = "hf_FAKEtoken0123456789abcdef"  # what HF_TOKEN holds in these tests; must never reach a file or the console


class FakeHub:
    """A local stand-in for the Hub: repositories are folders `root/<owner>/<name>/<revision>`."""

    def __init__(self, root: str | Path, fail: BaseException | None = None) -> None:
        self.root, self.fail, self.calls = Path(root), fail, []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> FakeHub:
        hub = self

        def create_repo(api: HfApi, repo_id: str, **kwargs: Any) -> str:
            hub.calls.append(("create_repo", repo_id, kwargs))
            if hub.fail is not None:
                raise hub.fail
            if (hub.root / repo_id).exists() and not kwargs.get("exist_ok"):
                raise RuntimeError(f"409 Conflict: {repo_id} exists")
            (hub.root / repo_id).mkdir(parents=True, exist_ok=True)
            return f"https://huggingface.co/{repo_id}"

        def create_branch(api: HfApi, repo_id: str, **kwargs: Any) -> None:
            hub.calls.append(("create_branch", repo_id, kwargs))

        def upload_folder(api: HfApi, **kwargs: Any) -> Any:
            hub.calls.append(("upload_folder", kwargs["repo_id"], kwargs))
            shutil.copytree(kwargs["folder_path"], hub.repo(kwargs["repo_id"], kwargs.get("revision")),
                            dirs_exist_ok=True)
            return types.SimpleNamespace(commit_url=f"https://huggingface.co/{kwargs['repo_id']}/commit/abc")

        for name, fn in (("create_repo", create_repo), ("create_branch", create_branch),
                         ("upload_folder", upload_folder)):
            monkeypatch.setattr(HfApi, name, fn)
        return self

    def repo(self, repo_id: str, revision: str | None = None) -> Path:
        return self.root / repo_id / (revision or "main")

    def files(self, repo_id: str, revision: str | None = None) -> dict[str, bytes]:
        top = self.repo(repo_id, revision)
        return {str(p.relative_to(top)): p.read_bytes() for p in sorted(top.rglob("*")) if p.is_file()}


def _tree(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` with its size and mtime: what "the local files are untouched" compares."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def pushed_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One tiny classification run, trained in-process with push_to_hub set, its .hydra/ written as Hydra writes
    it. HF_TOKEN is set, and the config carries the token in its tags (a leak the redaction must catch)."""
    tmp = tmp_path_factory.mktemp("push")
    run = tmp / "run"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_TOKEN", TOKEN)
        hub = FakeHub(tmp / "hub").install(mp)
        cfg = compose_run_config(run, [*TINY_RUN, "push_to_hub=me/tiny-reviews",
                                       f"tags=[dev,{TOKEN}]"])
        (run / ".hydra").mkdir(parents=True)
        OmegaConf.save(cfg, run / ".hydra" / "config.yaml")
        OmegaConf.save(OmegaConf.create(["push_to_hub=me/tiny-reviews"]), run / ".hydra" / "overrides.yaml")
        results = train(cfg)
    return {"run": run, "hub": hub, "results": results, "tmp": tmp}


def test_push_after_training_uploads_model_card_config_and_data_fingerprints(pushed_run, capsys) -> None:
    run, hub, results = pushed_run["run"], pushed_run["hub"], pushed_run["results"]
    assert [c[0] for c in hub.calls] == ["create_repo", "upload_folder"]
    assert hub.calls[0][2] == {"private": False, "exist_ok": True}
    assert hub.calls[1][2]["revision"] is None
    assert hub.calls[1][2]["commit_message"] == "Upload BertForSequenceClassification with lightning-llm"

    files = hub.files("me/tiny-reviews")
    exported = {str(p.relative_to(run / "hf_model")) for p in (run / "hf_model").rglob("*") if p.is_file()}
    assert exported <= set(files) and {"config.json", "model.safetensors", "tokenizer.json"} <= exported
    assert set(files) - exported == {"README.md", f"{RUN_FILES_DIR}/config.yaml", f"{RUN_FILES_DIR}/overrides.yaml",
                                     f"{RUN_FILES_DIR}/results.json"}
    assert all(files[name] == (run / "hf_model" / name).read_bytes() for name in exported)

    saved = json.loads((run / "results.json").read_text())
    card = ModelCard((hub.repo("me/tiny-reviews") / "README.md").read_text())
    assert card.data.library_name == "transformers" and card.data.base_model is None  # from scratch
    assert {"lightning-llm", saved["task_name"], "dev"} <= set(card.data.tags)
    for split in ("val", "test"):
        assert saved[split]
        for name, value in saved[split].items():
            assert f"| {split} | `{name}` | {value:.4f} |" in card.text, name
    assert "_target_: lightning_llm.tasks" in card.text and "trainer:" in card.text  # the composed config
    for split, name in (("train", "reviews_train.csv"), ("validation", "reviews_validation.csv"),
                        ("test", "reviews_test.csv")):
        digest = hashlib.sha256((BUNDLED_DIR / name).read_bytes()).hexdigest()
        assert saved["data"]["files"][split]["sha256"] == digest
        assert f"| {split} | `{name}` | {(BUNDLED_DIR / name).stat().st_size} | `{digest}` |" in card.text

    uploaded = json.loads(files[f"{RUN_FILES_DIR}/results.json"])
    assert uploaded["test"] == saved["test"] and uploaded["val"] == saved["val"]
    assert not {"run_dir", "hf_model", "best_checkpoint", "last_checkpoint"} & set(uploaded)  # no local paths
    assert str(run) not in files[f"{RUN_FILES_DIR}/results.json"].decode()
    assert OmegaConf.create(files[f"{RUN_FILES_DIR}/config.yaml"].decode()).model._target_ == \
        OmegaConf.load(run / ".hydra" / "config.yaml").model._target_

    assert [name for name, data in files.items() if TOKEN.encode() in data] == []
    assert TOKEN in (run / ".hydra" / "config.yaml").read_text()  # it was there to leak
    assert results["status"] == "completed" and saved["status"] == "completed"


def test_the_pushed_folder_loads_with_from_pretrained(pushed_run) -> None:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    repo = pushed_run["hub"].repo("me/tiny-reviews")
    model = AutoModelForSequenceClassification.from_pretrained(repo)
    tokenizer = AutoTokenizer.from_pretrained(repo)
    assert model.config.num_labels == 2 and tokenizer("good film")["input_ids"]


def test_llm_push_of_a_run_leaves_it_untouched_and_takes_the_options(pushed_run, monkeypatch, capsys) -> None:
    run = pushed_run["run"]
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    hub = FakeHub(pushed_run["tmp"] / "hub2").install(monkeypatch)
    before = _tree(run)
    push_cli.main([f"model_path={run / 'hf_model'}", "repo_id=me/again", "private=true", "revision=v1",
                   "commit_message=first version"])
    out = capsys.readouterr()
    assert out.out.strip().startswith("pushed ") and "me/again (revision v1)" in out.out
    assert TOKEN not in out.out + out.err
    assert _tree(run) == before
    assert hub.calls[0][2] == {"private": True, "exist_ok": True}
    assert hub.calls[1][0] == "create_branch" and hub.calls[1][2] == {"branch": "v1", "exist_ok": True}
    assert hub.calls[2][2]["commit_message"] == "first version" and hub.calls[2][2]["revision"] == "v1"
    # an hf_model/ folder given directly still finds its run: the same card as from the run directory
    assert "## Training config" in (hub.repo("me/again", "v1") / "README.md").read_text()
    assert (hub.repo("me/again", "v1") / RUN_FILES_DIR / "results.json").is_file()


def test_a_bare_model_folder_is_pushed_with_a_card_that_says_what_is_unknown(pushed_run, monkeypatch,
                                                                              tmp_path: Path) -> None:
    bare = tmp_path / "mine"
    shutil.copytree(pushed_run["run"] / "hf_model", bare)
    (bare / "README.md").write_text("my own notes\n")  # staged as a hard link: the card must not write through it
    hub = FakeHub(tmp_path / "hub").install(monkeypatch)
    push_cli.main([f"model_path={bare}", "repo_id=solo"])
    files = hub.files("solo")
    assert "config.json" in files and not any(name.startswith(RUN_FILES_DIR) for name in files)
    assert "outside a run directory" in files["README.md"].decode()
    assert (bare / "README.md").read_text() == "my own notes\n"


def _one_line_error(capsys, argv: list[str]) -> str:
    with pytest.raises(SystemExit) as exit_info:
        push_cli.main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    return err.strip()


@pytest.mark.parametrize("failure", [
    OSError(f"[Errno 101] Network is unreachable (headers: Authorization: Bearer {TOKEN})"),  # a token in it
    HfHubHTTPError("401 Client Error: Unauthorized for url: https://huggingface.co/api/repos/create\n"
                   f"Invalid credentials in Authorization header {TOKEN}",
                   response=types.SimpleNamespace(headers={}, status_code=401, request=None)),
])
def test_a_hub_failure_is_one_line_naming_the_repo_and_nothing_local_changes(pushed_run, monkeypatch, capsys,
                                                                               failure: BaseException) -> None:
    run = pushed_run["run"]
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    FakeHub(pushed_run["tmp"] / "hub3", fail=failure).install(monkeypatch)
    before = _tree(run)
    line = _one_line_error(capsys, [f"model_path={run}", "repo_id=me/down"])
    assert line.startswith("error: push to me/down failed: ") and type(failure).__name__ in line
    assert TOKEN not in line
    assert _tree(run) == before



def test_a_token_from_hf_auth_login_and_any_bearer_value_are_scrubbed(pushed_run, monkeypatch, capsys,
                                                                       tmp_path: Path) -> None:
    """`hf auth login` keeps the token in a file that no environment variable shows; an error quoting it, or an
    Authorization header with another token, still prints neither."""
    import huggingface_hub.constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    (tmp_path / "token").write_text(TOKEN)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "token"))
    FakeHub(tmp_path / "hub", fail=OSError(f"proxy refused {TOKEN}; Authorization: Bearer hf_someoneElse42")
            ).install(monkeypatch)
    line = _one_line_error(capsys, [f"model_path={pushed_run['run']}", "repo_id=me/down"])
    assert line.startswith("error: push to me/down failed: OSError: proxy refused ***REDACTED***")
    assert TOKEN not in line and "hf_someoneElse42" not in line

def test_push_errors_before_any_upload(pushed_run, monkeypatch, capsys, tmp_path: Path) -> None:
    hub = FakeHub(tmp_path / "hub").install(monkeypatch)
    no_export = tmp_path / "no_export"
    (no_export / ".hydra").mkdir(parents=True)
    shutil.copy(pushed_run["run"] / "results.json", no_export / "results.json")
    line = _one_line_error(capsys, [f"model_path={no_export}", "repo_id=me/x"])
    assert line.startswith(f"error: model_path: {no_export} has no hf_model/") and "export=true" in line
    assert _one_line_error(capsys, [f"model_path={tmp_path / 'nope'}", "repo_id=me/x"]) == \
        f"error: model_path: not found: {tmp_path / 'nope'}"
    assert "is not a hub repository id" in _one_line_error(capsys, [f"model_path={pushed_run['run']}",
                                                                     "repo_id=me/x/y"])
    assert _one_line_error(capsys, ["repo_id=me/x"]).startswith("error: model_path: required")
    assert _one_line_error(capsys, ["model_path=a", "repo=me/x"]).startswith("error: repo: no such setting")
    assert "looks like a credential" in _one_line_error(capsys, ["model_path=a", "repo_id=me/x", "token=abc"])
    failed = tmp_path / "failed"
    shutil.copytree(pushed_run["run"] / "hf_model", failed / "hf_model")
    (failed / "results.json").write_text(json.dumps({"status": "diverged"}))
    assert "status is 'diverged'" in _one_line_error(capsys, [f"model_path={failed}", "repo_id=me/x"])
    assert hub.calls == []


@pytest.mark.parametrize("settings, message", [
    ({"push_to_hub": "me/x", "export": False}, "push_to_hub: pushes the exported model (hf_model/), and export=false"),
    ({"push_to_hub": "me/x/y"}, "push_to_hub: 'me/x/y' is not a hub repository id"),
    ({"push_to_hub": "me/x", "hub": {"private": "maybe"}}, "hub.private='maybe': must be true or false"),
])
def test_push_settings_are_checked(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(UserError) as err:
        check_push_settings(OmegaConf.create({"export": True, "hub": {"private": False}, **settings}))
    assert str(err.value).startswith(message), str(err.value)


def test_push_settings_fail_before_hydra_starts() -> None:
    """The precheck (before any run directory exists): the settings above, and no push from a sweep."""
    from lightning_llm.config.precheck import precheck

    with pytest.raises(UserError, match=r"^push_to_hub: pushes the exported model"):
        precheck(["push_to_hub=me/x", "export=false"], "train")
    with pytest.raises(UserError, match="^push_to_hub: not in a sweep"):
        precheck(["-m", "push_to_hub=me/x", "seed=1,2"], "train")


@pytest.mark.slow  # the real CLI (Hydra writes .hydra/), the Hub stand-in installed in the subprocess (~30 s)
def test_llm_train_push_to_hub_cli(tmp_path: Path) -> None:
    code = textwrap.dedent(f"""
        import sys
        import pytest
        from tests.test_push import FakeHub
        from lightning_llm.train import main
        mp = pytest.MonkeyPatch()
        FakeHub({str(tmp_path / 'hub')!r}).install(mp)
        sys.argv = ["llm-train", *sys.argv[1:]]
        main()
    """)
    env = {**os.environ, "HF_TOKEN": TOKEN, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code, *TINY_RUN, "push_to_hub=me/cli",
                           "paths.output_dir=run"], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[-2].startswith("pushed ") and "me/cli" in lines[-2] and lines[-1].startswith("run: run")
    top = Path(tmp_path / "hub" / "me" / "cli" / "main")
    card = (top / "README.md").read_text()
    assert "push_to_hub=me/cli" in card and "model.hidden_size=32" in card  # the command line, from .hydra/
    assert (top / "model.safetensors").is_file() and (top / RUN_FILES_DIR / "config.yaml").is_file()
    assert TOKEN not in proc.stdout + proc.stderr
