"""Whole-catalogue evaluation of the two-stage recommender against full-catalogue baselines.

For each test window (reviewer, history, true next product): the retriever proposes N candidates from every
product, leaving out what the reviewer bought before; the recommender's ranker re-ranks them; the final top
k is compared with SASRec's, co-occurrence's and popularity's own rankings of the whole catalogue (the same
exclusion). Counts and SASRec come from each reviewer's sequence before their test target, as the
evaluation's baselines do. Per method: Recall@k (one true product, so the hit rate), NDCG@k and MRR@k, with
95% bootstrap intervals, and the recommended ranker minus every other method with paired intervals.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..metrics import bootstrap_interval, paired_bootstrap
from . import baselines
from .fusion import prefixes_of
from .recommender import Recommender, build_recommender, load_llm

if TYPE_CHECKING:
    from .evidence import Evidence

logger = logging.getLogger(__name__)


def list_metrics(ranked: list[list[str]], targets: list[str], k: int) -> dict[str, np.ndarray]:
    """Per row: recall@k, ndcg@k and mrr@k of one true product in a ranked list (0 when it is missing)."""
    rank = np.array([(row[:k].index(t) + 1) if t in row[:k] else 0 for row, t in zip(ranked, targets, strict=True)])
    hit = rank > 0
    safe = np.where(hit, rank, 1)
    return {f"recall@{k}": hit.astype(float), f"ndcg@{k}": np.where(hit, 1.0 / np.log2(safe + 1), 0.0),
            f"mrr@{k}": np.where(hit, 1.0 / safe, 0.0), "rank": rank}


def evaluate_catalogue(windows: pd.DataFrame, sequences: pd.DataFrame, evidence: Evidence,
                       fusion_model: dict[str, Any] | None, recommend: dict[str, Any], evaluation: dict[str, Any],
                       llm_source: dict[str, Any] | None, history_size: int, k: int, samples: int,
                       seed: int, retriever_mix: dict[str, Any] | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rank the whole catalogue for each test window with every method; return (predictions, metrics). Counts and
    SASRec are the `evidence`'s (the pipeline passes the test windows' evidence, which the protocols' baselines use)."""
    prefixes = prefixes_of(windows, sequences)
    histories = [list(h) for h in windows["history_asins"]]
    targets = windows["target_asin"].tolist()
    bought = [set(p) for p in prefixes]
    cache: dict[str, Any] = {}
    rec = build_recommender(evidence, fusion_model, recommend, evaluation, llm_source, history_size, cache, retriever_mix)
    cfg = rec.config
    ranked: dict[str, list[list[str]]] = {}
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    found = rec.retriever.retrieve([h[-cfg.history_size:] for h in histories], cfg.num_candidates, bought)
    seconds["retriever"] = time.perf_counter() - start
    retrieved = [f.asins for f in found]
    ranked["retriever"] = retrieved
    # the configured ranker, and both fusions where fitted: what the LLM adds over the whole catalogue is always measured
    rankers = [cfg.ranker] + [r for r in ("fusion", "fusion_no_llm") if r != cfg.ranker and r in (fusion_model or {})]
    for name in rankers:
        other = replace(cfg, ranker=name)
        ranker = rec if name == cfg.ranker else Recommender(
            rec.retriever, other, fusion_model, load_llm(llm_source, evaluation, other, cache)
            if "llm" in fusion_model[name]["features"] else None)
        start = time.perf_counter()
        out = ranker.recommend(histories, k=k, prefixes=prefixes, candidates=retrieved, exclude=bought)
        seconds[name] = time.perf_counter() - start + seconds["retriever"]
        ranked[name] = [[r.asin for r in row] for row in out]
        logger.info("Catalogue ranking %s: %d reviewers in %.1f s", name, len(histories), seconds[name])
    start = time.perf_counter()
    ranked["cooccurrence"] = [baselines.cooccurrence_ranking(h[-cfg.history_size:], rec.retriever.cooc, rec.retriever.pop,
                                                             b, k) for h, b in zip(histories, bought, strict=True)]
    seconds["cooccurrence"] = time.perf_counter() - start
    ranked["popularity"] = [[a for a in rec.retriever.by_popularity[: k + len(b)] if a not in b][:k] for b in bought]
    if "sasrec" in evaluation["baselines"]:  # the SASRec the protocols' baseline trained (once a cut)
        start = time.perf_counter()
        ranked["sasrec"] = evidence.sasrec.top_k(prefixes, k, bought)
        seconds["sasrec"] = time.perf_counter() - start

    reviewers = windows["reviewer_id"].to_numpy()
    per = {name: list_metrics(rows, targets, k) for name, rows in ranked.items()}
    n = cfg.num_candidates
    recall_n = np.array([t in row for row, t in zip(retrieved, targets, strict=True)], dtype=float)
    metrics: dict[str, Any] = {
        "reviewers": len(windows), "k": k, "num_candidates": n, "ranker": cfg.ranker,
        "retrieval_sources": cfg.retrieval.sources, "retrieval_turns": rec.retriever.weights, "exclude_bought": True,
        "catalogue_size": len(rec.retriever.asins),
        f"retriever_recall@{n}": float(recall_n.mean()),
        f"retriever_recall@{n}_ci95": bootstrap_interval(recall_n, samples, seed),
        "retriever_sources": pd.Series([s for f in found for s in f.sources]).value_counts(normalize=True).round(4).to_dict(),
        "methods": {}, "paired": {}, "seconds": seconds,
    }
    names = [f"recall@{k}", f"ndcg@{k}", f"mrr@{k}"]
    for name, values in per.items():
        metrics["methods"][name] = {m: float(values[m].mean()) for m in names}
        metrics["methods"][name]["ci95"] = {m: bootstrap_interval(values[m], samples, seed) for m in names}
    ours = per[cfg.ranker]
    for name, values in per.items():
        if name != cfg.ranker and samples:
            metrics["paired"][name] = {m: paired_bootstrap(ours[m], values[m], reviewers, samples, seed) for m in names}
    if samples and {"fusion", "fusion_no_llm"} <= set(per):  # the LLM re-ranker against the same fusion without it
        metrics["fusion_vs_fusion_no_llm"] = {m: paired_bootstrap(per["fusion"][m], per["fusion_no_llm"][m], reviewers,
                                                                  samples, seed) for m in names}
    frames = [pd.DataFrame({"method": name, "reviewer_id": reviewers, "target_asin": targets,
                            "ranked_asins": [list(r) for r in rows], "target_rank": per[name]["rank"]})
              for name, rows in ranked.items()]
    return pd.concat(frames, ignore_index=True), metrics
