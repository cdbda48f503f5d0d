"""Item-item models of the whole catalogue, fitted on one data cut's sequences: RP3beta and EASE.

Both read the cut's reviewer x product matrix (binary, sparse) and give each product a score after a history:
- RP3beta (Paudel et al., 2017): a random walk product -> reviewer -> product, its transition probabilities raised to
  `alpha`, divided by the destination's popularity to the power `beta`, and the `top_k` neighbours of every product
  kept. Sparse throughout: it scales with the number of reviews, not with the catalogue squared.
- EASE (Steck, 2019): the closed-form linear item-item model B = I - P / diag(P), P = (X'X + l2 I)^-1, with a zero
  diagonal. A dense solve of catalogue x catalogue: refused above `max_items`.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import scipy.sparse as sp

from ..errors import ConfigError

logger = logging.getLogger(__name__)


def interactions(fitted: list[list[str]], position: dict[str, int]) -> sp.csr_matrix:
    """Binary reviewer x product matrix of the fitted sequences (catalogue products only)."""
    rows, cols = [], []
    for r, seq in enumerate(fitted):
        for j in {position[a] for a in seq if a in position}:
            rows.append(r)
            cols.append(j)
    data = np.ones(len(rows), dtype=np.float32)
    return sp.csr_matrix((data, (rows, cols)), shape=(len(fitted), len(position)), dtype=np.float32)


def rp3beta(x: sp.csr_matrix, alpha: float, beta: float, top_k: int) -> sp.csr_matrix:
    """RP3beta's product x product transition matrix, the `top_k` largest entries of each row kept."""
    start = time.perf_counter()
    user_deg = np.asarray(x.sum(axis=1)).ravel()
    item_deg = np.asarray(x.sum(axis=0)).ravel()
    p_ui = sp.diags(1.0 / np.maximum(user_deg, 1)) @ x          # reviewer -> product
    p_iu = sp.diags(1.0 / np.maximum(item_deg, 1)) @ x.T.tocsr()  # product -> reviewer
    if alpha != 1.0:
        p_ui = p_ui.power(alpha)
        p_iu = p_iu.power(alpha)
    w = (p_iu @ p_ui).tocsr()
    w = w @ sp.diags(1.0 / np.power(np.maximum(item_deg, 1), beta))
    w.setdiag(0)
    w.eliminate_zeros()
    w = _top_k_rows(w.tocsr(), top_k)
    logger.info("RP3beta over %d products (%d reviewers) in %.1f s: %d neighbours kept", x.shape[1], x.shape[0],
                time.perf_counter() - start, w.nnz)
    return w


def ease(x: sp.csr_matrix, l2: float, max_items: int) -> np.ndarray:
    """EASE's dense product x product weights (zero diagonal)."""
    n = x.shape[1]
    if n > max_items:
        raise ConfigError(f"recommend.retrieval.ease.max_items: EASE solves a dense {n:,} x {n:,} system, above the "
                          f"limit of {max_items:,} products; use rp3beta for a catalogue this size")
    start = time.perf_counter()
    g = (x.T @ x).toarray().astype(np.float64)
    g[np.diag_indices(n)] += l2
    p = np.linalg.inv(g)
    b = -p / np.diag(p)
    b[np.diag_indices(n)] = 0.0
    logger.info("EASE over %d products in %.1f s", n, time.perf_counter() - start)
    return b.astype(np.float32)


def _top_k_rows(w: sp.csr_matrix, k: int) -> sp.csr_matrix:
    """Keep each row's k largest entries."""
    indptr, indices, data = [0], [], []
    for i in range(w.shape[0]):
        lo, hi = w.indptr[i], w.indptr[i + 1]
        vals, cols = w.data[lo:hi], w.indices[lo:hi]
        if len(vals) > k:
            keep = np.argpartition(-vals, k - 1)[:k]
            vals, cols = vals[keep], cols[keep]
        indices.append(cols)
        data.append(vals)
        indptr.append(indptr[-1] + len(vals))
    return sp.csr_matrix((np.concatenate(data) if data else np.zeros(0), np.concatenate(indices) if indices else
                          np.zeros(0, dtype=np.int32), np.array(indptr)), shape=w.shape)


def history_scores(weights: sp.csr_matrix | np.ndarray, rows: list[int]) -> np.ndarray:
    """Each product's score after a history: the sum of the history products' rows."""
    if not rows:
        return np.zeros(weights.shape[1], dtype=np.float32)
    part = weights[rows]
    return np.asarray(part.sum(axis=0)).ravel() if sp.issparse(part) else part.sum(axis=0)
