"""What one data cut has learned, built once and read by everything that ranks.

A *data cut* is the set of sequences that counts may learn from for a set of windows (`fit_sequences`): for the
test windows, for the validation windows, or everything before the test period for the service. `Evidence` holds
what is learned from it: popularity, co-occurrence counts, and, on first use, the catalogue's BM25 index, the title
embeddings and a trained SASRec. The baselines, the fusion's features, the retriever, the catalogue evaluation, the
batch recommender and the service all read the same object, so no count is recounted and SASRec is trained once a
cut.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Mapping
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from . import baselines

logger = logging.getLogger(__name__)


class Evidence:
    """Counts, popularity, titles, BM25 index, title embeddings and SASRec of one data cut (the last three lazily)."""

    def __init__(self, fitted: list[list[str]], items: pd.DataFrame | None, embedding_model: str | None = None,
                 sasrec: dict[str, Any] | None = None, embeddings: Any = None) -> None:
        """`items`: the catalogue (asin, title); None: the products of the fitted sequences, without titles.
        `embedding_model` and `sasrec` (`evaluation.embedding_model`, `evaluation.sasrec`) are needed only by what
        uses them. `embeddings`: the catalogue's stored title vectors and search (`ann.TitleEmbeddings`, the
        `title_embeddings` dataset), read instead of encoding titles again."""
        start = time.perf_counter()
        self.fitted = fitted
        if items is None:
            self.catalogue: list[str] = sorted({a for seq in fitted for a in seq})
            self.titles: dict[str, str] = {}
        else:
            self.catalogue = items["asin"].astype(str).tolist()
            self.titles = dict(zip(self.catalogue, items["title"].fillna("").astype(str), strict=True))
        self.position = {a: i for i, a in enumerate(self.catalogue)}
        self.pop: Counter = baselines.popularity(fitted)
        self.embedding_model, self.sasrec_params = embedding_model, sasrec
        self._cooc: dict[int, Mapping[str, Mapping[str, int]]] = {}
        self._known: dict[str, np.ndarray] = {}
        self.embeddings = None
        if embeddings is not None and items is not None and embeddings.asins:  # none stored: encoded on demand
            from .ann import titles_fingerprint  # noqa: PLC0415

            if embeddings.model != str(embedding_model):
                logger.warning("Stored title embeddings are of %s, not evaluation.embedding_model %s: encoding again",
                               embeddings.model, embedding_model)
            elif embeddings.fingerprint != titles_fingerprint(self.catalogue, [self.titles[a] for a in self.catalogue]):
                logger.warning("Stored title embeddings encode other titles than the catalogue's (items changed since "
                               "`embed_titles` ran): encoding again; rerun `kedro run --pipeline=evaluation "
                               "--nodes=embed_titles` to store the new ones")
            else:
                self.embeddings = embeddings
        self._graphs: dict[tuple, Any] = {}
        logger.info("Evidence of %d fitted sequences over %d products in %.1f s", len(fitted), len(self.catalogue),
                    time.perf_counter() - start)

    @classmethod
    def for_windows(cls, sequences: pd.DataFrame, windows: pd.DataFrame, items: pd.DataFrame | None,
                    evaluation: dict[str, Any], embeddings: Any = None) -> Evidence:
        """The evidence counts may learn from for `windows` (`baselines.fit_sequences`), with the evaluation's
        embedding model and SASRec settings."""
        return cls(baselines.fit_sequences(sequences, windows), items, evaluation.get("embedding_model"),
                   evaluation.get("sasrec"), embeddings)

    # -- counts -----------------------------------------------------------------------------------------------
    def cooccurrence(self, window: int = 0) -> Mapping[str, Mapping[str, int]]:
        """Co-occurrence counts of every pair within `window` positions (0: anywhere: one sparse matrix), counted once
        per window."""
        if window not in self._cooc:
            start = time.perf_counter()
            self._cooc[window] = baselines.cooccurrence(self.fitted, window)
            logger.info("Co-occurrence (window %d) of %d sequences counted in %.1f s", window, len(self.fitted),
                        time.perf_counter() - start)
        return self._cooc[window]

    @property
    def cooc(self) -> Mapping[str, Mapping[str, int]]:
        """Co-occurrence anywhere in a sequence: what the features and the retriever read."""
        return self.cooccurrence(0)

    @cached_property
    def interactions(self) -> Any:
        """The cut's binary reviewer x product matrix (scipy CSR, catalogue order)."""
        from .graph import interactions  # noqa: PLC0415

        return interactions(self.fitted, self.position)

    def item_graph(self, name: str, params: dict[str, Any]) -> Any:
        """An item-item model of the cut, fitted once per settings: `rp3beta` (sparse, its `alpha`, `beta`, `top_k`)
        or `ease` (dense, its `l2`, refused above `max_items` products)."""
        from . import graph  # noqa: PLC0415

        key = (name, tuple(sorted(params.items())))
        if key not in self._graphs:
            if name == "rp3beta":
                self._graphs[key] = graph.rp3beta(self.interactions, float(params["alpha"]), float(params["beta"]),
                                                  int(params["top_k"]))
            else:
                self._graphs[key] = graph.ease(self.interactions, float(params["l2"]), int(params["max_items"]))
        return self._graphs[key]

    @cached_property
    def by_popularity(self) -> list[str]:
        """Catalogue products, most bought first; never-bought products last, in catalogue order."""
        ranked = [a for a, _ in self.pop.most_common() if a in self.position]
        return ranked + [a for a in self.catalogue if a not in self.pop]

    # -- titles -----------------------------------------------------------------------------------------------
    @cached_property
    def bm25_index(self) -> tuple[Any, dict[str, int]]:
        """The BM25 index over every catalogue title (its IDF is the catalogue's)."""
        import bm25s  # noqa: PLC0415

        index = bm25s.BM25()
        index.index(bm25s.tokenize([self.titles.get(a, "") for a in self.catalogue], stopwords="en",
                                   show_progress=False), show_progress=False)
        return index, dict(self.position)

    def bm25(self, queries: list[list[str]], candidates: list[list[str]]) -> list[np.ndarray]:
        """BM25 (bm25s, Lucene) of each candidate's title against its row's query titles, catalogue IDF."""
        import bm25s  # noqa: PLC0415

        index, position = self.bm25_index
        tokens = bm25s.tokenize([" ".join(self.titles.get(a, "") for a in q) for q in queries], stopwords="en",
                                show_progress=False, return_ids=False)
        return [(index.get_scores(t) if t else np.zeros(len(self.catalogue)))[[position[c] for c in row]]
                for t, row in zip(tokens, candidates, strict=True)]

    def vectors(self, asins: list[str]) -> np.ndarray:
        """Unit title embeddings of `asins` [n, d]: the stored ones, else each title encoded once."""
        if self.embeddings is not None:
            stored = self.embeddings.rows(list(asins))
            if stored is not None:
                return stored
        from .ann import encode_titles  # noqa: PLC0415

        todo = list(dict.fromkeys(a for a in asins if a not in self._known))
        if todo:
            encoded = encode_titles(self.embedding_model, [self.titles.get(a, "") for a in todo])
            self._known.update(zip(todo, encoded, strict=True))
        return np.stack([self._known[a] for a in asins]).astype(np.float32)

    def embedding(self, histories: list[list[str]], candidates: list[list[str]]) -> list[np.ndarray]:
        """Cosine of each candidate's title embedding and its row's mean history embedding."""
        out = []
        for hist, row in zip(histories, candidates, strict=True):
            if not row:
                out.append(np.zeros(0))
                continue
            h = self.vectors(list(hist)).mean(axis=0) if hist else np.zeros(self.vectors(row[:1]).shape[1])
            h = h / (np.linalg.norm(h) + 1e-12)
            out.append(self.vectors(list(row)) @ h.astype(np.float32))
        return out

    def embedding_index(self, config: Any) -> Any:
        """The nearest-neighbour search over `matrix` (`ann.EmbeddingIndex`: exact below `config.min_items`
        products, HNSW above), built once per settings."""
        from .ann import EmbeddingIndex  # noqa: PLC0415

        key = ("ann", config)
        if key not in self._graphs:
            stored = self.embeddings is not None and self.embeddings.asins == self.catalogue
            self._graphs[key] = self.embeddings.search(config) if stored else EmbeddingIndex(self.matrix, config)
        return self._graphs[key]

    @cached_property
    def matrix(self) -> np.ndarray:
        """Every catalogue product's unit title embedding [products, d], in catalogue order."""
        if self.embeddings is not None and self.embeddings.asins == self.catalogue:
            return self.embeddings.matrix
        return self.vectors(self.catalogue)

    # -- SASRec -----------------------------------------------------------------------------------------------
    @cached_property
    def sasrec(self) -> Any:
        """SASRec trained on this cut's fitted sequences (once)."""
        from .sasrec import SASRecConfig, fit_sasrec  # noqa: PLC0415 - torch only when SASRec runs

        return fit_sasrec(self.fitted, SASRecConfig.from_params(self.sasrec_params))
