"""Hardware: check `hardware` (accelerator, devices, strategy, precision, num_nodes) before any work, turn it into
Trainer arguments, and keep every rank of a distributed job in that job's one run directory.

Conventions (the README states them too):
- `data.batch_size` is per device (per process), as in Lightning. One optimizer step sees
  batch_size x devices x num_nodes x trainer.accumulate_grad_batches samples.
- The LR schedule counts optimizer steps (`trainer.estimated_stepping_batches`): each rank's loader holds
  1/world of the data and accumulation divides again, so warmup_ratio and the decay fit the real run.
- Launch: `ddp`, `fsdp` and `deepspeed` re-run the command once per extra device (Lightning's script launcher;
  its copies get `hydra.run.dir=<parent's run dir>`); `ddp_spawn` starts the ranks from inside the job;
  torchrun and SLURM start every rank themselves (Lightning reads the ranks from their environment).
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.plugins.environments import (
    LSFEnvironment,
    MPIEnvironment,
    SLURMEnvironment,
    TorchElasticEnvironment,
)
from pytorch_lightning.strategies import (
    DeepSpeedStrategy,
    FSDPStrategy,
    ParallelStrategy,
    StrategyRegistry,
)
from torch import nn

from lightning_llm import compat
from lightning_llm.errors import UserError
from lightning_llm.runtime import job_resources

CPU_SAFE_ALTERNATIVE = "on CPU use hardware=cpu or hardware=ddp_sim"
MULTIRUN_DDP_ALTERNATIVES = ("use hardware.strategy=ddp_spawn (hardware=ddp_sim on CPU), one torchrun per job, or "
                             "-m hydra/launcher=slurm (one SLURM task per GPU)")


PRECISIONS: tuple[Any, ...] = compat.precision_inputs()


# ----------------------------------------------------------------------------------------------- environment
def launched_externally() -> bool:
    """True when torchrun, SLURM (srun), LSF or MPI started this process as one of the ranks, or when Lightning's
    script launcher did (LOCAL_RANK set): Lightning then starts no processes itself."""
    envs = (TorchElasticEnvironment, SLURMEnvironment, LSFEnvironment, MPIEnvironment)
    return "LOCAL_RANK" in os.environ or any(env.detect() for env in envs)


def under_torchrun() -> bool:
    return TorchElasticEnvironment.detect() and int(os.environ.get("WORLD_SIZE", "1")) > 1


def _cuda_count() -> int:
    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _accelerator(hardware: DictConfig) -> str:
    """The accelerator Lightning will use: `auto` resolved the way Lightning does for CPU/CUDA machines."""
    name = str(hardware.get("accelerator", "auto")).lower()
    if name == "cuda":
        return "gpu"
    if name == "auto":
        return "gpu" if _cuda_count() else "cpu"
    return name


def _strategy_entry(name: str) -> tuple[type, dict[str, Any]]:
    if name not in StrategyRegistry:
        known = ", ".join(sorted(k for k in StrategyRegistry if not any(
            part in k for part in ("xla", "tpu", "find_unused", "notebook", "single"))))
        raise UserError(f"hardware.strategy={name!r} is not a Lightning strategy; use auto or one of: {known}")
    entry = StrategyRegistry[name]
    return entry["strategy"], dict(entry["init_params"])


# ----------------------------------------------------------------------------------------------- devices
def _gpu_ids(devices: Any) -> list[int] | None:
    """Explicit GPU ids ([0, 1] or "0,1"), or None for a count."""
    if OmegaConf.is_list(devices) or isinstance(devices, (list, tuple)):
        return [int(d) for d in devices]
    if isinstance(devices, str) and "," in devices:
        return [int(d) for d in devices.split(",") if d.strip()]
    return None


def devices_per_node(hardware: DictConfig) -> int:
    """How many devices (= processes) each node runs: auto/-1 = all GPUs (1 on CPU), ids = their number."""
    devices, accelerator = hardware.get("devices", "auto"), _accelerator(hardware)
    try:
        ids = _gpu_ids(devices)
        if ids is not None:
            return len(ids)
        if str(devices).strip().lower() in ("auto", "-1"):
            return _cuda_count() if accelerator == "gpu" else 1
        return int(devices)
    except ValueError:
        raise UserError(f"hardware.devices={devices!r}: use a number, auto (-1 on GPU: all GPUs) or GPU ids "
                        f"like [0,1]") from None


def _check_devices(hardware: DictConfig, accelerator: str) -> None:
    devices, count = hardware.get("devices", "auto"), devices_per_node(hardware)
    if accelerator == "gpu":
        available, ids = _cuda_count(), _gpu_ids(devices)
        if available == 0:
            raise UserError(f"hardware.accelerator={hardware.get('accelerator')}: no CUDA GPU is visible; "
                            f"{CPU_SAFE_ALTERNATIVE}")
        if ids is not None and max(ids, default=0) >= available:
            raise UserError(f"hardware.devices={devices}: GPU ids must be below {available} (GPUs visible here)")
        if count > available:
            raise UserError(f"hardware.devices={devices}: only {available} GPU(s) visible here")
    elif accelerator == "cpu":
        if str(devices).strip().lower() != "auto" and (not isinstance(devices, int) or devices < 1):
            raise UserError(f"hardware.devices={devices}: on CPU give a number of processes (>= 1)")
        if count > job_resources.cpu_count():
            raise UserError(f"hardware.devices={devices}: on CPU each device is one process and this machine has "
                            f"{job_resources.cpu_count()} core(s)")
    if count < 1:
        raise UserError(f"hardware.devices={devices}: need at least one device")


# ----------------------------------------------------------------------------------------------- checks
def relaunches_script(hardware: DictConfig) -> bool:
    """True when Lightning would start the other ranks by re-running this command line (ddp, fsdp, deepspeed and
    `auto` with several devices), rather than spawning them (ddp_spawn) or finding them started (torchrun, SLURM)."""
    if launched_externally():
        return False
    world = devices_per_node(hardware) * int(hardware.get("num_nodes", 1))
    if world <= 1:
        return False
    strategy = str(hardware.get("strategy", "auto"))
    if strategy == "auto":
        return True  # Lightning picks "ddp" for several devices
    cls, params = _strategy_entry(strategy)
    return issubclass(cls, ParallelStrategy) and params.get("start_method", "popen") == "popen"


def _hydra_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def check_hardware(hardware: DictConfig, *, multirun: bool | None = None) -> None:
    """Everything about `hardware` that can fail, failing now with one line: precision name, strategy name,
    GPU-only strategies without CUDA, more devices than there are, fp16 on CPU, multirun + relaunching DDP.
    `multirun` defaults to whether Hydra runs a multirun."""
    precision = hardware.get("precision", "32-true")
    if precision not in PRECISIONS:
        names = ", ".join(p for p in PRECISIONS if isinstance(p, str) and "-" in p)
        raise UserError(f"hardware.precision={precision!r} is not a Lightning precision; use one of: {names}")
    accelerator = _accelerator(hardware)
    strategy = str(hardware.get("strategy", "auto"))
    cls = _strategy_entry(strategy)[0] if strategy != "auto" else None
    if cls is not None and issubclass(cls, (FSDPStrategy, DeepSpeedStrategy)):
        if accelerator != "gpu" or not _cuda_count():
            raise UserError(f"hardware.strategy={strategy} needs CUDA GPUs (accelerator={accelerator}, "
                            f"{_cuda_count()} GPU(s) visible); {CPU_SAFE_ALTERNATIVE}")
        if issubclass(cls, DeepSpeedStrategy):
            try:
                import deepspeed  # noqa: F401
            except ImportError:
                raise UserError(f"hardware.strategy={strategy}: the deepspeed package is not installed "
                                f"(pip install deepspeed)") from None
    _check_devices(hardware, accelerator)
    num_nodes = hardware.get("num_nodes", 1)
    if not isinstance(num_nodes, int) or num_nodes < 1:
        raise UserError(f"hardware.num_nodes={num_nodes!r}: must be a whole number >= 1")
    if str(precision).startswith("16") and accelerator == "cpu":
        raise UserError(f"hardware.precision={precision}: fp16 needs a GPU (Lightning would silently switch to "
                        f"bf16 on CPU); use bf16-mixed")
    # (Asking the GPU initialises CUDA in this process, which only fork-started ranks cannot live with.)
    if str(precision).startswith("bf16") and accelerator == "gpu" and "fork" not in strategy and \
            "notebook" not in strategy and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise UserError(f"hardware.precision={precision}: {torch.cuda.get_device_name()} has no bf16 support "
                        f"(pre-Ampere); use 16-mixed")
    if (_hydra_multirun() if multirun is None else multirun) and relaunches_script(hardware):
        raise UserError(f"-m (multirun) with hardware.strategy={strategy} on {devices_per_node(hardware)} devices: "
                        f"Lightning would re-run the whole sweep command once per extra rank, so ranks could train "
                        f"different jobs; {MULTIRUN_DDP_ALTERNATIVES}")


# ----------------------------------------------------------------------------------------------- Trainer arguments
class TransformerBlockPolicy(compat.RootAwareWrapPolicy):
    """FSDP auto-wrap: one FSDP unit per transformer block, so only one block's full weights exist at a time.

    Blocks are the classes the HF model lists in `_no_split_modules` (GPT2Block, BertLayer, ...), or, for a model
    that lists none, the elements of its layer stacks (nn.ModuleList). A block sharing a weight with a module
    outside it (embeddings tied to an LM head) stays in its parent's unit: FSDP cannot split a shared weight."""

    def __init__(self) -> None:
        super().__init__(transformer_blocks)


def transformer_blocks(root: nn.Module) -> set[nn.Module]:
    from transformers import PreTrainedModel

    blocks: set[nn.Module] = set()
    for model in (m for m in root.modules() if isinstance(m, PreTrainedModel)):
        names = compat.no_split_module_names(model)
        if names:
            blocks.update(m for m in model.modules() if type(m).__name__ in names)
        else:
            blocks.update(b for m in model.modules() if isinstance(m, nn.ModuleList) for b in m)
    return {block for block in blocks if not _shares_weights_outside(block, root)}


def _shares_weights_outside(block: nn.Module, root: nn.Module) -> bool:
    inside, own = set(block.modules()), {id(p) for p in block.parameters()}
    return any(id(p) in own for m in root.modules() if m not in inside for p in m.parameters(recurse=False))


def build_strategy(name: str, strategy_kwargs: dict[str, Any] | None) -> Any:
    """A strategy name for Lightning, or an instance when there are kwargs or it is FSDP (auto-wrap per block)."""
    if name == "auto" or (not strategy_kwargs and not issubclass(_strategy_entry(name)[0], FSDPStrategy)):
        return name
    cls, params = _strategy_entry(name)
    if issubclass(cls, FSDPStrategy):
        params["auto_wrap_policy"] = TransformerBlockPolicy()
    return cls(**{**params, **(strategy_kwargs or {})})


def trainer_kwargs(hardware: DictConfig) -> dict[str, Any]:
    """`hardware` as pl.Trainer arguments (accelerator, devices, strategy, num_nodes, precision, ...)."""
    kwargs = OmegaConf.to_container(hardware, resolve=True)
    strategy_kwargs = kwargs.pop("strategy_kwargs", None)
    kwargs["strategy"] = build_strategy(str(kwargs.get("strategy", "auto")), strategy_kwargs)
    return kwargs


def enable_gpu_fast_paths(hardware: DictConfig) -> None:
    """TF32 for the float32 matmuls that remain (all of them under 32-true, those outside autocast under
    bf16-mixed): several times faster on Ampere and newer, with bf16-like rounding of the inputs only."""
    if _accelerator(hardware) == "gpu":
        torch.set_float32_matmul_precision("high")


# ----------------------------------------------------------------------------------------------- torchrun run dir
def _torchrun_store() -> Any:
    """A client of the store torchrun's agent already serves at MASTER_ADDR:MASTER_PORT (keys prefixed per run)."""
    from torch.distributed import PrefixStore, TCPStore

    store = TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False,
                     timeout=timedelta(minutes=30))
    run, restart = os.environ.get("TORCHELASTIC_RUN_ID", ""), os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return PrefixStore(f"lightning_llm/{run}/{restart}", store)


def _has_override(argv: list[str], key: str) -> bool:
    return any(arg.lstrip("+~").startswith(f"{key}=") for arg in argv)


def follow_rank_zero_run_dir(argv: list[str]) -> list[str]:
    """Command-line arguments for this process, before Hydra reads them.

    torchrun starts every rank with the same command, and each would pick its own timestamped run directory:
    ranks > 0 wait for rank 0's directory (`share_run_dir`) and run there, as Lightning's own relaunch does.
    srun with several tasks has no such channel: it needs an explicit hydra.run.dir."""
    multirun = "-m" in argv or "--multirun" in argv
    if under_torchrun():
        if multirun:
            raise UserError("-m (multirun) under torchrun: every rank would run the sweep on its own; start one "
                            "torchrun per job, or use -m hydra/launcher=slurm")
        if int(os.environ.get("RANK", "0")) == 0:
            return argv
        if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True":
            if _has_override(argv, "hydra.run.dir"):
                return argv + ["hydra.output_subdir=null"]
            raise UserError("torchrun without a shared agent store (TORCH_DISABLE_SHARE_RDZV_TCP_STORE=1?): pass "
                            "hydra.run.dir=<dir> so all ranks share one run directory")
        run_dir = _torchrun_store().get("run_dir").decode()
        return argv + [f'hydra.run.dir="{run_dir}"', "hydra.output_subdir=null"]
    tasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
    if SLURMEnvironment.detect() and tasks > 1 and not multirun and not _has_override(argv, "hydra.run.dir"):
        raise UserError(f"srun with {tasks} tasks: pass hydra.run.dir=<dir> (e.g. outputs/runs/$SLURM_JOB_ID) so all "
                        f"ranks share one run directory, or submit with -m hydra/launcher=slurm")
    return argv


def share_run_dir() -> None:
    """Under torchrun, rank 0 tells the waiting ranks (see `follow_rank_zero_run_dir`) its Hydra run directory."""
    if under_torchrun() and int(os.environ.get("RANK", "0")) == 0 and HydraConfig.initialized() and \
            os.environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True":
        _torchrun_store().set("run_dir", os.path.abspath(HydraConfig.get().runtime.output_dir))
