from lightning_llm.callbacks.generation_samples import GenerationSamples

__all__ = ["GenerationSamples"]
