"""Nodes of the fine_tuning pipeline."""

from __future__ import annotations

import logging
from typing import Any

import pandas as pd

from ...core.training import TrainedAdapter, train_adapter

logger = logging.getLogger(__name__)


def select_base_model(model: dict[str, Any]) -> str:
    """Return the configured base model name (the model dataset resolves and converts it)."""
    name = str(model["name"]).strip()
    logger.info("Base model: %s", name)
    return name


def fine_tune(base_model: str, train_prompts: pd.DataFrame, validation_prompts: pd.DataFrame,
              fine_tuning: dict[str, Any]) -> tuple[TrainedAdapter, pd.DataFrame, dict[str, Any]]:
    """Fine-tune a LoRA adapter on the training prompts; return it, the loss history and a summary."""
    cap = fine_tuning.get("max_eval_prompts")
    if cap is not None and len(validation_prompts) > int(cap):  # validation loss on the first `cap` prompts
        validation_prompts = validation_prompts.iloc[: int(cap)]
    adapter, history = train_adapter(base_model, train_prompts, validation_prompts, fine_tuning)
    return adapter, history, adapter.summary


def plot_loss_curves(loss_history: pd.DataFrame):
    """Draw training and validation loss against the training step."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, ax = plt.subplots(figsize=(7, 4))
    for split, style in (("train", "-"), ("validation", "o-"), ("train_epoch_mean", "s--")):
        part = loss_history[loss_history["split"] == split].sort_values("step")
        if not part.empty:
            ax.plot(part["step"], part["loss"], style, label=split)
    ax.set_xlabel("training step")
    ax.set_ylabel("loss (answer tokens)")
    ax.set_title("Fine-tuning loss")
    ax.legend()
    fig.tight_layout()
    return fig
