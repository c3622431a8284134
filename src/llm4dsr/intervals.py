"""The user-level bootstrap behind every interval the study reports (DESIGN.md section 7).

Users are the unit of independence: a user's units, windows and items are drawn
together. A replicate gives every user a multiplicity (a multinomial draw of n users
out of n), so a metric of a replicate is the metric of the rows weighted by their
user's multiplicity; every replicate of every metric is computed at once from one
weight matrix [B, rows]. Two detectors (or two training conditions) scored on the same
rows share the weights, so their difference has a paired interval.

Intervals are percentile intervals of ``level`` (config ``intervals``).
"""
from __future__ import annotations

import numpy as np

from llm4dsr.streams import rng_for


def user_weights(users: np.ndarray, resamples: int, seed: int, tag: str) -> np.ndarray:
    """[resamples, len(users)]: each row's multiplicity in each replicate (users resampled)."""
    uniq, index = np.unique(np.asarray(users), return_inverse=True)
    if not len(uniq):
        return np.zeros((resamples, 0))
    counts = rng_for(seed, f"bootstrap-{tag}").multinomial(len(uniq), np.full(len(uniq), 1 / len(uniq)),
                                                           size=resamples)
    return counts[:, index].astype(float)


def interval(values: np.ndarray, level: float) -> list[float] | None:
    """The percentile interval of the finite replicate values (None if there are none)."""
    values = np.asarray(values, dtype=float)
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    tail = 50 * (1 - level)
    return [float(np.percentile(values, tail)), float(np.percentile(values, 100 - tail))]


def _ties(scores: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """(order that sorts the scores, start of each run of tied scores in that order)."""
    order = np.argsort(-scores if descending else scores, kind="stable")
    s = scores[order]
    return order, np.flatnonzero(np.r_[True, s[1:] != s[:-1]])


def roc_auc(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC of each row of ``weights`` [B, n] (ties count one half): P(score of a noise
    item > score of a clean item) with items weighted. NaN where a class has no weight."""
    y = np.asarray(y, dtype=float)
    order, starts = _ties(np.asarray(scores, dtype=float), descending=False)
    w = np.atleast_2d(weights)[:, order]
    pos = np.add.reduceat(w * y[order], starts, axis=1)
    neg = np.add.reduceat(w * (1 - y[order]), starts, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    with np.errstate(invalid="ignore", divide="ignore"):
        return (pos * (below + 0.5 * neg)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1))


def average_precision(y: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Average precision (PR-AUC as sklearn computes it: sum over thresholds of the recall
    step times the precision) of each row of ``weights`` [B, n]."""
    y = np.asarray(y, dtype=float)
    order, starts = _ties(np.asarray(scores, dtype=float), descending=True)
    w = np.atleast_2d(weights)[:, order]
    tp = np.cumsum(np.add.reduceat(w * y[order], starts, axis=1), axis=1)
    fp = np.cumsum(np.add.reduceat(w * (1 - y[order]), starts, axis=1), axis=1)
    total = tp[:, -1:]
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        recall_step = np.diff(np.c_[np.zeros(len(tp)), tp], axis=1) / total
        return (recall_step * precision).sum(axis=1)


def weighted_mean(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Mean of ``values`` [n] under each row of ``weights`` [B, n]."""
    weights = np.atleast_2d(weights)
    with np.errstate(invalid="ignore", divide="ignore"):
        return weights @ np.asarray(values, dtype=float) / weights.sum(axis=1)
