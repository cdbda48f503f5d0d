"""Raw Amazon 2018 reviews and metadata to clean interactions, items and reviewer sequences."""

from .pipeline import create_pipeline

__all__ = ["create_pipeline"]
