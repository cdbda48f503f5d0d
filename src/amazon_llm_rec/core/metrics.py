"""Metrics of a method's predictions: accuracy (HR@1), weighted P/R/F1, exact match, MRR, HR/NDCG@k, bias."""

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


def _weighted_prf(true_idx: np.ndarray, pred_idx: np.ndarray, k: int, weight: np.ndarray) -> np.ndarray:
    """Weighted precision, recall and F1 (as scikit-learn, zero_division=0) of one set of predictions under each
    row of `weight` ([S, N]: how often each prediction counts in resample s)."""
    cell = true_idx * k + pred_idx  # [N]
    onehot = np.zeros((len(cell), k * k))
    onehot[np.arange(len(cell)), cell] = 1.0
    conf = (weight @ onehot).reshape(len(weight), k, k)
    tp = np.diagonal(conf, axis1=1, axis2=2)
    support, predicted = conf.sum(axis=2), conf.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    weights = support / support.sum(axis=1, keepdims=True)
    return np.stack([(precision * weights).sum(1), (recall * weights).sum(1), (f1 * weights).sum(1)], axis=1)


def bootstrap_intervals(preds: pd.DataFrame, samples: int, seed: int, level: float = 0.95) -> dict[str, list[float]]:
    """Percentile bootstrap intervals of every metric, resampling test reviewers with all their prompts (a reviewer
    with several prompts, as under paper_random, is one draw); exact match: over its generated subset."""
    rng = np.random.default_rng(seed)
    correct = (preds["correct_letter"].to_numpy() == preds["predicted_letter"].to_numpy()).astype(float)
    rank = preds["truth_rank"].to_numpy()
    per_prompt = {"accuracy": correct, "mrr": 1.0 / rank}
    k_opts = int(preds["num_options"].iloc[0])
    for k in (5, 10):
        if k_opts > k:
            per_prompt[f"hr@{k}"] = (rank <= k).astype(float)
            per_prompt[f"ndcg@{k}"] = np.where(rank <= k, 1.0 / np.log2(rank + 1), 0.0)
    codes, uniques = pd.factorize(preds["reviewer_id"].to_numpy())
    drawn = reviewer_draws(len(uniques), samples, rng)  # [S, reviewers]: how often each reviewer was drawn
    weight = drawn[:, codes]  # [S, prompts]: each prompt counts as often as its reviewer was drawn
    total = weight.sum(axis=1)
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2

    def interval(values: np.ndarray) -> list[float]:  # a resample without any value to average (NaN) is left out
        return [float(np.nanpercentile(values, lo)), float(np.nanpercentile(values, hi))]

    out = {name: interval(weight @ v / total) for name, v in per_prompt.items()}
    letters = {c: i for i, c in enumerate(sorted(set(preds["correct_letter"]) | set(preds["predicted_letter"])))}
    t = np.array([letters[c] for c in preds["correct_letter"]])
    p = np.array([letters[c] for c in preds["predicted_letter"]])
    prf = _weighted_prf(t, p, len(letters), weight)
    for j, name in enumerate(("precision_weighted", "recall_weighted", "f1_weighted")):
        out[name] = interval(prf[:, j])
    generated = preds["generated"].notna().to_numpy() if "generated" in preds else np.zeros(len(preds), bool)
    matched = exact_matches(preds)
    if len(matched):
        w = weight[:, generated]
        drawn_any = w.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out["exact_match"] = interval(np.where(drawn_any > 0, (w @ matched) / drawn_any, np.nan))
    return out


def bootstrap_interval(values: np.ndarray, samples: int, seed: int, level: float = 0.95) -> list[float]:
    """Percentile bootstrap interval of the mean of per-reviewer values (one value a reviewer); the same draws as
    `paired_bootstrap`, and the point estimate twice when `samples` is 0."""
    values = np.asarray(values, dtype=float)
    if not len(values):
        return [0.0, 0.0]
    if not samples:
        return [float(values.mean())] * 2
    means = reviewer_draws(len(values), samples, np.random.default_rng(seed)) @ values / len(values)
    return [float(v) for v in np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])]


def reviewer_draws(reviewers: int, samples: int, rng: np.random.Generator) -> np.ndarray:
    """[samples, reviewers] counts: how many times each reviewer is drawn in each bootstrap resample."""
    idx = rng.integers(0, reviewers, size=(samples, reviewers))
    return np.stack([np.bincount(row, minlength=reviewers) for row in idx]).astype(float)


def exact_matches(preds: pd.DataFrame) -> np.ndarray:
    """1.0 where the generated answer equals the expected one (normalized), over the prompts that were generated."""
    generated = preds[preds["generated"].notna()]
    return np.array([float(normalize_answer(g) == normalize_answer(e))
                     for g, e in zip(generated["generated"], generated["expected_output"], strict=True)])


def accuracy_by_position(preds: pd.DataFrame) -> dict[str, float]:
    """Accuracy by the letter (position) of the true option: a position-biased model varies here."""
    correct = preds["correct_letter"] == preds["predicted_letter"]
    return {str(k): float(v) for k, v in correct.groupby(preds["correct_letter"]).mean().sort_index().items()}


def method_metrics(preds: pd.DataFrame, bootstrap_samples: int, seed: int) -> dict[str, Any]:
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
    matched = exact_matches(preds)
    out["exact_match"] = float(matched.mean()) if len(matched) else None
    out["exact_match_n"] = len(matched)
    out["accuracy_by_position"] = accuracy_by_position(preds)
    out["reviewers"] = int(preds["reviewer_id"].nunique())
    out.update(ranking_metrics(preds["truth_rank"].to_numpy(), int(preds["num_options"].iloc[0])))
    if bootstrap_samples:
        out["ci95"] = bootstrap_intervals(preds, bootstrap_samples, seed)
    return out


def paired_bootstrap(a: np.ndarray, b: np.ndarray, reviewers: np.ndarray, samples: int, seed: int,
                     level: float = 0.95) -> dict[str, float]:
    """Difference of means a - b (per-prompt values of two methods on the same prompts) with a paired
    percentile bootstrap interval: each resample draws test reviewers with replacement and uses the same
    drawn reviewers (all their prompts) for both methods."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if a.shape != b.shape or a.shape != np.shape(reviewers):
        raise ValueError(f"paired bootstrap needs the same prompts for both methods ({a.shape}, {b.shape})")
    codes, _ = pd.factorize(np.asarray(reviewers))
    diff_sum = np.bincount(codes, weights=a - b)
    count = np.bincount(codes).astype(float)
    drawn = reviewer_draws(len(count), samples, np.random.default_rng(seed))  # the same draws as the intervals
    means = (drawn @ diff_sum) / (drawn @ count)
    lo, hi = np.percentile(means, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return {"diff": float((a - b).mean()), "lo": float(lo), "hi": float(hi), "reviewers": int(len(count))}
