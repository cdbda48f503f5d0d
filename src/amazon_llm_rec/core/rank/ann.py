"""Nearest products by title embedding: exact (brute force) for small catalogues, an HNSW index (FAISS) above a size.

Brute force multiplies each query by every product's vector: fine at thousands of products, about a second a request
at millions. Above `recommend.retrieval.ann.min_items` products the retriever searches a FAISS HNSW graph over the
same unit vectors (inner product = cosine), built once per catalogue and reused by every request. Its recall
against brute force is measured by `benchmarks/ann_retrieval.py`.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnnConfig:
    """`recommend.retrieval.ann`: the size from which the index is used, and HNSW's settings."""

    min_items: int
    m: int
    ef_construction: int
    ef_search: int

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> AnnConfig:
        """Build from `params:recommend.retrieval.ann`, naming the parameter at fault."""
        keys = {"min_items", "m", "ef_construction", "ef_search"}
        if set(params or {}) != keys:
            raise ConfigError(f"recommend.retrieval.ann needs exactly {sorted(keys)}, got {sorted(params or {})}")
        bad = [k for k in sorted(keys) if not isinstance(params[k], int) or isinstance(params[k], bool) or params[k] < 1]
        if bad:
            raise ConfigError(f"recommend.retrieval.ann.{bad[0]} must be a positive integer, got {params[bad[0]]!r}")
        return cls(**{k: int(params[k]) for k in keys})


class EmbeddingIndex:
    """The `k` products whose unit vectors are nearest each query: exact below `min_items`, HNSW above."""

    def __init__(self, matrix: np.ndarray, config: AnnConfig, index: Any = None) -> None:
        """`index`: a FAISS index already built over `matrix` with `config` (read back from the catalog)."""
        start = time.perf_counter()
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        self.config = config
        self.index = index
        if index is None and len(self.matrix) >= config.min_items:
            import faiss  # noqa: PLC0415 - only catalogues above the threshold need it

            self.index = faiss.IndexHNSWFlat(self.matrix.shape[1], config.m, faiss.METRIC_INNER_PRODUCT)
            self.index.hnsw.efConstruction = config.ef_construction
            self.index.add(self.matrix)
        self.build_seconds = time.perf_counter() - start
        logger.info("Title-embedding search over %d products: %s (built in %.1f s)", len(self.matrix),
                    "HNSW index" if self.index is not None else "brute force", self.build_seconds)

    @property
    def exact(self) -> bool:
        """True where every search is brute force."""
        return self.index is None

    def search(self, queries: np.ndarray, k: int) -> np.ndarray:
        """[queries, k] product positions, nearest first (exact ties by position); -1 pads where fewer exist."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self.matrix))
        if self.index is not None:
            import faiss  # noqa: PLC0415

            params = faiss.SearchParametersHNSW()
            params.efSearch = max(self.config.ef_search, k)  # HNSW returns at most efSearch neighbours
            _, ids = self.index.search(queries, k, params=params)
            return ids
        sims = queries @ self.matrix.T
        top = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < len(self.matrix) else \
            np.tile(np.arange(len(self.matrix)), (len(queries), 1))
        return np.stack([row[np.lexsort((row, -sims[i, row]))] for i, row in enumerate(top)]) if len(top) else top


def encode_titles(model: str, titles: list[str]) -> np.ndarray:
    """Unit vectors [n, d] of `titles` by the sentence encoder `model` (loaded once per process; a progress bar above
    2,000 titles)."""
    from . import baselines  # noqa: PLC0415

    start = time.perf_counter()
    matrix = baselines.load_sentence_encoder(model).encode(
        titles, batch_size=128, normalize_embeddings=True, show_progress_bar=len(titles) > 2000,  # noqa: PLR2004
        convert_to_numpy=True)
    if len(titles) > 2000:  # noqa: PLR2004
        logger.info("Encoded %d titles with %s in %.1f s", len(titles), model, time.perf_counter() - start)
    return np.asarray(matrix, dtype=np.float32)


def titles_fingerprint(asins: list[str], titles: list[str]) -> str:
    """A hash of the catalogue's (product, title) pairs: stored embeddings are used only for the titles they encode."""
    import hashlib  # noqa: PLC0415

    digest = hashlib.sha1(usedforsecurity=False)
    for asin, title in zip(asins, titles, strict=True):
        digest.update(f"{asin}\t{title}\n".encode())
    return digest.hexdigest()


class TitleEmbeddings:
    """Every catalogue product's unit title vector, encoded once per catalogue (the `title_embeddings` catalog
    dataset), and the nearest-neighbour search over them, built once and stored with them above the ANN threshold.
    `fingerprint` (`titles_fingerprint`) says which titles were encoded."""

    def __init__(self, asins: list[str], matrix: np.ndarray, model: str, fingerprint: str,
                 index: EmbeddingIndex | None = None) -> None:
        if len(asins) != len(matrix):
            raise ValueError(f"title embeddings: {len(asins)} products but {len(matrix)} vectors")
        self.asins, self.model, self.fingerprint = list(asins), str(model), str(fingerprint)
        self.matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        self.position = {a: i for i, a in enumerate(self.asins)}
        self.index = index

    @classmethod
    def encode(cls, items: Any, model: str, ann: AnnConfig) -> TitleEmbeddings:
        """Encode every product's cleaned title with `model` and build the search."""
        asins = items["asin"].astype(str).tolist()
        titles = items["title"].fillna("").astype(str).tolist()
        out = cls(asins, encode_titles(model, titles), model, titles_fingerprint(asins, titles))
        out.index = EmbeddingIndex(out.matrix, ann)
        return out

    @classmethod
    def unused(cls, model: str) -> TitleEmbeddings:
        """No vectors: nothing in the configuration reads them (an Evidence given these encodes on demand)."""
        return cls([], np.zeros((0, 0), dtype=np.float32), model, fingerprint="")

    def search(self, config: AnnConfig) -> EmbeddingIndex:
        """The search over these vectors with `config`: the stored graph when it was built with the same settings
        (`ef_search` is a query-time setting: it is applied, not rebuilt for), else built now."""
        built = self.index
        same = built is not None and (built.config.min_items, built.config.m, built.config.ef_construction) == (
            config.min_items, config.m, config.ef_construction)
        if not same:
            self.index = EmbeddingIndex(self.matrix, config)
        elif built.config != config:
            self.index = EmbeddingIndex(self.matrix, config, index=built.index)
        return self.index

    def rows(self, asins: list[str]) -> np.ndarray | None:
        """The vectors of `asins` [n, d], or None when one of them was not encoded."""
        try:
            return self.matrix[[self.position[a] for a in asins]]
        except KeyError:
            return None
