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
from typing import Any

import numpy as np
import pandas as pd

from . import baselines
from .metrics import paired_bootstrap
from .recommender import Recommender, build_recommender, load_llm

logger = logging.getLogger(__name__)


def list_metrics(ranked: list[list[str]], targets: list[str], k: int) -> dict[str, np.ndarray]:
    """Per row: recall@k, ndcg@k and mrr@k of one true product in a ranked list (0 when it is missing)."""
    rank = np.array([(row[:k].index(t) + 1) if t in row[:k] else 0 for row, t in zip(ranked, targets, strict=True)])
    hit = rank > 0
    safe = np.where(hit, rank, 1)
    return {f"recall@{k}": hit.astype(float), f"ndcg@{k}": np.where(hit, 1.0 / np.log2(safe + 1), 0.0),
            f"mrr@{k}": np.where(hit, 1.0 / safe, 0.0), "rank": rank}


def _interval(values: np.ndarray, samples: int, seed: int) -> list[float]:
    if not samples or not len(values):
        return [float(values.mean()), float(values.mean())] if len(values) else [0.0, 0.0]
    idx = np.random.default_rng(seed).integers(0, len(values), size=(samples, len(values)))
    return [float(v) for v in np.percentile(values[idx].mean(axis=1), [2.5, 97.5])]


def evaluate_catalogue(windows: pd.DataFrame, sequences: pd.DataFrame, items: pd.DataFrame,
                       fusion_model: dict[str, Any] | None, recommend: dict[str, Any], evaluation: dict[str, Any],
                       llm_source: dict[str, Any] | None, history_size: int, k: int = 10,
                       samples: int = 1000, seed: int = 0,
                       fit_on: pd.DataFrame | None = None) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Rank the whole catalogue for each test window with every method; return (predictions, metrics). Counts are cut
    for the windows `fit_on` (default: these; the pipeline passes every test window, as the protocols use)."""
    fitted = baselines.fit_sequences(sequences, windows if fit_on is None else fit_on)
    seq_of = dict(zip(sequences["reviewer_id"], sequences["asins"], strict=True))
    prefixes = [list(seq_of[r])[:p] for r, p in zip(windows["reviewer_id"], windows["position"], strict=True)]
    histories = [list(h) for h in windows["history_asins"]]
    targets = windows["target_asin"].tolist()
    bought = [set(p) for p in prefixes]
    cache: dict[str, Any] = {}
    rec = build_recommender(items, fitted, fusion_model, recommend, evaluation, llm_source, history_size, cache)
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
            if "llm" in fusion_model[name]["features"] else None, rec.sasrec)
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
    if "sasrec" in (evaluation.get("baselines") or []):
        from .sasrec import SASRecConfig, fit_sasrec  # noqa: PLC0415

        start = time.perf_counter()
        model = fit_sasrec(fitted, SASRecConfig.from_params(evaluation.get("sasrec")))
        ranked["sasrec"] = model.top_k(prefixes, k, bought)
        seconds["sasrec"] = time.perf_counter() - start

    reviewers = windows["reviewer_id"].to_numpy()
    per = {name: list_metrics(rows, targets, k) for name, rows in ranked.items()}
    n = cfg.num_candidates
    recall_n = np.array([t in row for row, t in zip(retrieved, targets, strict=True)], dtype=float)
    metrics: dict[str, Any] = {
        "reviewers": len(windows), "k": k, "num_candidates": n, "ranker": cfg.ranker,
        "retrieval_sources": cfg.sources, "exclude_bought": True,
        "catalogue_size": len(rec.retriever.asins),
        f"retriever_recall@{n}": float(recall_n.mean()),
        f"retriever_recall@{n}_ci95": _interval(recall_n, samples, seed),
        "retriever_sources": pd.Series([s for f in found for s in f.sources]).value_counts(normalize=True).round(4).to_dict(),
        "methods": {}, "paired": {}, "seconds": seconds,
    }
    names = [f"recall@{k}", f"ndcg@{k}", f"mrr@{k}"]
    for name, values in per.items():
        metrics["methods"][name] = {m: float(values[m].mean()) for m in names}
        metrics["methods"][name]["ci95"] = {m: _interval(values[m], samples, seed) for m in names}
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


def catalogue_section(metrics: dict[str, Any] | None) -> list[str]:
    """Markdown lines for report.md: the whole-catalogue table and the paired differences."""
    if not metrics or not metrics.get("methods"):
        return []
    k, n, ranker = metrics["k"], metrics["num_candidates"], metrics["ranker"]
    cols = [f"recall@{k}", f"ndcg@{k}", f"mrr@{k}"]
    lo, hi = metrics[f"retriever_recall@{n}_ci95"]
    lines = ["## Whole catalogue: two-stage recommendation", "",
             f"{metrics['reviewers']} test reviewers, {metrics['catalogue_size']} products, the products each reviewer "
             f"bought before left out. The retriever ({' + '.join(metrics['retrieval_sources'])}) finds the true next "
             f"product among its {n} candidates for {100 * metrics[f'retriever_recall@{n}']:.1f}% "
             f"[{100 * lo:.1f}, {100 * hi:.1f}] of them; `{ranker}` re-ranks them. The baselines rank the whole "
             "catalogue themselves.", "",
             "| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
    for name, m in metrics["methods"].items():
        cells = [f"{m[c]:.3f} [{m['ci95'][c][0]:.3f}, {m['ci95'][c][1]:.3f}]" for c in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    if metrics.get("paired"):
        lines += ["", f"Paired differences, `{ranker}` minus each method (95% interval, reviewers resampled):", "",
                  "| method | " + " | ".join(cols) + " |", "|---|" + "---|" * len(cols)]
        for name, d in metrics["paired"].items():
            lines.append(f"| {name} | " + " | ".join(f"{d[c]['diff']:+.3f} [{d[c]['lo']:+.3f}, {d[c]['hi']:+.3f}]"
                                                     for c in cols) + " |")
        beaten = [o for o, d in metrics["paired"].items() if d[cols[0]]["lo"] > 0]
        lost = [o for o, d in metrics["paired"].items() if d[cols[0]]["hi"] < 0]
        lines += ["", f"On Recall@{k}, `{ranker}` is ahead of {', '.join(beaten) or 'no method'} with an interval above 0"
                  + (f", and behind {', '.join(lost)} with an interval below 0." if lost else "; the rest are not told apart.")]
    lines += ["", "Seconds per method (retrieval included for the re-rankers): "
              + ", ".join(f"{m} {s:.1f}" for m, s in metrics["seconds"].items()), ""]
    return lines
