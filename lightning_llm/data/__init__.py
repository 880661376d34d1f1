from lightning_llm.data.classification import TextClassificationDataModule

__all__ = ["TextClassificationDataModule"]
