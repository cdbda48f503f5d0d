"""One set of per-candidate features, the fusion's evidence, computed by one function (`compute`) for the
evaluation (`fusion.candidate_features`), the catalogue evaluation, the batch pipeline and the service (`Recommender`).

What differs between them is only the `Evidence` they hand it: the counts of their data cut, the catalogue's titles
and title embeddings, SASRec. BM25 scores a candidate's title against the history's titles with the IDF of the whole
catalogue, online and offline alike (not of a protocol's candidate set).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class Evidence:
    """What the features of one data cut are computed from."""

    cooc: Mapping[str, Mapping[str, int]]      # co-occurrence counts, cooc[history product][candidate]
    pop: Mapping[str, int]                     # reviewers who bought each product
    titles: Mapping[str, str]                  # every catalogue product's title
    catalogue: list[str]                       # the products BM25's index (its IDF) covers: the catalogue
    vectors: Callable[[list[str]], np.ndarray] | None = None  # unit title embeddings of products, [n, d]
    sasrec: Any = None                         # a fitted SASRec (`score(prefixes, candidates)`)
    bm25_index: Any = None                     # `bm25_index(titles, catalogue)`, built on first use when None

    def bm25(self, queries: list[list[str]], candidates: list[list[str]]) -> list[np.ndarray]:
        """BM25 (bm25s, Lucene) of each candidate's title against its row's query titles, catalogue IDF."""
        import bm25s  # noqa: PLC0415

        if self.bm25_index is None:
            self.bm25_index = bm25_index(self.titles, self.catalogue)
        index, position = self.bm25_index
        tokens = bm25s.tokenize([" ".join(self.titles.get(a, "") for a in q) for q in queries], stopwords="en",
                                show_progress=False, return_ids=False)
        return [(index.get_scores(t) if t else np.zeros(len(self.catalogue)))[[position[c] for c in row]]
                for t, row in zip(tokens, candidates, strict=True)]

    def embedding(self, histories: list[list[str]], candidates: list[list[str]]) -> list[np.ndarray]:
        """Cosine of each candidate's title embedding and its row's mean history embedding."""
        if self.vectors is None:
            raise ValueError("the embedding feature needs title embeddings (a sentence encoder)")
        out = []
        for hist, row in zip(histories, candidates, strict=True):
            if not row:
                out.append(np.zeros(0))
                continue
            h = self.vectors(list(hist)).mean(axis=0) if hist else np.zeros(self.vectors(row[:1]).shape[1])
            h = h / (np.linalg.norm(h) + 1e-12)
            out.append(self.vectors(list(row)) @ h.astype(np.float32))
        return out


def bm25_index(titles: Mapping[str, str], catalogue: list[str]) -> tuple[Any, dict[str, int]]:
    """A BM25 index over the catalogue's titles, and each product's row in it."""
    import bm25s  # noqa: PLC0415

    index = bm25s.BM25()
    index.index(bm25s.tokenize([titles.get(a, "") for a in catalogue], stopwords="en", show_progress=False),
                show_progress=False)
    return index, {a: i for i, a in enumerate(catalogue)}


def compute(evidence: Evidence, histories: list[list[str]], prefixes: list[list[str]], candidates: list[list[str]],
            names: list[str], llm: Callable[[list[list[str]], list[list[str]]], list[np.ndarray]] | None = None,
            ) -> list[np.ndarray]:
    """Per row, its candidates' features [n, F] in the order of `names`; rows may differ in length.

    `histories`: the prompt's history products; `prefixes`: everything the reviewer bought before; `llm(histories,
    candidates)`: the LLM's score of each candidate (the `llm` feature)."""
    from .errors import ConfigError  # noqa: PLC0415

    cols: dict[str, list[np.ndarray]] = {}
    for name in names:
        if name in {"cooccurrence", "cooccurrence_all"}:
            rows = histories if name == "cooccurrence" else prefixes
            cols[name] = [np.log1p(np.array([sum(evidence.cooc.get(h, {}).get(c, 0) for h in hist) for c in row],
                                            dtype=float)) for hist, row in zip(rows, candidates, strict=True)]
        elif name == "popularity":
            cols[name] = [np.log1p(np.array([evidence.pop.get(c, 0) for c in row], dtype=float)) for row in candidates]
        elif name == "bm25":
            cols[name] = evidence.bm25(histories, candidates)
        elif name == "embedding":
            cols[name] = evidence.embedding(histories, candidates)
        elif name == "sasrec":
            if evidence.sasrec is None:
                raise ConfigError("the sasrec feature needs a fitted SASRec")
            same = len({len(r) for r in candidates}) == 1 and len(candidates[0])
            cols[name] = list(evidence.sasrec.score(prefixes, candidates)) if same else \
                [evidence.sasrec.score([p], [r])[0] if r else np.zeros(0) for p, r in zip(prefixes, candidates, strict=True)]
        elif name == "llm":
            if llm is None:
                raise ConfigError("the llm feature needs the LLM's scorer")
            cols[name] = llm(histories, candidates)
        else:
            raise ConfigError(f"unknown fusion feature {name!r}")
    return [np.stack([np.asarray(cols[n][i], dtype=float).reshape(len(row)) for n in names], axis=-1)
            .reshape(len(row), len(names)) for i, row in enumerate(candidates)]
