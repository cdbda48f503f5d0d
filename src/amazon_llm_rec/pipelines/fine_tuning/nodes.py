"""Nodes of the fine_tuning pipeline."""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from ...core.errors import ConfigError
from ...core.llm.training import TrainedAdapter, check_recipe, train_adapter

logger = logging.getLogger(__name__)


def select_base_model(model: dict[str, Any]) -> str:
    """Return the configured base model name (the model dataset resolves and converts it)."""
    name = str(model["name"]).strip()
    logger.info("Base model: %s", name)
    return name


def compute_title_priors(items: pd.DataFrame, base_model: str, train_prompts: pd.DataFrame,
                         evaluation: dict[str, Any]) -> pd.DataFrame:
    """Each product's title log-likelihood after a prompt without history, by the base model: PMI's
    unconditional term, computed once per product so that a request costs nothing more."""
    from ...core.llm.models import load_scoring_model, load_tokenizer  # noqa: PLC0415
    from ...core.llm.scoring import title_priors  # noqa: PLC0415

    if evaluation["title_score"] != "pmi":
        logger.info("Title priors not needed (evaluation.title_score is %r)", evaluation["title_score"])
        return pd.DataFrame({"asin": pd.Series(dtype=str), "prior": pd.Series(dtype=float)})
    model = load_scoring_model(base_model, None, evaluation)  # the model that scores, so that pmi's terms match
    start = time.perf_counter()
    values = title_priors(model, load_tokenizer(base_model), str(train_prompts["instruction"].iloc[0]),
                          items["title"].fillna("").tolist(), int(evaluation["batch_size"]))
    logger.info("Title priors of %d products in %.0f s", len(items), time.perf_counter() - start)
    return pd.DataFrame({"asin": items["asin"].to_numpy(), "prior": values})


def fine_tune(base_model: str, train_prompts: pd.DataFrame, validation_prompts: pd.DataFrame,
              training_groups: pd.DataFrame, title_priors: pd.DataFrame, fine_tuning: dict[str, Any],
              evaluation: dict[str, Any]) -> tuple[TrainedAdapter, pd.DataFrame, dict[str, Any]]:
    """Fine-tune a LoRA adapter (`fine_tuning.objective`: lm on the training prompts, or group_softmax on the
    training groups); return it, the loss history and a summary."""
    objective = fine_tuning["objective"]
    if objective == "lm" and len(train_prompts) and "style" in train_prompts \
            and (train_prompts["style"] == "options").all():  # pointwise prompts answer with a title alone
        check_recipe(fine_tuning["target"], evaluation["scoring"], str(train_prompts["instruction"].iloc[0]))
    if objective == "group_softmax":
        from ...core.llm.group_training import train_group_softmax  # noqa: PLC0415

        adapter, history = train_group_softmax(base_model, training_groups, title_priors, fine_tuning,
                                               evaluation["title_score"])
        return adapter, history, adapter.summary
    if objective != "lm":
        raise ConfigError(f"fine_tuning.objective must be 'lm' or 'group_softmax', got {objective!r}")
    cap = fine_tuning["max_eval_prompts"]
    if cap is not None and len(validation_prompts) > int(cap):  # validation loss on the first `cap` prompts
        validation_prompts = validation_prompts.iloc[: int(cap)]
    adapter, history = train_adapter(base_model, train_prompts, validation_prompts, fine_tuning)
    adapter.summary["objective"] = "lm"
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
    ax.set_ylabel("loss (answer tokens, or the group softmax)")
    ax.set_title("Fine-tuning loss")
    ax.legend()
    fig.tight_layout()
    return fig
