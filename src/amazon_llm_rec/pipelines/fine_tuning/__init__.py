"""LoRA / QLoRA / Unsloth fine-tuning of a causal LM on the training prompts."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
