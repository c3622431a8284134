"""Reference recommenders of every results table (DESIGN.md section 9): a most-popular
list and a random ranking. A backbone that does not beat them has not learned the data,
and then no comparison of training conditions can mean anything.

Both rank every item 1..n_items for every test window, as the backbones are evaluated
(llm4dsr.backbones.trainer: full ranking, history items not removed). Neither orders
the items it ties (most-popular: items of equal count; random: all items), so each
window's metric is its expectation over a uniformly random order of the tied items:
exact, free of any seed, and a most-popular list with no counts is the random ranking.
(The backbones' rule of counting ties in the target's favour would rank an unseen
target among the first of every item never seen in training.)
"""
from __future__ import annotations

from typing import Iterable

import numpy as np
import pandas as pd

from ..io import Llm4dsrError

MODEL = "mostpop"


def _cumulative_gain(n: int) -> np.ndarray:
    """[n + 1]: the sum of 1 / log2(r + 1) over ranks r = 1..i, at index i (0 at 0)."""
    return np.r_[0.0, np.cumsum(1.0 / np.log2(np.arange(1, n + 1) + 1.0))]


def tied_metric(above: np.ndarray, tied: np.ndarray, metric: str, n_items: int) -> np.ndarray:
    """Expected hr@K or ndcg@K of targets ranked after ``above`` items and among ``tied``
    items (the target included) in a uniformly random order: its rank is uniform on
    above + 1 .. above + tied."""
    kind, k = metric.split("@")
    k = int(k)
    above, tied = np.asarray(above, dtype=np.int64), np.asarray(tied, dtype=np.int64)
    first, last = above + 1, np.minimum(above + tied, k)  # the ranks of the group within the top K
    inside = np.clip(last - first + 1, 0, None)
    if kind == "hr":
        return inside / tied
    gain = _cumulative_gain(n_items)
    return np.where(inside > 0, gain[np.maximum(last, 0)] - gain[np.minimum(first - 1, n_items)], 0.0) / tied


def random_level(n_items: int, metrics: Iterable[str]) -> dict[str, float]:
    """A random ranking's expected metric: every item tied, so HR@K = K / n_items and
    NDCG@K = sum over r <= K of 1 / log2(r + 1), over n_items."""
    return {m: float(tied_metric(np.array([0]), np.array([n_items]), m, n_items)[0]) for m in metrics}


def train_counts(windows: pd.DataFrame, n_items: int) -> np.ndarray:
    """[n_items + 1]: how often each item is the target of a train window (the
    interactions the backbones learn to predict, as the condition left them)."""
    targets = windows.loc[windows["split"] == "train", "target"].to_numpy(dtype=np.int64)
    if len(targets) and (targets.min() < 1 or targets.max() > n_items):
        raise Llm4dsrError(f"train targets outside the catalogue 1..{n_items}")
    return np.bincount(targets, minlength=n_items + 1)


def mostpop(windows: pd.DataFrame, n_items: int, metrics: Iterable[str]) -> tuple[pd.DataFrame, dict]:
    """The most-popular list of a condition, built from its train windows' targets, on its
    test windows: (test windows ordered by ``window``: window, user, target; metric ->
    per-window expected value [windows])."""
    counts = train_counts(windows, n_items)[1:]  # item i at i - 1; padding 0 is no candidate
    test = windows.loc[windows["split"] == "test", ["window", "user", "target"]].sort_values("window", kind="stable")
    target = counts[test["target"].to_numpy(dtype=np.int64) - 1]
    ordered = np.sort(counts)
    above = len(counts) - np.searchsorted(ordered, target, side="right")  # items counted more often
    tied = np.searchsorted(ordered, target, side="right") - np.searchsorted(ordered, target, side="left")
    return test.reset_index(drop=True), {m: tied_metric(above, tied, m, n_items) for m in metrics}
