"""Popularity noise: items drawn in proportion to their interaction counts, so that
rarity does not give the noise away."""
from __future__ import annotations

import numpy as np
import pandas as pd


def by_count(original: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """In proportion to ``counts`` (indexed by item id, ``counts[0] = 0``), never the original."""
    p = counts / counts.sum()
    out = rng.choice(len(counts), size=len(original), p=p)
    while (same := out == original).any():  # rejection keeps p_j / (1 - p_original) exact
        out[same] = rng.choice(len(counts), size=int(same.sum()), p=p)
    return out


def draw(original: np.ndarray, seq: pd.DataFrame, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return by_count(original, counts, rng)
