from lightning_llm.data.classification import TextClassificationDataModule
from lightning_llm.data.language_modeling import TextCorpusDataModule

__all__ = ["TextClassificationDataModule", "TextCorpusDataModule"]
