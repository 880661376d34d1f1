from lightning_llm.modules.base import HFTaskModule
from lightning_llm.modules.classification import SequenceClassificationModule

__all__ = ["HFTaskModule", "SequenceClassificationModule"]
