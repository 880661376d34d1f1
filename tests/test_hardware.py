"""Hardware options: they compose, bad input fails in one line before any work, Trainer kwargs, the multirun and
torchrun/srun rules, FSDP auto-wrap, the SLURM launcher config, bf16 on CPU, MFU and the GPU check's logic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf, open_dict
from pytorch_lightning.strategies import DDPStrategy, FSDPStrategy
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
)

from lightning_llm.config import CONFIG_DIR
from lightning_llm.errors import UserError
from lightning_llm.runtime import hardware
from lightning_llm.train import train
from lightning_llm.utils.flops import (
    matmul_params,
    mfu,
    peak_flops,
    training_flops_per_token,
)
from tests.conftest import REPO, TINY_GPT

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
TORCHRUN_ENV = {"TORCHELASTIC_RUN_ID": "abc", "RANK": "1", "LOCAL_RANK": "1", "GROUP_RANK": "0",
                "LOCAL_WORLD_SIZE": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}


def _hw(**values) -> OmegaConf:
    base = {"accelerator": "cpu", "devices": 1, "strategy": "auto", "num_nodes": 1, "precision": "32-true"}
    return OmegaConf.create({**base, **values})


@pytest.mark.parametrize("option", ["cpu", "gpu", "ddp", "ddp_sim", "fsdp", "deepspeed"])
def test_every_hardware_option_sets_the_five_keys(compose_cfg, option: str) -> None:
    hw = compose_cfg([f"hardware={option}"]).hardware
    assert {"accelerator", "devices", "strategy", "num_nodes", "precision"} <= set(hw)
    assert hw.precision in hardware.PRECISIONS


@pytest.mark.parametrize("values, message", [
    ({"precision": "fp8"}, "hardware.precision='fp8' is not a Lightning precision"),
    ({"precision": "16-mixed"}, "fp16 needs a GPU"),
    ({"strategy": "dpp"}, "hardware.strategy='dpp' is not a Lightning strategy"),
    ({"devices": "0,1"}, "on CPU give a number"),
    ({"num_nodes": 0}, "hardware.num_nodes=0"),
])
def test_bad_hardware_is_one_clear_error(values: dict, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(")):
        hardware.check_hardware(_hw(**values), multirun=False)


def test_more_cpu_processes_than_cores_is_refused_whatever_the_machine(monkeypatch) -> None:
    monkeypatch.setattr(hardware.job_resources, "cpu_count", lambda: 4)  # not this machine's count: the same on any machine
    hardware.check_hardware(_hw(devices=4), multirun=False)
    with pytest.raises(UserError, match="hardware.devices=5: on CPU each device is one process and this machine has"):
        hardware.check_hardware(_hw(devices=5), multirun=False)


@no_cuda
@pytest.mark.parametrize("option, message", [
    ("gpu", "no CUDA GPU is visible"),
    ("ddp", "no CUDA GPU is visible"),
    ("fsdp", "hardware.strategy=fsdp needs CUDA GPUs"),
    ("deepspeed", "hardware.strategy=deepspeed_stage_2 needs CUDA GPUs"),
])
def test_gpu_only_hardware_is_refused_without_cuda(compose_cfg, option: str, message: str) -> None:
    with pytest.raises(UserError, match=message):
        hardware.check_hardware(compose_cfg([f"hardware={option}"]).hardware, multirun=False)


@no_cuda
def test_cli_bad_hardware_exits_2_with_one_line(run_cli) -> None:
    proc = run_cli("lightning_llm.train", "hardware=fsdp")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "hardware.strategy=fsdp needs CUDA GPUs" in errors[0]


@pytest.mark.parametrize("values, refused", [
    ({"strategy": "ddp", "devices": 2}, True),
    ({"strategy": "auto", "devices": 2}, True),        # Lightning picks ddp for several devices
    ({"strategy": "ddp_spawn", "devices": 2}, False),
    ({"strategy": "ddp", "devices": 1}, False),       # nothing to relaunch
])
def test_multirun_refuses_only_strategies_that_rerun_the_command(values: dict, refused: bool) -> None:
    hw = _hw(**values)
    hardware.check_hardware(hw, multirun=False)
    if refused:
        with pytest.raises(UserError, match="ddp_spawn.*torchrun.*hydra/launcher=slurm"):
            hardware.check_hardware(hw, multirun=True)
    else:
        hardware.check_hardware(hw, multirun=True)


def test_ranks_started_by_slurm_are_allowed_in_a_multirun(monkeypatch) -> None:
    """The submitit launcher runs one SLURM task per device: Lightning relaunches nothing."""
    monkeypatch.setenv("SLURM_NTASKS", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    assert hardware.launched_externally()
    hardware.check_hardware(_hw(strategy="ddp", devices=2), multirun=True)


def test_torchrun_ranks_follow_rank_zero_and_refuse_multirun(monkeypatch) -> None:
    argv = ["experiment=classify_demo"]
    assert hardware.follow_rank_zero_run_dir(argv) == argv  # not under torchrun
    for key, value in TORCHRUN_ENV.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(UserError, match="multirun.*under torchrun"):
        hardware.follow_rank_zero_run_dir(["-m", *argv])
    monkeypatch.setenv("RANK", "0")
    assert hardware.follow_rank_zero_run_dir(argv) == argv  # rank 0 picks the directory
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("TORCHELASTIC_USE_AGENT_STORE", "False")
    with pytest.raises(UserError, match="pass hydra.run.dir"):
        hardware.follow_rank_zero_run_dir(argv)
    assert hardware.follow_rank_zero_run_dir([*argv, "hydra.run.dir=x"])[-1] == "hydra.output_subdir=null"


def test_srun_with_several_tasks_needs_an_explicit_run_dir(monkeypatch) -> None:
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    with pytest.raises(UserError, match="srun with 4 tasks: pass hydra.run.dir"):
        hardware.follow_rank_zero_run_dir(["hardware=ddp"])
    assert hardware.follow_rank_zero_run_dir(["hydra.run.dir=outputs/x"]) == ["hydra.run.dir=outputs/x"]


def test_trainer_kwargs_strategies(compose_cfg) -> None:
    assert hardware.trainer_kwargs(compose_cfg(["hardware=ddp_sim"]).hardware) == {
        "accelerator": "cpu", "devices": 2, "strategy": "ddp_spawn", "num_nodes": 1, "precision": "32-true"}
    hw = compose_cfg(["hardware=ddp_sim", "+hardware.strategy_kwargs.find_unused_parameters=true"]).hardware
    strategy = hardware.trainer_kwargs(hw)["strategy"]
    assert isinstance(strategy, DDPStrategy) and strategy._ddp_kwargs["find_unused_parameters"] is True
    strategy = hardware.trainer_kwargs(compose_cfg(["hardware=fsdp"]).hardware)["strategy"]
    assert isinstance(strategy, FSDPStrategy)
    assert isinstance(strategy.kwargs["auto_wrap_policy"], hardware.TransformerBlockPolicy)


def test_fsdp_wraps_each_transformer_block() -> None:
    gpt = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50, n_positions=32))
    bert = BertForSequenceClassification(BertConfig(num_hidden_layers=3, hidden_size=16, num_attention_heads=2,
                                                    intermediate_size=32, vocab_size=50))
    policy = hardware.TransformerBlockPolicy()
    assert {type(m).__name__ for m in policy._run_policy(gpt, set(), {})} == {"GPT2Block"}
    wrapped = policy._run_policy(bert, set(), {})
    assert len(wrapped) == 4 and {type(m).__name__ for m in wrapped} == {"BertEmbeddings", "BertLayer"}
    bert._no_split_modules = bert.bert._no_split_modules = None  # a model naming none: its layer stack
    assert {type(m).__name__ for m in policy._run_policy(bert, set(), {})} == {"BertLayer"}
    mlm = BertForMaskedLM(bert.config)  # word embeddings tied to the MLM decoder: not a unit of their own
    assert {type(m).__name__ for m in policy._run_policy(mlm, set(), {})} == {"BertLayer"}


def test_slurm_launcher_composes_one_task_per_gpu() -> None:
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        cfg = compose("train", overrides=["hydra/launcher=slurm", "hardware=ddp", "hardware.devices=4",
                                          "hardware.num_nodes=2"], return_hydra_config=True)
    GlobalHydra.instance().clear()
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert (launcher.tasks_per_node, launcher.gpus_per_node, launcher.nodes) == (4, 4, 2)


def test_bf16_mixed_on_cpu_stays_close_to_fp32(compose_cfg, tmp_path: Path) -> None:
    """12 steps of the tiny GPT: bf16 autocast changes val/loss (so it was on), by less than 1% (seen: 6e-6)."""
    losses = {}
    for precision in ("32-true", "bf16-mixed"):
        cfg = compose_cfg(["experiment=gpt_demo", *TINY_GPT, "model.max_position_embeddings=64", "data.block_size=32",
                           "model.dropout=0.0", "trainer.max_epochs=1", "+trainer.limit_train_batches=12",
                           "+trainer.limit_val_batches=8", "test=false", "export=false", "logger=csv",
                           "~callbacks.generation_samples", f"hardware.precision={precision}"])
        with open_dict(cfg):
            cfg.paths.output_dir = str(tmp_path / precision)
        losses[precision] = train(cfg)["val"]["val/loss"]
    fp32, bf16 = losses["32-true"], losses["bf16-mixed"]
    assert bf16 != fp32
    assert abs(bf16 - fp32) < 0.01 * fp32, losses


def test_mfu_table_and_formula() -> None:
    assert peak_flops("NVIDIA H200", "bf16-mixed") == peak_flops("NVIDIA H100 80GB HBM3", "bf16-mixed") == 989e12
    assert peak_flops("NVIDIA A100-SXM4-80GB", "bf16-mixed") == 312e12
    assert peak_flops("NVIDIA A10", "16-mixed") == 125e12  # not A100's
    assert peak_flops("NVIDIA H100 PCIe", "32-true") == 378e12  # TF32
    assert peak_flops("cpu") is None and peak_flops("Tesla T4") is None
    gpt = GPT2LMHeadModel(GPT2Config(n_layer=2, n_embd=16, n_head=2, vocab_size=50, n_positions=32))
    total = sum(p.numel() for p in gpt.parameters())
    assert matmul_params(gpt) == total - 32 * 16  # position embeddings are lookups; wte doubles as the output layer
    assert training_flops_per_token(100, 2, 16, 32) == 600 + 12 * 2 * 16 * 32
    assert mfu(1000.0, 1e9, 1e12, n_devices=2) == pytest.approx(0.5)


def test_gpu_check_logic_on_cpu(tmp_path: Path) -> None:
    from scripts.gpu import check as gpu_check  # (scripts/ is importable from the repository root)

    out = tmp_path / "figures.json"
    figures = gpu_check.main(["--tiny", "--steps", "3", "--warmup", "1", "--peak-tflops", "0.001",
                              "--json", str(out)])
    assert figures == json.loads(out.read_text())
    assert figures["devices"] == 1 and figures["timed_steps"] == 3 and figures["tokens_per_sec"] > 0
    assert figures["mfu"] == pytest.approx(figures["tokens_per_sec"] * figures["flops_per_token"] / 1e9)
    assert figures["peak_memory_gib"] > 0


# --------------------------------------------------------------------------------------------- GPU only
@pytest.mark.gpu
@needs_cuda
def test_gpu_run_uses_fast_paths(compose_cfg) -> None:
    """hardware=gpu: TF32 matmuls, fused AdamW, SDPA attention, pinned host memory, bf16 autocast."""
    from lightning_llm.runtime import builders

    cfg = compose_cfg(["experiment=gpt_demo", *TINY_GPT, "hardware=gpu", "trainer.max_steps=3", "logger=none",
                       "callbacks=none", "+trainer.limit_val_batches=0"])
    datamodule = builders.build_datamodule(cfg)
    datamodule.tokenizer = builders.build_tokenizer(cfg, datamodule)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = builders.build_model(cfg, datamodule.tokenizer, datamodule)
    trainer = builders.build_trainer(cfg, [], [])
    trainer.fit(model, datamodule=datamodule)
    assert torch.get_float32_matmul_precision() == "high"
    assert trainer.optimizers[0].defaults["fused"] is True
    assert model.model.config._attn_implementation == "sdpa"
    assert trainer.train_dataloader.pin_memory is True
    assert trainer.precision == "bf16-mixed" and trainer.global_step == 3


@pytest.mark.gpu
@needs_cuda
def test_fsdp_trains_on_one_gpu(run_cli, tmp_path: Path) -> None:
    proc = run_cli("lightning_llm.train", "experiment=gpt_demo", *TINY_GPT, "hardware=fsdp", "hardware.devices=1",
                   "trainer.max_steps=3", "+trainer.limit_val_batches=2", "test=false",
                   "~callbacks.generation_samples")
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(next(tmp_path.glob("outputs/*/runs/*/results.json")).read_text())
    assert results["status"] == "completed"


@pytest.mark.gpu
@needs_cuda
def test_gpu_check_script_on_gpu(tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "figures.json"
    proc = subprocess.run([sys.executable, "-m", "scripts.gpu.check", "--steps", "5", "--warmup", "2", "--json",
                           str(out)], capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert figures["tokens_per_sec"] > 0 and figures["peak_memory_gib"] > 0
    assert 120e6 < figures["params"] < 130e6


def test_bf16_mixed_with_clipping_keeps_fused_adamw_and_clips(compose_cfg) -> None:
    """bf16-mixed has no gradient scaler, so fused AdamW stays on with norm clipping (Lightning's mixed-precision
    plugin would refuse the pair: the base module clips itself); the norm after clipping is the clip value. The
    decay groups are those of the parameters' shapes at construction (FSDP later flattens them). An optimizer
    that is no torch Optimizer (DeepSpeed's ZeRO wrapper; it crashed on `.defaults`) goes to the precision
    plugin."""
    from pytorch_lightning import Callback

    from lightning_llm.runtime import builders

    norms: list[float] = []

    class GradNorm(Callback):
        def on_train_batch_end(self, trainer, pl_module, *args) -> None:  # gradients of the step just taken
            grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([g.float().norm() for g in grads]))))

    cfg = compose_cfg(["experiment=gpt_demo", *TINY_GPT, "hardware=cpu", "hardware.precision=bf16-mixed",
                       "trainer.gradient_clip_val=1e-3", "trainer.max_steps=2", "logger=none", "callbacks=none",
                       "+trainer.limit_val_batches=0"])
    datamodule = builders.build_datamodule(cfg)
    datamodule.tokenizer = builders.build_tokenizer(cfg, datamodule)
    datamodule.prepare_data()
    datamodule.setup("fit")
    model = builders.build_model(cfg, datamodule.tokenizer, datamodule)
    trainer = builders.build_trainer(cfg, [], [GradNorm()])
    trainer.fit(model, datamodule=datamodule)
    assert trainer.precision == "bf16-mixed" and trainer.global_step == 2
    assert trainer.optimizers[0].defaults["fused"] is True
    assert norms and all(n == pytest.approx(1e-3, rel=1e-2) for n in norms)
    decay, no_decay = (group["params"] for group in trainer.optimizers[0].param_groups)
    assert all(p.ndim >= 2 for p in decay) and all(p.ndim < 2 for p in no_decay) and decay and no_decay

    class ZeroLikeOptimizer:  # DeepSpeed's ZeRO optimizer, what the hook gets there: param_groups, no `defaults`
        def __init__(self, param_groups: list[dict]) -> None:
            self.param_groups = param_groups

    for p in decay + no_decay:
        p.grad = torch.ones_like(p)
    model.configure_gradient_clipping(ZeroLikeOptimizer(trainer.optimizers[0].param_groups), 1e-3, "norm")
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in decay + no_decay]))
    assert float(norm) == pytest.approx(1e-3, rel=1e-4)  # handed to the precision plugin (DeepSpeed's: no-op)


def test_precision_plugins_of_fsdp_and_deepspeed_clip_as_the_module_assumes() -> None:
    """What `HFTaskModule.configure_gradient_clipping` relies on, built on CPU (the strategies themselves need CUDA):
    Lightning's FSDP plugin refuses norm clipping (so under FSDP the module clips through the root module's
    `clip_grad_norm_`) and has no scaler under bf16-mixed; DeepSpeed's plugin leaves clipping to DeepSpeed."""
    from pytorch_lightning.plugins.precision import DeepSpeedPrecision, FSDPPrecision
    from pytorch_lightning.utilities.exceptions import MisconfigurationException

    fsdp = FSDPPrecision("bf16-mixed")
    assert fsdp.scaler is None
    with pytest.raises(MisconfigurationException, match="gradient_clip_algorithm='norm'"):
        fsdp.clip_gradients(torch.optim.SGD([torch.nn.Parameter(torch.ones(2))], lr=0.1), 1.0)
    param = torch.nn.Parameter(torch.ones(3))
    param.grad = torch.full((3,), 10.0)
    DeepSpeedPrecision("bf16-mixed").clip_gradients(torch.optim.SGD([param], lr=0.1), 1.0)
    assert torch.equal(param.grad, torch.full((3,), 10.0))
