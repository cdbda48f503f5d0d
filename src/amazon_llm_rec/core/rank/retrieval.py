"""The first stage over the whole catalogue: a retriever that proposes N candidates per customer.

Three sources, merged in turn (LlamaRec's two-stage design, with cheap sources):
- co-occurrence with the history (reviewers who bought a history product and the candidate),
- the nearest neighbours of the mean all-MiniLM-L6-v2 embedding of the history's titles,
- popularity, as fill when the other two run short.
The merged list takes the next unseen product of each source in turn (co-occurrence first), so each source
gets about an equal share of the N places; products the customer already bought are left out when asked.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import ConfigError

if TYPE_CHECKING:
    from .evidence import Evidence

logger = logging.getLogger(__name__)

SOURCES = ("cooccurrence", "embedding", "popularity")


@dataclass
class Retrieved:
    """One customer's candidates, best first, with the source that proposed each."""

    asins: list[str]
    sources: list[str]


class Retriever:
    """Whole-catalogue candidate generation from one data cut's `Evidence`."""

    def __init__(self, evidence: Evidence, sources: list[str] | tuple[str, ...], cooccurrence_window: int) -> None:
        unknown = [s for s in sources if s not in SOURCES]
        if unknown or not sources:
            raise ConfigError(f"recommend.retrieval.sources: unknown {unknown or 'empty list'}; choose from {list(SOURCES)}")
        start = time.perf_counter()
        self.evidence, self.sources = evidence, list(sources)
        self.asins, self.position, self.titles = evidence.catalogue, evidence.position, evidence.titles
        self.pop, self.by_popularity = evidence.pop, evidence.by_popularity
        self.cooc = evidence.cooccurrence(cooccurrence_window) if "cooccurrence" in self.sources else {}
        self.matrix = evidence.matrix if "embedding" in self.sources else None
        logger.info("Retriever over %d products from %d sequences (%s) built in %.1f s", len(self.asins),
                    len(evidence.fitted), "+".join(self.sources), time.perf_counter() - start)

    def history_vectors(self, histories: list[list[str]]) -> np.ndarray:
        """Mean title embedding of each history (unit length); catalogue products only."""
        assert self.matrix is not None
        out = np.zeros((len(histories), self.matrix.shape[1]), dtype=np.float32)
        for i, hist in enumerate(histories):
            rows = [self.position[a] for a in hist if a in self.position]
            if rows:
                v = self.matrix[rows].mean(axis=0)
                out[i] = v / (np.linalg.norm(v) + 1e-12)
        return out

    def cooccurrence_scores(self, history: list[str]) -> Counter:
        """Summed co-occurrence counts of every product with the history's products."""
        scores: Counter = Counter()
        for h in history:
            scores.update(self.cooc.get(h, {}))
        return scores

    def retrieve(self, histories: list[list[str]], n: int, exclude: list[set[str]] | None = None) -> list[Retrieved]:
        """Up to `n` candidates per history, merged from the sources in turn, skipping each row's `exclude`."""
        exclude = exclude or [set() for _ in histories]
        emb_order = None
        if "embedding" in self.sources:
            sims = self.history_vectors(histories) @ self.matrix.T
            depth = min(len(self.asins), n + max((len(e) for e in exclude), default=0))
            top = np.argpartition(-sims, depth - 1, axis=1)[:, :depth] if depth < len(self.asins) else \
                np.tile(np.arange(len(self.asins)), (len(histories), 1))
            emb_order = [row[np.argsort(-sims[i, row], kind="stable")] for i, row in enumerate(top)]
        out = []
        for i, hist in enumerate(histories):
            lists: dict[str, list[str]] = {}
            if "cooccurrence" in self.sources:
                scores = self.cooccurrence_scores(hist)
                top_pop = max(self.pop.values(), default=0) + 1.0
                lists["cooccurrence"] = sorted((a for a in scores if a in self.position),
                                               key=lambda a: (-(scores[a] + self.pop[a] / top_pop), a))
            if emb_order is not None:
                lists["embedding"] = [self.asins[j] for j in emb_order[i]]
            if "popularity" in self.sources:
                lists["popularity"] = self.by_popularity
            out.append(_merge(lists, n, exclude[i]))
        return out


def _merge(lists: dict[str, list[str]], n: int, exclude: set[str]) -> Retrieved:
    """Take the next new product of each source in turn until `n` are chosen or all sources run dry.

    Popularity only fills: it is drawn from once the other sources are exhausted."""
    chosen: list[str] = []
    sources: list[str] = []
    seen = set(exclude)
    cursors = {name: 0 for name in lists}
    main = [name for name in lists if name != "popularity"] or list(lists)

    def take(name: str) -> bool:
        items = lists[name]
        while cursors[name] < len(items):
            a = items[cursors[name]]
            cursors[name] += 1
            if a not in seen:
                seen.add(a)
                chosen.append(a)
                sources.append(name)
                return True
        return False

    active = list(main)
    while len(chosen) < n and active:
        for name in list(active):
            if len(chosen) >= n:
                break
            if not take(name):
                active.remove(name)
    if "popularity" in lists and "popularity" not in main:
        while len(chosen) < n and take("popularity"):
            pass
    return Retrieved(chosen, sources)
