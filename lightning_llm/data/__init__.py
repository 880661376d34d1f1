from lightning_llm.data.classification import TextClassificationDataModule
from lightning_llm.data.language_modeling import TextCorpusDataModule
from lightning_llm.data.question_answering import QuestionAnsweringDataModule
from lightning_llm.data.seq2seq import Seq2SeqDataModule
from lightning_llm.data.token_classification import TokenClassificationDataModule

__all__ = ["QuestionAnsweringDataModule", "Seq2SeqDataModule", "TextClassificationDataModule", "TextCorpusDataModule",
           "TokenClassificationDataModule"]
