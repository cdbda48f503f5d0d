"""One set of per-candidate features, the fusion's evidence, computed by one function (`compute`) for the
evaluation (`fusion.candidate_features`), the catalogue evaluation, the batch pipeline and the service (`Recommender`).

What differs between them is only the `Evidence` of their data cut they hand it (`evidence.py`): its counts, the
catalogue's titles and title embeddings, its SASRec. BM25 scores a candidate's title against the history's titles with the IDF of the whole
catalogue, online and offline alike (not of a protocol's candidate set).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .evidence import Evidence


def compute(evidence: Evidence, histories: list[list[str]], prefixes: list[list[str]], candidates: list[list[str]],
            names: list[str], llm: Callable[[list[list[str]], list[list[str]]], list[np.ndarray]] | None = None,
            ) -> list[np.ndarray]:
    """Per row, its candidates' features [n, F] in the order of `names`; rows may differ in length.

    `histories`: the prompt's history products; `prefixes`: everything the reviewer bought before; `llm(histories,
    candidates)`: the LLM's score of each candidate (the `llm` feature)."""
    from ..errors import ConfigError  # noqa: PLC0415

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
