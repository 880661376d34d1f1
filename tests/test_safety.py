"""Safety: allow-listed `_target_`s only, checkpoints that load with weights_only=True, safetensors exports,
no credential in any file a run writes, and outputs that are complete or absent (never half-written)."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf, open_dict

from lightning_llm import train as train_entry
from lightning_llm.config import CONFIG_DIR
from lightning_llm.config.secrets import (
    REDACTED,
    check_config_secrets,
    redact,
    refuse_secret_overrides,
)
from lightning_llm.config.targets import allowed_targets, check_targets
from lightning_llm.config.validation import validate_train_config
from lightning_llm.errors import UserError
from lightning_llm.runtime.results import mark_running, outcome_recorded
from lightning_llm.utils.io import current_umask, write_dir_atomic, write_json_atomic
from tests.conftest import TINY_BERT

WANDB_KEY = "fake0wandb1key2value3for4the5leak6test7"
HF_TOKEN = "hf_fakeTokenValueForTheLeakTest0123"
SHORT_RUN = ["trainer.max_epochs=1", "++trainer.limit_train_batches=3", "++trainer.limit_val_batches=2",
             "++trainer.limit_test_batches=2", "data.batch_size=8", "callbacks.rich_progress_bar=null"]


# ----------------------------------------------------------------------------------------------- allow-list
@pytest.mark.slow  # a CLI end-to-end run (~15-45 s on 2 cores)
def test_target_outside_the_allow_list_is_refused_before_anything_runs(run_cli, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    run_dir = tmp_path / "run"
    proc = run_cli("lightning_llm.train", *TINY_BERT, "+callbacks.evil._target_=os.system",
                   f"+callbacks.evil.command='touch {marker}'", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: callbacks.evil._target_='os.system' is not allowed: only targets under lightning_llm, torch, "
        "transformers, pytorch_lightning, torchmetrics can be instantiated "
        "(allow your own package with allow_targets=[mypkg])")
    assert not marker.exists()
    assert not run_dir.exists()  # nothing but Hydra's files was written there, and those are removed


USER_CALLBACK = """
from pathlib import Path

import pytorch_lightning as pl


class Hello(pl.Callback):
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def on_train_start(self, trainer, pl_module) -> None:
        Path(self.marker).write_text("hello")
"""


@pytest.mark.slow  # two CLI runs (~20 s); the refusal path is covered fast by the allow-list tests above
def test_users_own_callback_runs_only_when_its_package_is_allowed(run_cli, tmp_path: Path) -> None:
    (tmp_path / "mycb.py").write_text(USER_CALLBACK)
    marker = tmp_path / "hello.txt"
    env = {"PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")]))}
    mine = ["+callbacks.mine._target_=mycb.Hello", f"+callbacks.mine.marker={marker}"]
    refused = run_cli("lightning_llm.train", *TINY_BERT, "debug=fdr", *mine, f"hydra.run.dir={tmp_path / 'no'}",
                      env=env)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        "error: callbacks.mine._target_='mycb.Hello' is not allowed: only targets under lightning_llm, torch, "
        "transformers, pytorch_lightning, torchmetrics can be instantiated "
        "(allow your own package with allow_targets=[mypkg])"]
    assert not marker.exists()
    allowed = run_cli("lightning_llm.train", *TINY_BERT, "debug=fdr", "allow_targets=[mycb]", *mine,
                      f"hydra.run.dir={tmp_path / 'yes'}", env=env)
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert marker.read_text() == "hello"


def test_allowed_packages_extend_the_allow_list_but_not_past_the_deny_list() -> None:
    def node(target: str) -> object:
        return OmegaConf.create({"callbacks": {"mine": {"_target_": target}}})

    check_targets(node("mypkg.sub.Hello"), allowed=("mypkg",))
    check_targets(node("torch.nn.Identity"), allowed=("mypkg",))
    for target, allowed in [("mypkgx.Hello", ("mypkg",)), ("mypkg._private.Hello", ("mypkg",)),
                            ("torch.hub.load", ("torch.hub",)), ("mypkg.Hello", ())]:
        with pytest.raises(UserError, match=r"^callbacks\.mine\._target_=.* is not allowed"):
            check_targets(node(target), allowed=allowed)


@pytest.mark.parametrize(("value", "expected"), [(None, ()), ([], ()), (["mypkg", "a.b_c"], ("mypkg", "a.b_c")),
                                                 ("mypkg", ("mypkg",)), (["mypkg."], ("mypkg",))])
def test_allowed_targets_reads_module_names(value: object, expected: tuple[str, ...]) -> None:
    assert allowed_targets(OmegaConf.create({"allow_targets": value})) == expected
    assert allowed_targets(OmegaConf.create({})) == ()


@pytest.mark.parametrize("value", [["my-pkg"], [1], [""], ["a..b"], {"a": 1}])
def test_allowed_targets_refuses_what_is_not_a_module_name(value: object) -> None:
    with pytest.raises(UserError, match=r"^allow_targets\b") as err:
        allowed_targets(OmegaConf.create({"allow_targets": value}))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("target", ["builtins.eval", "subprocess.Popen", "torch.hub.load", "torch.load",
                                    "transformers.pipeline", "torch._C._get_tracing_state", "torchx.evil"])
def test_allow_list_refuses_at_any_depth(compose_cfg, target: str) -> None:
    cfg = compose_cfg(TINY_BERT)
    with open_dict(cfg):
        cfg.trainer.plugins = [{"_target_": "torch.nn.Identity", "inner": {"_target_": target}}]
    with pytest.raises(UserError, match=r"trainer\.plugins\[0\]\.inner\._target_=.* is not allowed"):
        validate_train_config(cfg)


def test_trust_remote_code_is_off_in_every_model_config(compose_cfg) -> None:
    for option in sorted(p.stem for p in (Path(CONFIG_DIR) / "model").glob("*.yaml")):
        assert compose_cfg([f"model={option}"]).model.trust_remote_code is False, option


# ----------------------------------------------------------------------------------------------- checkpoints
def test_resume_checkpoint_must_load_with_weights_only(compose_cfg, tmp_path: Path) -> None:
    pickled = tmp_path / "pickled.ckpt"
    torch.save({"state_dict": {}, "loops": {}, "callback": OmegaConf.create({"a": 1})}, pickled)
    with pytest.raises(UserError, match="does not load safely"):
        validate_train_config(compose_cfg([*TINY_BERT, f"ckpt_path={pickled}"]))


def test_resume_checkpoint_of_another_model_is_refused(compose_cfg, tmp_path: Path) -> None:
    gpt = tmp_path / "gpt.ckpt"
    torch.save({"state_dict": {}, "loops": {},
                "lightning_llm_module": "lightning_llm.tasks.causal_lm.CausalLMModule"}, gpt)
    with pytest.raises(UserError, match="holds a CausalLMModule, but model._target_ is"):
        validate_train_config(compose_cfg([*TINY_BERT, f"ckpt_path={gpt}"]))


def test_resume_from_a_weights_only_checkpoint_is_refused(compose_cfg, tmp_path: Path) -> None:
    """best-*.ckpt holds weights only (no optimizer, scheduler or callback state): resuming needs last.ckpt."""
    best = tmp_path / "best.ckpt"
    torch.save({"state_dict": {}, "loops": {}, "epoch": 0, "global_step": 3}, best)
    with pytest.raises(UserError, match=r"holds weights only .*ckpt_path=last"):
        validate_train_config(compose_cfg([*TINY_BERT, f"ckpt_path={best}"]))


# ----------------------------------------------------------------------------------------------- secrets
@pytest.mark.slow  # a CLI end-to-end run (~15-45 s on 2 cores)
def test_credentials_in_the_environment_end_up_in_no_file(run_cli, tmp_path: Path) -> None:
    """All loggers (W&B offline), test and export: no file of the run dir or W&B's folders holds either value."""
    run_dir, home = tmp_path / "run", tmp_path / "home"
    env = {"WANDB_API_KEY": WANDB_KEY, "HF_TOKEN": HF_TOKEN, "WANDB_MODE": "offline", "WANDB_DIR": str(home),
           "WANDB_CONFIG_DIR": str(home), "WANDB_CACHE_DIR": str(home), "WANDB_DATA_DIR": str(home)}
    proc = run_cli("lightning_llm.train", *TINY_BERT, *SHORT_RUN, "logger=many", "+note=${oc.env:HF_TOKEN}",
                   f"hydra.run.dir={run_dir}", env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((run_dir / "wandb").glob("offline-run-*")) and (run_dir / "tensorboard").is_dir()
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(files) > 15
    leaks = [str(p) for p in files if WANDB_KEY.encode() in p.read_bytes() or HF_TOKEN.encode() in p.read_bytes()]
    assert not leaks
    assert WANDB_KEY not in proc.stdout + proc.stderr and HF_TOKEN not in proc.stdout + proc.stderr
    # Exports are safetensors, and every checkpoint loads with weights_only=True.
    assert (run_dir / "hf_model" / "model.safetensors").is_file()
    assert not list((run_dir / "hf_model").glob("*.bin"))
    for ckpt in (run_dir / "checkpoints").glob("*.ckpt"):
        torch.load(ckpt, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("override", ["+logger.wandb.api_key=abc123", "+model.hf_token=hf_abc",
                                      f"+data.x={HF_TOKEN}"])
def test_credentials_on_the_command_line_are_refused_before_hydra_writes_them(
        override: str, tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["llm-train", *TINY_BERT, override])
    with pytest.raises(SystemExit) as exit_info:
        train_entry.main()
    assert exit_info.value.code == 2
    assert "looks like a credential on the command line" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # Hydra never started: no .hydra/overrides.yaml with the value


def test_harmless_token_like_overrides_pass() -> None:
    refuse_secret_overrides(["data.max_length=64", "+model.pad_token=<pad>", "generate.max_new_tokens=5",
                             "model.tokenizer_name_or_path=gpt2", "+note=${oc.env:HF_TOKEN}", "x.api_key=null"])


def test_credentials_in_configs_are_refused_where_they_would_be_saved(compose_cfg, monkeypatch) -> None:
    monkeypatch.setenv("HF_TOKEN", HF_TOKEN)
    with pytest.raises(UserError, match="logger.wandb.api_key: holds a literal credential"):
        check_config_secrets(compose_cfg(["logger=wandb", "+logger.wandb.api_key=abc"]))
    # Model settings are saved verbatim into checkpoints and config.json: no reference to a credential there.
    with pytest.raises(UserError, match="model.config_overrides.note: resolves to a credential"):
        check_config_secrets(compose_cfg(["+model.config_overrides.note=${oc.env:HF_TOKEN}"]))
    check_config_secrets(compose_cfg(["+note=${oc.env:HF_TOKEN}"]))  # redacted wherever it is logged


def test_redact_hides_secret_keys_and_values_but_not_tokenizer_fields() -> None:
    out = redact({"wandb": {"api_key": "k", "token": "t"}, "pad_token": "<pad>", "max_new_tokens": 5,
                  "note": f"x{HF_TOKEN}y"}, values=[HF_TOKEN])
    assert out == {"wandb": {"api_key": REDACTED, "token": REDACTED}, "pad_token": "<pad>", "max_new_tokens": 5,
                   "note": f"x{REDACTED}y"}


# ----------------------------------------------------------------------------------------------- atomic outputs
def test_json_write_that_fails_leaves_the_previous_file_and_no_temp(tmp_path: Path) -> None:
    path = write_json_atomic(tmp_path / "results.json", {"status": "completed", "value": 1.0})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"status": "completed", "value": object()})  # fails halfway through dumping
    assert json.loads(path.read_text()) == {"status": "completed", "value": 1.0}
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_dir_write_that_fails_leaves_no_folder_that_looks_complete(tmp_path: Path) -> None:
    def half_export(tmp: Path) -> None:
        (tmp / "config.json").write_text("{}")
        raise RuntimeError("killed while writing weights")

    with pytest.raises(RuntimeError):
        write_dir_atomic(tmp_path / "hf_model", half_export)
    assert not any(tmp_path.iterdir())
    write_dir_atomic(tmp_path / "hf_model", lambda tmp: (tmp / "model.safetensors").write_text("v1"))
    with pytest.raises(RuntimeError):
        write_dir_atomic(tmp_path / "hf_model", half_export)
    assert [p.name for p in tmp_path.iterdir()] == ["hf_model"]
    assert (tmp_path / "hf_model" / "model.safetensors").read_text() == "v1"


@pytest.mark.parametrize("umask", [0o022, 0o002])
def test_atomic_outputs_get_the_modes_the_umask_gives(tmp_path: Path, umask: int) -> None:
    """results.json / eval_results.json (0666 & ~umask) and hf_model/ (0777 & ~umask), not tempfile's 0600/0700,
    so teammates on a shared filesystem can read them."""
    old = os.umask(umask)
    try:
        assert current_umask() == umask
        results = write_json_atomic(tmp_path / "results.json", {"status": "completed"})
        export = write_dir_atomic(tmp_path / "hf_model", lambda tmp: (tmp / "config.json").write_text("{}"))
        export = write_dir_atomic(export, lambda tmp: (tmp / "config.json").write_text("{}"))  # replacing one
    finally:
        os.umask(old)
    assert stat.S_IMODE(results.stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE(export.stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((export / "config.json").stat().st_mode) == 0o666 & ~umask


def test_results_say_running_then_failed_when_a_run_crashes(compose_cfg) -> None:
    cfg = compose_cfg(TINY_BERT)
    results = Path(cfg.paths.output_dir) / "results.json"
    write_json_atomic(results, {"status": "completed", "val": {"val/acc": 0.9}})  # a previous run's result
    with pytest.raises(RuntimeError), outcome_recorded(cfg):
        assert not results.exists()  # never the older run's "completed"
        mark_running(cfg)
        assert json.loads(results.read_text())["status"] == "running"
        raise RuntimeError("CUDA out of memory")
    final = json.loads(results.read_text())
    assert final["status"] == "failed" and final["error"] == "RuntimeError: CUDA out of memory"
    assert "val" not in final


def test_bad_input_before_training_leaves_no_results(compose_cfg) -> None:
    cfg = compose_cfg(TINY_BERT)
    with pytest.raises(UserError), outcome_recorded(cfg):
        raise UserError("data.text_column: no column 'txt'")
    assert not (Path(cfg.paths.output_dir) / "results.json").exists()
