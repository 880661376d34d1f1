from lightning_llm.modules.base import HFTaskModule
from lightning_llm.modules.causal_lm import CausalLMModule
from lightning_llm.modules.classification import SequenceClassificationModule
from lightning_llm.modules.masked_lm import MaskedLMModule
from lightning_llm.modules.token_classification import TokenClassificationModule

__all__ = ["CausalLMModule", "HFTaskModule", "MaskedLMModule", "SequenceClassificationModule",
           "TokenClassificationModule"]
