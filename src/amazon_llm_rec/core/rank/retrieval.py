"""The first stage over the whole catalogue: a retriever that proposes N candidates per customer.

Cheap sources, each ranking the whole catalogue after the history (LlamaRec's two-stage design):
- `cooccurrence`: summed co-occurrence counts with the history's products;
- `rp3beta`: RP3beta's random walk product -> reviewer -> product, popularity-discounted (sparse; scales to millions);
- `ease`: EASE's closed-form item-item model (a dense catalogue x catalogue solve: small catalogues only);
- `embedding`: the nearest neighbours of the mean all-MiniLM-L6-v2 embedding of the history's titles;
- `popularity`: fills when the others run short.
The merged list takes the next unseen product of a source in turn, in proportion to each source's quota
(`recommend.retrieval.quotas`): equal turns, fixed shares, or shares learned on validation windows
(`learn_quotas`, the evaluation's `fit_retriever_mix` node). Products the customer already bought are left out.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import ConfigError
from .ann import AnnConfig

if TYPE_CHECKING:
    from .evidence import Evidence

logger = logging.getLogger(__name__)

SOURCES = ("cooccurrence", "rp3beta", "ease", "embedding", "popularity")


@dataclass
class Retrieved:
    """One customer's candidates, best first, with the source that proposed each."""

    asins: list[str]
    sources: list[str]


@dataclass
class RetrievalConfig:
    """`recommend.retrieval`, checked once; every default lives in conf/base/parameters_recommend.yml."""

    sources: list[str]
    quotas: str | dict[str, float] | None
    learn_step: float
    learn_max_windows: int | None
    cooccurrence_window: int
    rp3beta: dict[str, Any]
    ease: dict[str, Any]
    ann: AnnConfig

    @classmethod
    def from_params(cls, retrieval: dict[str, Any]) -> RetrievalConfig:
        """Build from `params:recommend.retrieval`, naming the parameter at fault."""
        keys = {"sources", "quotas", "learn", "cooccurrence_window", "rp3beta", "ease", "ann"}
        unknown, missing = sorted(set(retrieval) - keys), sorted(keys - set(retrieval))
        if unknown or missing:
            raise ConfigError(f"recommend.retrieval: unknown {unknown}, missing {missing}; expected {sorted(keys)}")
        sources = list(retrieval["sources"] or [])
        bad = [x for x in sources if x not in SOURCES]
        if bad or not sources:
            raise ConfigError(f"recommend.retrieval.sources: unknown {bad or 'empty list'}; choose from {list(SOURCES)}")
        quotas = retrieval["quotas"]
        if isinstance(quotas, dict):
            extra = sorted(set(quotas) - set(sources))
            main = [x for x in sources if x != "popularity"]
            if extra or any(isinstance(v, bool) or not isinstance(v, int | float) or v < 0 for v in quotas.values()) \
                    or not any(quotas.get(x, 0) for x in main):
                raise ConfigError(f"recommend.retrieval.quotas: non-negative weights of the sources, not all zero "
                                  f"(sources: {sources}); got {quotas}")
        elif quotas not in (None, "learned"):
            raise ConfigError(f"recommend.retrieval.quotas must be null (equal turns), 'learned' or a mapping "
                              f"source -> weight, got {quotas!r}")
        learn = dict(retrieval["learn"] or {})
        step = learn.get("step")
        if set(learn) != {"step", "max_windows"} or not isinstance(step, int | float) or not 0 < step <= 1 \
                or abs(1 / step - round(1 / step)) > 1e-9 or round(1 / step) > 20:  # noqa: PLR2004
            raise ConfigError(f"recommend.retrieval.learn needs step (1/step a whole number up to 20: 0.5, 0.2, 0.1, "
                              f"...) and max_windows, got {learn}")
        if learn["max_windows"] is not None and (not isinstance(learn["max_windows"], int) or learn["max_windows"] < 1):
            raise ConfigError(f"recommend.retrieval.learn.max_windows must be a positive integer or null, "
                              f"got {learn['max_windows']!r}")
        window = retrieval["cooccurrence_window"]
        if not isinstance(window, int) or isinstance(window, bool) or window < 0:
            raise ConfigError(f"recommend.retrieval.cooccurrence_window must be an integer >= 0, got {window!r}")
        for name, need in (("rp3beta", {"alpha", "beta", "top_k"}), ("ease", {"l2", "max_items"})):
            values = retrieval[name] or {}
            if set(values) != need:
                raise ConfigError(f"recommend.retrieval.{name} needs exactly {sorted(need)}, got {retrieval[name]}")
            bad = [k for k in sorted(need) if isinstance(values[k], bool) or not isinstance(values[k], int | float)
                   or values[k] < 0 or (k in {"top_k", "max_items", "l2", "alpha"} and values[k] <= 0)]
            if bad:
                raise ConfigError(f"recommend.retrieval.{name}.{bad[0]} must be a positive number, got {values[bad[0]]!r}")
        return cls(sources, quotas, float(learn["step"]), learn["max_windows"], window, dict(retrieval["rp3beta"]),
                   dict(retrieval["ease"]), AnnConfig.from_params(retrieval["ann"]))

    @property
    def main(self) -> list[str]:
        """The sources that take turns (popularity only fills)."""
        return [x for x in self.sources if x != "popularity"] or list(self.sources)


class Retriever:
    """Whole-catalogue candidate generation from one data cut's `Evidence`."""

    def __init__(self, evidence: Evidence, config: RetrievalConfig, weights: dict[str, float] | None = None) -> None:
        """`weights`: each source's share of the turns (the learned mix where `quotas: learned`; default: conf's
        quotas, or equal turns)."""
        start = time.perf_counter()
        if weights is None and config.quotas == "learned":
            raise ConfigError("recommend.retrieval.quotas: learned needs the mix fitted on validation windows "
                              "(data/06_models/retriever_mix.json): run the evaluation pipeline first")
        if weights is not None and set(weights) - set(config.sources):
            raise ConfigError(f"the retriever mix (data/06_models/retriever_mix.json) was learned for sources "
                              f"{sorted(weights)}, not all in recommend.retrieval.sources {config.sources}: run "
                              "`kedro run --pipeline=evaluation --nodes=embed_titles,fit_validation_evidence,fit_retriever_mix`")
        quotas = weights if weights is not None else (config.quotas if isinstance(config.quotas, dict) else None)
        self.weights = {x: float((quotas or {}).get(x, 0.0 if quotas else 1.0)) for x in config.main}
        if "ease" in self.weights and len(evidence.catalogue) > int(config.ease["max_items"]):
            logger.warning("EASE left out of the retriever: %d products, above recommend.retrieval.ease.max_items "
                           "(%d; its solve is dense)", len(evidence.catalogue), int(config.ease["max_items"]))
            self.weights["ease"] = 0.0
        # a source without turns is never built (an unused EASE is a dense catalogue x catalogue matrix)
        self.evidence, self.config = evidence, config
        self.sources = [x for x in config.sources if x not in self.weights or self.weights[x] > 0]
        self.asins, self.position, self.titles = evidence.catalogue, evidence.position, evidence.titles
        self.pop, self.by_popularity = evidence.pop, evidence.by_popularity
        self.graph = {name: evidence.item_graph(name, getattr(config, name)) for name in ("rp3beta", "ease")
                      if name in self.sources}
        self.index = evidence.embedding_index(config.ann) if "embedding" in self.sources else None
        if "cooccurrence" in self.sources:
            self.cooc  # noqa: B018 - counted now, not on the first request
        logger.info("Retriever over %d products from %d sequences (%s; turns %s) built in %.1f s", len(self.asins),
                    len(evidence.fitted), "+".join(self.sources), self.weights, time.perf_counter() - start)

    @property
    def main(self) -> list[str]:
        """The sources that take turns here (those with a share above 0)."""
        return [x for x in self.sources if x != "popularity"] or list(self.sources)

    @property
    def cooc(self) -> Mapping[str, Mapping[str, int]]:
        """The cut's co-occurrence counts within `cooccurrence_window` (also read by the catalogue baseline and the
        service's reasons, whatever the source's share)."""
        return self.evidence.cooccurrence(self.config.cooccurrence_window)

    @property
    def matrix(self) -> np.ndarray:
        """Every catalogue product's unit title embedding (the evidence's, encoded once)."""
        return self.evidence.matrix

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
        from .counts import summed_counts  # noqa: PLC0415

        return summed_counts(self.cooc, history)

    def ranked_lists(self, histories: list[list[str]], depth: int,
                     exclude: list[set[str]] | None = None) -> list[dict[str, list[str]]]:
        """Per history, each source's first `depth` products, best first, none of its row's `exclude`."""
        from .graph import history_scores  # noqa: PLC0415

        exclude = exclude or [set() for _ in histories]
        emb_order = None
        if self.index is not None:  # exact below recommend.retrieval.ann.min_items products, HNSW above
            emb_order = self.index.search(self.history_vectors(histories),
                                          depth + max((len(e) for e in exclude), default=0))
        top_pop = max(self.pop.values(), default=0) + 1.0
        out = []
        for i, hist in enumerate(histories):
            skip = exclude[i]
            lists: dict[str, list[str]] = {}
            if "cooccurrence" in self.sources:
                scores = self.cooccurrence_scores(hist)
                lists["cooccurrence"] = sorted((a for a in scores if a in self.position and a not in skip),
                                               key=lambda a: (-(scores[a] + self.pop[a] / top_pop), a))[:depth]
            rows = [self.position[a] for a in hist if a in self.position]
            for name, weights in self.graph.items():
                lists[name] = self._top(history_scores(weights, rows), depth, skip)
            if emb_order is not None:  # a history without a known product has no neighbours
                lists["embedding"] = [] if not rows else [a for a in (self.asins[j] for j in emb_order[i] if j >= 0) if a not in skip][:depth]
            if "popularity" in self.sources:
                lists["popularity"] = list(itertools.islice((a for a in self.by_popularity if a not in skip), depth))
            out.append(lists)
        return out

    def _top(self, scores: np.ndarray, depth: int, skip: set[str]) -> list[str]:
        """The products of the `depth` highest positive scores, not in `skip` (ties by catalogue order)."""
        want = min(len(scores), depth + len(skip))
        if want < len(scores):  # every product tied with the want-th score, so ties go by catalogue order
            idx = np.flatnonzero(scores >= np.partition(scores, len(scores) - want)[len(scores) - want])
        else:
            idx = np.arange(len(scores))
        idx = idx[np.lexsort((idx, -scores[idx]))]
        return [a for a in (self.asins[j] for j in idx if scores[j] > 0) if a not in skip][:depth]

    def retrieve(self, histories: list[list[str]], n: int, exclude: list[set[str]] | None = None,
                 weights: dict[str, float] | None = None) -> list[Retrieved]:
        """Up to `n` candidates per history, merged from the sources by their turns, skipping each row's `exclude`."""
        weights = self.weights if weights is None else weights
        return [merge_turns(lists, n, weights) for lists in self.ranked_lists(histories, n, exclude)]


def learn_quotas(retriever: Retriever, histories: list[list[str]], targets: list[str], exclude: list[set[str]],
                 n: int, step: float) -> dict[str, Any]:
    """The sources' turns that find the most targets among `n` candidates on these (validation) windows: every
    weighting on a grid of `step` over the turn-taking sources, each scored by recall@n; ties go to the earlier
    grid point (equal turns first)."""
    start = time.perf_counter()
    main = retriever.main
    lists = retriever.ranked_lists(histories, n, exclude)
    units = round(1 / step)
    equal = dict.fromkeys(main, 1 / len(main))
    grid = [equal] + [dict(zip(main, (c / units for c in combo), strict=True))
                      for combo in itertools.product(range(units + 1), repeat=len(main))
                      if sum(combo) == units]

    def recall(weights: dict[str, float]) -> float:
        return float(np.mean([t in merge_turns(row, n, weights).asins for row, t in zip(lists, targets, strict=True)]))

    scored = [(recall(w), -i, w) for i, w in enumerate(grid)]
    best = max(scored, key=lambda x: (x[0], x[1]))
    logger.info("Retriever mix learned on %d validation windows in %.1f s: %s (recall@%d %.3f; equal turns %.3f)",
                len(targets), time.perf_counter() - start, best[2], n, best[0], scored[0][0])
    return {"weights": best[2], "validation_recall": best[0], "equal_turns_recall": scored[0][0], "n": n,
            "windows": len(targets), "grid_points": len(grid), "step": step}


def merge_turns(lists: dict[str, list[str]], n: int, weights: dict[str, float]) -> Retrieved:
    """Take the next new product of a source in turn until `n` are chosen or all sources run dry: the next turn goes
    to the source with the fewest picks for its weight (ties: the earlier source), so equal weights alternate.

    Popularity only fills: it is drawn from once the other sources are exhausted."""
    chosen: list[str] = []
    sources: list[str] = []
    seen: set[str] = set()
    cursors = dict.fromkeys(lists, 0)
    taken = dict.fromkeys(lists, 0)

    def take(name: str) -> bool:
        items = lists[name]
        while cursors[name] < len(items):
            a = items[cursors[name]]
            cursors[name] += 1
            if a not in seen:
                seen.add(a)
                chosen.append(a)
                sources.append(name)
                taken[name] += 1
                return True
        return False

    active = [name for name in lists if weights.get(name, 0) > 0]
    while len(chosen) < n and active:
        name = min(active, key=lambda x: ((taken[x] + 1) / weights[x], active.index(x)))
        if not take(name):
            active.remove(name)
    if "popularity" in lists and weights.get("popularity", 0) <= 0:
        while len(chosen) < n and take("popularity"):
            pass
    return Retrieved(chosen, sources)
