from lightning_llm.modules.base import HFTaskModule
from lightning_llm.modules.causal_lm import CausalLMModule
from lightning_llm.modules.classification import SequenceClassificationModule
from lightning_llm.modules.distillation import CausalLMDistillationModule, DistillationModule
from lightning_llm.modules.masked_lm import MaskedLMModule
from lightning_llm.modules.question_answering import ExtractiveQAModule
from lightning_llm.modules.seq2seq import Seq2SeqModule
from lightning_llm.modules.token_classification import TokenClassificationModule

__all__ = ["CausalLMDistillationModule", "CausalLMModule", "DistillationModule", "ExtractiveQAModule", "HFTaskModule",
           "MaskedLMModule", "Seq2SeqModule", "SequenceClassificationModule", "TokenClassificationModule"]
