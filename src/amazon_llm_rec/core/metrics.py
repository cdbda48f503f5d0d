"""Metrics of a method's predictions: accuracy (HR@1), weighted P/R/F1, exact match, MRR."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

_NORM = re.compile(r"[^a-z0-9]+")


def normalize_answer(text: str | None) -> str:
    """Lower-case and drop everything but letters and digits."""
    return _NORM.sub("", (text or "").lower())


def method_metrics(preds: pd.DataFrame) -> dict[str, Any]:
    """Compute the metrics of one method's predictions."""
    from sklearn.metrics import precision_recall_fscore_support  # noqa: PLC0415

    y_true, y_pred = preds["correct_letter"].to_numpy(), preds["predicted_letter"].to_numpy()
    p, r, f1, _ = precision_recall_fscore_support(y_true, y_pred, average="weighted", zero_division=0)
    out: dict[str, Any] = {
        "n": len(preds),
        "accuracy": float(np.mean(y_true == y_pred)),
        "precision_weighted": float(p),
        "recall_weighted": float(r),
        "f1_weighted": float(f1),
        "mrr": float(np.mean(1.0 / preds["truth_rank"].to_numpy())),
    }
    generated = preds[preds["generated"].notna()]
    if len(generated):
        matched = [normalize_answer(g) == normalize_answer(e)
                   for g, e in zip(generated["generated"], generated["expected_output"], strict=True)]
        out["exact_match"] = float(np.mean(matched))
    else:
        out["exact_match"] = None
    out["exact_match_n"] = len(generated)
    return out
