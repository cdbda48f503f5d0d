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


def ranking_metrics(truth_rank: np.ndarray, num_options: int) -> dict[str, float]:
    """HR@k and NDCG@k (k = 5, 10) where there are more than k candidates."""
    out: dict[str, float] = {}
    for k in (5, 10):
        if num_options > k:
            hit = truth_rank <= k
            out[f"hr@{k}"] = float(np.mean(hit))
            out[f"ndcg@{k}"] = float(np.mean(np.where(hit, 1.0 / np.log2(truth_rank + 1), 0.0)))
    return out


def bootstrap_intervals(preds: pd.DataFrame, samples: int = 1000, seed: int = 0, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of accuracy, MRR and HR/NDCG@k, resampling test prompts."""
    rng = np.random.default_rng(seed)
    correct = (preds["correct_letter"].to_numpy() == preds["predicted_letter"].to_numpy()).astype(float)
    rank = preds["truth_rank"].to_numpy()
    per_prompt = {"accuracy": correct, "mrr": 1.0 / rank}
    k_opts = int(preds["num_options"].iloc[0])
    for k in (5, 10):
        if k_opts > k:
            per_prompt[f"hr@{k}"] = (rank <= k).astype(float)
            per_prompt[f"ndcg@{k}"] = np.where(rank <= k, 1.0 / np.log2(rank + 1), 0.0)
    idx = rng.integers(0, len(preds), size=(samples, len(preds)))
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return {name: [float(np.percentile(v[idx].mean(axis=1), lo)), float(np.percentile(v[idx].mean(axis=1), hi))]
            for name, v in per_prompt.items()}


def method_metrics(preds: pd.DataFrame, bootstrap_samples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Compute the metrics of one method's predictions, with 95% bootstrap intervals."""
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
    out["reviewers"] = int(preds["reviewer_id"].nunique())
    out.update(ranking_metrics(preds["truth_rank"].to_numpy(), int(preds["num_options"].iloc[0])))
    if bootstrap_samples:
        out["ci95"] = bootstrap_intervals(preds, bootstrap_samples, seed)
    return out
