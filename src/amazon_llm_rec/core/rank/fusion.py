"""Per-candidate evidence and the learned fusion: a conditional logit over each window's candidates.

Evidence of a window (reviewer r, target at position p) uses only:
- r's own events before p (the history and the rest of the prefix), and
- the fitted sequences of `baselines.fit_sequences` (their `Evidence`). Under the `global_time` split: every reviewer's events
  before the prompt set's cutoff date, so nothing from after the window's period. Under leave_last_out and
  paper_random: every reviewer's sequence cut before their earliest window in the same prompt set, whole for
  reviewers without such a window, so other reviewers' events, some later than p, are counted.
So a window's own target and r's later events never enter its features (`tests` poison them to check); other
reviewers' later events do, except under `global_time`.

The fusion scores candidate j of a window as w . z_j, where z_j are the standardised features, and the
probability of each option is the softmax over the window's candidates: the study's "option with the
highest probability", with the weights fitted by maximum likelihood on validation windows only.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pandas as pd

from ..errors import ConfigError
from .evidence import Evidence

logger = logging.getLogger(__name__)

FEATURES = ("llm", "cooccurrence", "cooccurrence_all", "popularity", "bm25", "embedding", "sasrec")
DESCRIPTIONS = {
    "llm": "the fine-tuned LLM's score of the candidate's title after the history (evaluation.title_score: pmi, mean or sum)",
    "cooccurrence": "log(1 + reviewers who bought the candidate and a history product), summed over the history",
    "cooccurrence_all": "the same over every product the reviewer bought before the target, not only the history",
    "popularity": "log(1 + reviewers who bought the candidate)",
    "bm25": "BM25 of the candidate's title against the history titles",
    "embedding": "cosine of the candidate's all-MiniLM-L6-v2 title embedding and the mean history embedding",
    "sasrec": "SASRec's score, trained on the fitted sequences of the same prompt set",
}


def check_features(names: list[str]) -> list[str]:
    """Return the feature names, failing on an unknown one with the parameter's name."""
    unknown = [n for n in names if n not in FEATURES]
    if unknown or not names:
        raise ConfigError(f"evaluation.fusion.features: unknown {unknown or 'empty list'}; choose from {list(FEATURES)}")
    return list(names)


def prefixes_of(prompts: pd.DataFrame, sequences: pd.DataFrame) -> list[list[str]]:
    """Each window's prefix: everything its reviewer bought before the target."""
    seq_of = dict(zip(sequences["reviewer_id"], sequences["asins"], strict=True))
    return [list(seq_of[r])[:p] for r, p in zip(prompts["reviewer_id"], prompts["position"], strict=True)]


def candidate_features(prompts: pd.DataFrame, sequences: pd.DataFrame, evidence: Evidence,
                       names: list[str]) -> dict[str, np.ndarray]:
    """Return {feature: [N, candidates]} for the non-LLM features in `names`, for one candidate protocol, from the
    evidence of the prompt set's data cut. The values come from `features.compute`, the function the service's
    `Recommender` calls."""
    from . import features  # noqa: PLC0415

    cands = prompts["candidate_asins"].apply(list).tolist()
    hists = prompts["history_asins"].apply(list).tolist()
    if "embedding" in names:  # every title these rows need, in one pass
        evidence.vectors(sorted({a for row in (*cands, *hists) for a in row}))
    rows = features.compute(evidence, hists, prefixes_of(prompts, sequences), cands, list(names))
    return {n: np.stack([r[:, i] for r in rows]).astype(float) for i, n in enumerate(names)}


def features_frame(prompts: pd.DataFrame, features: dict[str, np.ndarray], protocol: str) -> pd.DataFrame:
    """Long form: one row per (prompt, candidate) with its label and features."""
    n, k = len(prompts), len(prompts["candidate_asins"].iloc[0])
    truth = prompts["correct_letter"].map(lambda c: ord(c) - ord("A")).to_numpy()
    frame = pd.DataFrame({
        "protocol": protocol,
        "row": np.repeat(np.arange(n), k),
        "option": np.tile(np.arange(k), n),
        "reviewer_id": np.repeat(prompts["reviewer_id"].to_numpy(), k),
        "asin": [a for row in prompts["candidate_asins"] for a in row],
        "label": (np.tile(np.arange(k), n) == np.repeat(truth, k)).astype(int),
    })
    for name, values in features.items():
        frame[name] = values.reshape(-1)
    return frame


def to_tensor(frame: pd.DataFrame, names: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Turn one protocol's long frame back into features [N, K, F] and the true option index [N]."""
    frame = frame.sort_values(["row", "option"])
    n, k = int(frame["row"].max()) + 1, int(frame["option"].max()) + 1
    x = frame[names].to_numpy(dtype=float).reshape(n, k, len(names))
    y = frame["label"].to_numpy().reshape(n, k).argmax(axis=1)
    return x, y


def fit_conditional_logit(x: np.ndarray, y: np.ndarray, names: list[str], l2: float = 1e-3) -> dict[str, Any]:
    """Fit w by maximum likelihood of softmax_j(w . z_ij) at the true option (z: standardised features)."""
    from scipy.optimize import minimize  # noqa: PLC0415

    if not np.isfinite(x).all():
        bad = [n for i, n in enumerate(names) if not np.isfinite(x[..., i]).all()]
        raise ValueError(f"fusion features {bad} have non-finite values")
    flat = x.reshape(-1, x.shape[-1])
    mean, scale = flat.mean(axis=0), flat.std(axis=0)
    scale[scale == 0] = 1.0
    z = (x - mean) / scale
    n = len(y)
    picked = z[np.arange(n), y]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        s = z @ w
        s_max = s.max(axis=1, keepdims=True)
        p = np.exp(s - s_max)
        total = p.sum(axis=1, keepdims=True)
        lse = (s_max + np.log(total))[:, 0]
        p /= total
        value = float((lse - s[np.arange(n), y]).mean() + 0.5 * l2 * w @ w)
        grad = (np.einsum("nk,nkf->f", p, z) - picked.sum(axis=0)) / n + l2 * w
        return value, grad

    result = minimize(loss, np.zeros(x.shape[-1]), jac=True, method="L-BFGS-B")
    w = result.x
    return {"features": list(names), "weights": [float(v) for v in w], "mean": [float(v) for v in mean],
            "scale": [float(v) for v in scale], "l2": float(l2), "windows": int(n),
            "candidates": int(x.shape[1]), "neg_log_likelihood": float(result.fun), "converged": bool(result.success),
            "train_hr1": float(np.mean((z @ w).argmax(axis=1) == y))}


def apply_fusion(model: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """Scores [N, K] of a fitted fusion on features [N, K, F] in the model's feature order."""
    z = (x - np.asarray(model["mean"])) / np.asarray(model["scale"])
    return z @ np.asarray(model["weights"])
