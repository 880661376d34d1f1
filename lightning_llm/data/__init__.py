from lightning_llm.data.classification import TextClassificationDataModule
from lightning_llm.data.language_modeling import TextCorpusDataModule
from lightning_llm.data.token_classification import TokenClassificationDataModule

__all__ = ["TextClassificationDataModule", "TextCorpusDataModule", "TokenClassificationDataModule"]
