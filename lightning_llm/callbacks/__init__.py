from lightning_llm.callbacks.exact_resume import ExactResume
from lightning_llm.callbacks.fault_injection import FaultInjection
from lightning_llm.callbacks.generation_samples import GenerationSamples
from lightning_llm.callbacks.model_summary import CompactModelSummary
from lightning_llm.callbacks.nan_guard import NanGuard
from lightning_llm.callbacks.optuna_pruning import OptunaPruning
from lightning_llm.callbacks.preemption import PreemptionCheckpoint
from lightning_llm.callbacks.progress_bar import LogIntervalProgressBar
from lightning_llm.callbacks.throughput import ThroughputCallback

__all__ = ["CompactModelSummary", "ExactResume", "FaultInjection", "GenerationSamples", "LogIntervalProgressBar",
           "NanGuard", "OptunaPruning", "PreemptionCheckpoint", "ThroughputCallback"]
