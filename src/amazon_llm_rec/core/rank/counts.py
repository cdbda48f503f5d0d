"""Co-occurrence counts held as one sparse matrix (scipy CSR, product x product), read as a mapping.

`counts[a][b]` is the number of position pairs at which a reviewer bought both a and b (a != b): the same value the
pairwise counting loop gives, in about 12 bytes a non-zero pair instead of a Python dict entry (about 100). It reads
as `{product: {product: count}}`, so the baselines, the features, the retriever and the service use it unchanged;
`summed` adds a history's rows in one sparse operation.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping

import numpy as np
import scipy.sparse as sp


class SparseCounts(Mapping):
    """Product -> its co-occurrence row; products without a co-occurring product are absent."""

    def __init__(self, matrix: sp.csr_matrix, asins: list[str]) -> None:
        matrix = matrix.tocsr()
        matrix.setdiag(0)
        matrix.eliminate_zeros()
        matrix.sort_indices()
        self.matrix, self.asins = matrix, asins
        self.position = {a: i for i, a in enumerate(asins)}
        self._sizes = np.diff(matrix.indptr)

    @classmethod
    def from_sequences(cls, fitted: list[list[str]]) -> SparseCounts:
        """Count every pair anywhere in each sequence: X'X of the reviewer x product count matrix."""
        asins = sorted({a for seq in fitted for a in seq})
        position = {a: i for i, a in enumerate(asins)}
        rows = np.fromiter((r for r, seq in enumerate(fitted) for _ in seq), dtype=np.int64)
        cols = np.fromiter((position[a] for seq in fitted for a in seq), dtype=np.int64)
        x = sp.csr_matrix((np.ones(len(rows), dtype=np.int32), (rows, cols)), shape=(len(fitted), len(asins)))
        x.sum_duplicates()
        return cls((x.T @ x).tocsr(), asins)

    def __getitem__(self, a: str) -> _Row:
        i = self.position[a]
        if not self._sizes[i]:
            raise KeyError(a)
        return _Row(self, i)

    def __iter__(self) -> Iterator[str]:
        return (self.asins[i] for i in np.flatnonzero(self._sizes))

    def __len__(self) -> int:
        return int(np.count_nonzero(self._sizes))

    def summed(self, history: list[str]) -> Counter:
        """Each product's counts summed over the history's products (a history product counted once per mention)."""
        rows = [self.position[h] for h in history if h in self.position]
        if not rows:
            return Counter()
        total = np.asarray(self.matrix[rows].sum(axis=0)).ravel()
        nz = np.flatnonzero(total)
        return Counter(dict(zip((self.asins[j] for j in nz), total[nz].tolist(), strict=True)))


class _Row(Mapping):
    """One product's co-occurrence counts: {product: count}; 0 for a product never bought with it, as a Counter."""

    def __init__(self, counts: SparseCounts, i: int) -> None:
        m = counts.matrix
        lo, hi = m.indptr[i], m.indptr[i + 1]
        self._counts, self._cols, self._data = counts, m.indices[lo:hi], m.data[lo:hi]

    def _find(self, b: str) -> int | None:
        j = self._counts.position.get(b)
        if j is not None:
            k = int(np.searchsorted(self._cols, j))
            if k < len(self._cols) and self._cols[k] == j:
                return k
        return None

    def __getitem__(self, b: str) -> int:
        k = self._find(b)
        return 0 if k is None else int(self._data[k])

    def __contains__(self, b: object) -> bool:
        return isinstance(b, str) and self._find(b) is not None

    def __iter__(self) -> Iterator[str]:
        return (self._counts.asins[j] for j in self._cols)

    def __len__(self) -> int:
        return len(self._cols)

    def items(self):  # noqa: ANN201 - a fast path for Counter.update
        return zip((self._counts.asins[j] for j in self._cols), self._data.tolist(), strict=True)


def summed_counts(cooc: Mapping, history: list[str]) -> Counter:
    """Counts of every product summed over the history's products, from sparse or dict counts."""
    if isinstance(cooc, SparseCounts):
        return cooc.summed(history)
    scores: Counter = Counter()
    for h in history:
        scores.update(cooc.get(h, {}))
    return scores
