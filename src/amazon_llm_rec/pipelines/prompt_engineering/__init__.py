"""Prompts in the paper's three parts (instruction, input, output) with lettered candidate options."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
