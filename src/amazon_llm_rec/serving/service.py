"""The service's state: the Recommender built once, the catalogue lookups, the test reviewers for the page.

A request that would miss its deadline with the LLM re-rank, or whose LLM re-rank raises, is answered by the
fallback ranker (`fusion_no_llm`, the same fitted fusion without the LLM's score) and marked degraded."""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..core.rank import baselines
from ..core.rank.evidence import Evidence
from ..core.rank.recommender import Recommendation, Recommender, build_recommender, llm_source
from .config import ProjectData, ServingSettings

logger = logging.getLogger(__name__)
_WORD = re.compile(r"[a-z]{3,}")
DEADLINE = "deadline: the LLM re-rank would miss serving.deadline_ms"


class UnknownProductError(ValueError):
    """A history or candidate entry is neither an ASIN nor a title of the catalogue."""

    def __init__(self, field: str, index: int, value: str) -> None:
        super().__init__(f"unknown product {value!r}: neither an ASIN nor a title of the catalogue")
        self.field, self.index, self.value = field, index, value


@dataclass
class Query:
    """One resolved request; `deadline`: time.monotonic() by which it should be answered (None: no deadline)."""

    history: list[str]
    k: int | None   # None: recommend.k
    exclude_bought: bool
    candidates: list[str] | None
    deadline: float | None = None


@dataclass
class Answer:
    """A request's ranked products, and why it was answered without the LLM when it was."""

    items: list[dict[str, Any]]
    degraded_reason: str | None = None


class RecommenderService:
    """Everything a request needs, loaded once."""

    def __init__(self, data: ProjectData, settings: ServingSettings) -> None:
        start = time.perf_counter()
        self.settings = settings
        params = data.params
        prompts = params.get("prompts") or {}
        items = data.items
        asins = items["asin"].astype(str)
        self.titles = dict(zip(asins, items["title"].fillna("").astype(str), strict=True))  # cleaned: the model's
        raw = items["raw_title"] if "raw_title" in items else items["title"]
        self.display = {a: (r if isinstance(r, str) and r.strip() else self.titles[a]) for a, r in zip(asins, raw, strict=True)}
        self.by_title: dict[str, str] = {}
        for table in (self.titles, self.display):
            for asin, title in table.items():
                if title.strip():
                    self.by_title.setdefault(title.strip().casefold(), asin)
        self._search = pd.DataFrame({"asin": list(self.titles), "title": [self.display[a] for a in self.titles]})
        self._search["key"] = self._search["title"].str.casefold() + " " + pd.Series(list(self.titles.values())).str.casefold()
        test = data.test_prompts
        evaluation = params["evaluation"]
        if settings.fit_on == "before_test" and test is not None and len(test):
            fitted = baselines.fit_sequences(data.sequences, test)
        else:
            fitted = [list(s) for s in data.sequences["asins"]]
        evidence = Evidence(fitted, items, evaluation["embedding_model"], evaluation["sasrec"], data.title_embeddings)
        source = llm_source(data.base_model, data.adapter, prompts, evaluation,
                            data.title_priors) if data.base_model else None
        history_size = int(prompts["history_size"])
        self.recommender: Recommender = build_recommender(evidence, data.fusion_model, params["recommend"],
                                                          evaluation, source, history_size,
                                                          retriever_mix=data.retriever_mix)
        self.fallback: Recommender | None = None
        if self.recommender.llm is not None:  # the same retriever and evidence, the fusion fitted without the LLM
            cfg = self.recommender.config
            ranker = "fusion_no_llm" if "fusion_no_llm" in (data.fusion_model or {}) else "retriever"
            self.fallback = Recommender(self.recommender.retriever, replace(cfg, ranker=ranker), data.fusion_model)
        self.per_request_s: float | None = None  # measured seconds of the LLM path per request (moving average)
        self._depth = max(self.recommender.config.num_candidates, settings.limits.max_candidates)
        self.reviewers = self._test_reviewers(test, data.sequences, settings.test_reviewers) if settings.demo else []
        self.example = self._example(test, data.sequences)
        self.info = {"ranker": self.recommender.config.ranker, "num_candidates": self.recommender.config.num_candidates,
                     "fallback": self.fallback.config.ranker if self.fallback else None, "products": len(self.titles),
                     "base_model": Path(data.base_model).name if data.base_model else None,
                     "adapter_version": _version(data.adapter), "fit_on": settings.fit_on,
                     "micro_batch": {"max_batch": settings.max_batch, "max_wait_ms": settings.max_wait_ms},
                     "max_queue": settings.max_queue, "deadline_ms": settings.deadline_ms}
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

    def _example(self, test: pd.DataFrame | None, sequences: pd.DataFrame) -> list[str]:
        """Two products of the served catalogue for the OpenAPI example: in the demo a test history's, else the two
        most popular products (the public schema shows no customer's history)."""
        if self.settings.demo and test is not None and len(test):
            hist = [a for a in test.iloc[0]["history_asins"] if a in self.titles][-2:]
            if hist:
                return list(hist)
        return self.recommender.retriever.by_popularity[:2]

    def product(self, asin: str) -> dict[str, str]:
        """ASIN and title as the catalogue lists it (the cleaned title is the model's input, not the display)."""
        return {"asin": asin, "title": self.display.get(asin, "")}

    def resolve(self, values: list[str], field: str) -> list[str]:
        """Map each entry (an ASIN, or a title, case-insensitive) to an ASIN; fail naming the first unknown one."""
        out = []
        for i, value in enumerate(values):
            v = value.strip()
            asin = None if not v else v if v in self.titles else self.by_title.get(v.casefold())
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

    # answering

    def late(self, deadline: float | None, ahead: int) -> bool:
        """Whether the LLM path would miss `deadline` behind `ahead` requests (the measured seconds per request)."""
        return (self.fallback is not None and deadline is not None and self.per_request_s is not None
                and time.monotonic() + self.per_request_s * (ahead + 1) > deadline)

    def answer_degraded(self, queries: list[Query], reason: str = DEADLINE) -> list[Answer]:
        """Answer by the fallback ranker, marked degraded. Each such answer lowers the estimate a little (2%), so
        that an estimate left high by a slow moment lets a request through to the LLM again and is re-measured."""
        if self.per_request_s is not None and reason == DEADLINE:
            self.per_request_s *= 0.98 ** len(queries)
        return [Answer(items, reason) for items in self._answer(self.fallback, queries)]

    def run_batch(self, queries: list[Query], deliver: Callable[[int, Answer], None] | None = None) -> list[Answer]:
        """Answer several requests with as few recommender calls as possible (one per kind of request).

        With an LLM ranker, requests whose deadline the LLM path would miss (the measured seconds per request times
        the batch's size) are answered by the fallback first, and handed to `deliver` at once; when the LLM path
        raises for a single request, it goes to the fallback too. When it raises for a batch, the exception
        propagates: the batcher answers the batch one request at a time."""
        if self.fallback is None:
            return [Answer(items) for items in self._answer(self.recommender, queries)]
        now = time.monotonic()
        full, late = list(range(len(queries))), []
        while full:
            estimate = (self.per_request_s or 0.0) * len(full)
            newly = [i for i in full if queries[i].deadline is not None and now + estimate > queries[i].deadline]
            if not newly:
                break
            late += newly
            full = [i for i in full if i not in newly]
        out: list[Answer | None] = [None] * len(queries)
        if late:
            for i, answer in zip(late, self.answer_degraded([queries[i] for i in late]), strict=True):
                out[i] = answer
                if deliver:
                    deliver(i, answer)
        if full:
            start = time.perf_counter()
            try:
                answered = self._answer(self.recommender, [queries[i] for i in full])
            except Exception as exc:
                if len(full) > 1:
                    raise
                logger.exception("the LLM re-rank failed; answering without it")
                out[full[0]] = self.answer_degraded([queries[full[0]]],
                                                    f"llm_error: the LLM re-rank raised {type(exc).__name__}")[0]
            else:
                per = (time.perf_counter() - start) / len(full)
                self.per_request_s = per if self.per_request_s is None else 0.7 * self.per_request_s + 0.3 * per
                for i, items in zip(full, answered, strict=True):
                    out[i] = Answer(items)
        return out  # type: ignore[return-value]

    def _answer(self, recommender: Recommender, queries: list[Query]) -> list[list[dict[str, Any]]]:
        groups: dict[tuple[bool, bool], list[int]] = {}
        for i, q in enumerate(queries):
            groups.setdefault((q.exclude_bought, q.candidates is not None), []).append(i)
        out: list[list[dict[str, Any]]] = [[] for _ in queries]
        for (exclude, given), rows in groups.items():
            recs = recommender.recommend([queries[i].history for i in rows], k=self._depth, exclude_bought=exclude,
                                         candidates=[queries[i].candidates for i in rows] if given else None)
            for i, row in zip(rows, recs, strict=True):
                k = queries[i].k or recommender.config.k
                out[i] = [self._item(r, queries[i].history) for r in self._collapse(row)[:k]]
        return out

    def _collapse(self, row: list[Recommendation]) -> list[Recommendation]:
        """Keep the best of products whose cleaned titles are the same (variants under several ASINs)."""
        if not self.settings.collapse_variants:
            return row
        seen: set[str] = set()
        out = []
        for r in row:
            key = r.title.casefold().strip() or r.asin
            if key not in seen:
                seen.add(key)
                out.append(r)
        return out

    def _item(self, r: Recommendation, history: list[str]) -> dict[str, Any]:
        return {"asin": r.asin, "title": self.display.get(r.asin, r.title), "score": round(r.score, 6),
                "retriever_rank": r.retriever_rank, "source": r.source, "reason": self.reason(r.asin, history)}

    def reason(self, asin: str, history: list[str]) -> str:
        """One line from the evidence: bought together with a history product, similar to one, or popular."""
        ret = self.recommender.retriever
        together = max(((ret.cooc.get(h, {}).get(asin, 0), h) for h in history), default=(0, ""))
        if together[0] > 0:
            n = together[0]
            return f"often bought with “{self.display.get(together[1], together[1])}” ({n} co-purchase{'s' * (n != 1)})"
        similar = self._most_similar(asin, history)
        if similar:
            return f"similar to “{self.display.get(similar, similar)}”"
        n = ret.pop.get(asin, 0)
        return f"popular ({n} purchase{'s' * (n != 1)})" if n else "a new product in the catalogue"

    def _most_similar(self, asin: str, history: list[str]) -> str | None:
        ret = self.recommender.retriever
        known = [h for h in history if h in ret.position]
        if not known or asin not in ret.position:
            return None
        if ret.matrix is not None:
            sims = ret.matrix[[ret.position[h] for h in known]] @ ret.matrix[ret.position[asin]]
            best = int(np.argmax(sims))
            return known[best] if math.isfinite(float(sims[best])) and sims[best] > 0.5 else None  # noqa: PLR2004
        words = set(_WORD.findall(self.titles.get(asin, "").casefold()))
        overlap = [(len(words & set(_WORD.findall(self.titles.get(h, "").casefold()))), h) for h in known]
        n, h = max(overlap)
        return h if n >= 2 else None  # noqa: PLR2004

    def self_check(self) -> None:
        """One recommendation through the configured ranker: a model that loads but cannot answer is refused."""
        answer = self._answer(self.recommender, [Query(self.example, 3, True, None)])[0]
        if not answer or not all(math.isfinite(i["score"]) for i in answer):
            raise RuntimeError(f"the self-check recommendation was empty or not finite: {answer}")


def _version(adapter: str | None) -> str | None:
    """The adapter's version: the timestamp folder of a versioned dataset, else the folder's name."""
    if not adapter:
        return None
    path = Path(adapter)
    return path.parent.name if re.match(r"\d{4}-\d\d-\d\dT", path.parent.name) else path.name
