"""The service's state: the Recommender built once, the catalogue lookups, the test reviewers for the page."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import pandas as pd

from ..core import baselines
from ..core.recommender import Recommender, build_recommender, llm_source
from .config import ProjectData, ServingSettings

logger = logging.getLogger(__name__)


class UnknownProductError(ValueError):
    """A history or candidate entry is neither an ASIN nor a title of the catalogue."""

    def __init__(self, field: str, index: int, value: str) -> None:
        super().__init__(f"unknown product {value!r}: neither an ASIN nor a title of the catalogue")
        self.field, self.index, self.value = field, index, value


@dataclass
class Query:
    """One resolved request."""

    history: list[str]
    k: int
    exclude_bought: bool
    candidates: list[str] | None


class RecommenderService:
    """Everything a request needs, loaded once."""

    def __init__(self, data: ProjectData, settings: ServingSettings) -> None:
        start = time.perf_counter()
        self.settings = settings
        params = data.params
        prompts = params.get("prompts") or {}
        items = data.items
        self.titles = dict(zip(items["asin"].astype(str), items["title"].fillna("").astype(str), strict=True))
        self.by_title: dict[str, str] = {}
        for asin, title in self.titles.items():
            self.by_title.setdefault(title.casefold(), asin)
        self._search = pd.DataFrame({"asin": list(self.titles), "title": list(self.titles.values())})
        self._search["key"] = self._search["title"].str.casefold()
        test = data.test_prompts
        if settings.fit_on == "before_test" and test is not None and len(test):
            fitted = baselines.fit_sequences(data.sequences, test)
        else:
            fitted = [list(s) for s in data.sequences["asins"]]
        source = llm_source(data.base_model, data.adapter, prompts, params.get("evaluation"),
                            data.title_priors) if data.base_model else None
        self.recommender: Recommender = build_recommender(items, fitted, data.fusion_model, params.get("recommend"),
                                                          params.get("evaluation") or {}, source,
                                                          int(prompts.get("history_size", 4)))
        self.reviewers = self._test_reviewers(test, data.sequences, settings.test_reviewers)
        self.info = {"ranker": self.recommender.config.ranker, "num_candidates": self.recommender.config.num_candidates,
                     "products": len(self.titles), "adapter": data.adapter, "base_model": data.base_model,
                     "fit_on": settings.fit_on, "micro_batch": {"max_batch": settings.max_batch,
                                                                "max_wait_ms": settings.max_wait_ms}}
        logger.info("Service ready in %.1f s: %s", time.perf_counter() - start, self.info)

    def _test_reviewers(self, test: pd.DataFrame | None, sequences: pd.DataFrame, n: int) -> list[dict[str, Any]]:
        if test is None or not len(test):
            return []
        seq_of = dict(zip(sequences["reviewer_id"], sequences["asins"], strict=True))
        out = []
        for row in test.head(n).itertuples():
            prefix = list(seq_of[row.reviewer_id])[: row.position]
            out.append({"reviewer_id": row.reviewer_id, "history": [self.product(a) for a in prefix],
                        "next": self.product(row.target_asin)})
        return out

    def product(self, asin: str) -> dict[str, str]:
        """ASIN and title."""
        return {"asin": asin, "title": self.titles.get(asin, "")}

    def resolve(self, values: list[str], field: str) -> list[str]:
        """Map each entry (an ASIN, or a title, case-insensitive) to an ASIN; fail naming the first unknown one."""
        out = []
        for i, value in enumerate(values):
            v = value.strip()
            asin = v if v in self.titles else self.by_title.get(v.casefold())
            if asin is None:
                raise UnknownProductError(field, i, value)
            out.append(asin)
        return out

    def search(self, q: str, limit: int) -> list[dict[str, str]]:
        """Products whose title contains every word of `q` (or whose ASIN starts with it), popular first."""
        words = q.casefold().split()
        if not words:
            return []
        mask = pd.Series(True, index=self._search.index)
        for w in words:
            mask &= self._search["key"].str.contains(w, regex=False)
        mask |= self._search["asin"].str.casefold().str.startswith(q.strip().casefold())
        hits = self._search[mask]
        pop = self.recommender.retriever.pop
        order = sorted(hits.index, key=lambda i: (-pop[hits.at[i, "asin"]], hits.at[i, "title"]))[:limit]
        return [{"asin": hits.at[i, "asin"], "title": hits.at[i, "title"]} for i in order]

    def run_batch(self, queries: list[Query]) -> list[list[dict[str, Any]]]:
        """Answer several requests with as few recommender calls as possible (one per kind of request)."""
        groups: dict[tuple[bool, bool], list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault((q.exclude_bought, q.candidates is not None), []).append(i)
        out: list[list[dict[str, Any]]] = [[] for _ in queries]
        for (exclude, given), rows in groups.items():
            k = max(queries[i].k for i in rows)
            recs = self.recommender.recommend([queries[i].history for i in rows], k=k, exclude_bought=exclude,
                                              candidates=[queries[i].candidates for i in rows] if given else None)
            for i, row in zip(rows, recs, strict=True):
                out[i] = [{"asin": r.asin, "title": r.title, "score": round(r.score, 6),
                           "retriever_rank": r.retriever_rank, "source": r.source} for r in row[: queries[i].k]]
        return out
