"""Non-LLM baselines scored on exactly the candidate sets the LLM sees."""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Any

import numpy as np
import pandas as pd


def fit_sequences(sequences: pd.DataFrame, test_prompts: pd.DataFrame) -> list[list[str]]:
    """Each reviewer's sequence cut before their earliest test target: what baselines may learn from."""
    first_test = test_prompts.groupby("reviewer_id")["position"].min().to_dict()
    fitted = []
    for rid, asins in zip(sequences["reviewer_id"], sequences["asins"], strict=True):
        cut = first_test.get(rid, len(asins))
        fitted.append(list(asins)[:cut])
    return fitted


def popularity(fitted: list[list[str]]) -> Counter:
    """Count how many fitted reviewers reviewed each product."""
    return Counter(a for seq in fitted for a in seq)


def cooccurrence(fitted: list[list[str]], window: int) -> dict[str, Counter]:
    """Count item pairs reviewed by the same reviewer within `window` positions (0: anywhere)."""
    counts: dict[str, Counter] = defaultdict(Counter)
    for seq in fitted:
        for i, a in enumerate(seq):
            stop = len(seq) if window <= 0 else min(len(seq), i + window + 1)
            for b in seq[i + 1 : stop]:
                if a != b:
                    counts[a][b] += 1
                    counts[b][a] += 1
    return counts


def score_baselines(test_prompts: pd.DataFrame, sequences: pd.DataFrame, params: dict[str, Any]) -> dict[str, np.ndarray]:
    """Return per-method score matrices [N, options] for random, popularity and co-occurrence."""
    fitted = fit_sequences(sequences, test_prompts)
    pop = popularity(fitted)
    cooc = cooccurrence(fitted, int(params.get("cooccurrence_window", 0)))
    rng = np.random.default_rng(int(params["seed"]))
    cands = test_prompts["candidate_asins"].tolist()
    k = len(cands[0])
    jitter = rng.random((len(cands), k)) * 1e-6  # seeded tie-break
    random_scores = rng.random((len(cands), k))
    pop_scores = np.array([[pop[c] for c in row] for row in cands], dtype=float)
    co_scores = np.array(
        [[sum(cooc[h][c] for h in hist) for c in row]
         for hist, row in zip(test_prompts["history_asins"], cands, strict=True)],
        dtype=float,
    )
    pop_norm = pop_scores / (pop_scores.max() + 1.0)
    return {
        "random": random_scores,
        "popularity": pop_scores + jitter,
        "cooccurrence": co_scores + 1e-3 * pop_norm + jitter,  # popularity breaks ties
    }
