"""Scores the fine-tuned and zero-shot model and baselines on the same test candidates."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
