"""Confusable noise: items drawn in proportion to their co-occurrence with the item they
replace (noise that fits the history); by popularity when it co-occurs with nothing."""
from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .popularity import by_count


def cooccurrence(interactions: pd.DataFrame, n_items: int) -> sp.csr_matrix:
    """Item x item count of users who interacted with both (zero diagonal)."""
    x = sp.csr_matrix((np.ones(len(interactions)), (interactions.user, interactions["item"])),
                      shape=(int(interactions.user.max()) + 1, n_items + 1))
    x.data[:] = 1.0
    c = (x.T @ x).tocsr()
    c.setdiag(0)
    c.eliminate_zeros()
    return c


def draw(original: np.ndarray, seq: pd.DataFrame, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """In proportion to co-occurrence with the original item (the diagonal is zero, so
    never the original itself); popularity when it co-occurs with nothing."""
    cooc = cooccurrence(seq, len(counts) - 1)
    out = np.empty(len(original), dtype=np.int64)
    fallback = []
    for i, orig in enumerate(original):
        lo, hi = cooc.indptr[orig], cooc.indptr[orig + 1]
        cand, w = cooc.indices[lo:hi], cooc.data[lo:hi]
        total = w.sum()
        if total <= 0:
            fallback.append(i)
            continue
        out[i] = cand[min(np.searchsorted(np.cumsum(w), rng.random() * total, side="right"), len(cand) - 1)]
    if fallback:
        out[fallback] = by_count(original[fallback], counts, rng)
    return out
