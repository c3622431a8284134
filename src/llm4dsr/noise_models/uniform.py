"""Uniform noise (the paper): any other catalogue item, with equal probability."""
from __future__ import annotations

import numpy as np
import pandas as pd


def draw(original: np.ndarray, seq: pd.DataFrame, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Uniform over items ``1..n_items`` other than the original."""
    r = rng.integers(1, len(counts) - 1, size=len(original))  # 1..n_items-1, then skip the original
    return r + (r >= original)
