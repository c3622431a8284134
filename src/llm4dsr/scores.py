"""The score table every detector writes, and the threshold rule that reads it.

A detector (the LLM's scorers, the simple baselines, the calibrated combination) gives
each item of a unit a log-score, higher = more likely noise. ``scores/{detector}.parquet``
holds, per unit, those log-scores (``logp``) and probabilities (``probs``): by default
the softmax of the log-scores over the unit's items, so that every detector is
normalised the same way (docs/outputs.md). The correction stage and the detection
metrics threshold them with :func:`split_thresholds` on the scale of
``correct.threshold.scale``: these probabilities (unit_prob), the raw log-scores (logprob,
the reference code), or each item's log-score over the mean score of its unit's other
items (contrast, :func:`contrast`).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from llm4dsr.io import read_parquet

COLUMNS = ["unit", "probs", "logp"]


def softmax(logp: list[np.ndarray]) -> list[np.ndarray]:
    """Normalise each unit's log-scores into probabilities that sum to 1."""
    out = []
    for x in logp:
        e = np.exp(np.asarray(x, dtype=float) - np.max(x))
        out.append(e / e.sum())
    return out


def scores_frame(units: pd.DataFrame, logp: list[np.ndarray], probs: list[np.ndarray] | None = None) -> pd.DataFrame:
    """A scores/{detector}.parquet table; ``probs`` default to the softmax of ``logp``."""
    probs = softmax(logp) if probs is None else probs
    return pd.DataFrame({"unit": units["unit"].to_numpy(),
                         "probs": [np.asarray(p, dtype=float).tolist() for p in probs],
                         "logp": [np.asarray(x, dtype=float).tolist() for x in logp]})


def read_scores(paths: list[str | Path], names: list[str]) -> dict[str, pd.DataFrame]:
    """Score tables by detector name."""
    if len(paths) != len(names):
        raise ValueError(f"{len(paths)} score files for {len(names)} detectors")
    return {n: read_parquet(p, COLUMNS) for n, p in zip(names, paths)}


def contrast(unit: np.ndarray, logp: np.ndarray) -> np.ndarray:
    """Per item (``unit``: its unit, one label per row), its log-score minus the log of the mean score of
    its unit's other items: log(s_i / mean_{j != i} s_j), s = exp(logp).

    Unlike a probability normalised over the unit (an item of an n-item unit starts at 1/n),
    it does not depend on the unit's length: 0 for a detector that scores every item alike,
    log k for an item scored k times each other item, whatever n. A 1-item unit gets 0.
    """
    x, unit = np.asarray(logp, dtype=float), np.asarray(unit)

    def per_unit(values: np.ndarray, how: str) -> np.ndarray:
        return pd.Series(values).groupby(unit, sort=False).transform(how).to_numpy()

    n = per_unit(x, "size")
    top = np.zeros(len(x), dtype=bool)
    top[pd.Series(x).groupby(unit, sort=False).idxmax().to_numpy()] = True  # one per unit, the first of ties
    # each item's others are shifted by their largest score (the unit's maximum, or for the top
    # item the runner-up), so their sum is >= 1 and never a difference of near-equal numbers
    first, second = per_unit(x, "max"), per_unit(np.where(top, np.nan, x), "max")
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        own = np.exp(x - first)
        others = np.where(top, per_unit(np.where(top, 0.0, np.exp(x - second)), "sum"),
                          per_unit(own, "sum") - own)
        out = x - (np.where(top, second, first) + np.log(others) - np.log(n - 1))
    return np.where(n > 1, out, 0.0)


# correct.threshold.scale -> the item_table column
SCALES = {"unit_prob": "prob", "logprob": "logp", "contrast": "contrast"}


def threshold_column(threshold: dict) -> str:
    """The item_table column a threshold is taken on: ``prob`` (scale unit_prob, the
    probability normalised over the unit), ``logp`` (scale logprob, the raw log-score:
    the reference code's percentiles of the first-token vocabulary log-probability) or
    ``contrast`` (scale contrast, :func:`contrast`: the same in a short and a long unit)."""
    return SCALES[threshold["scale"]]


def split_thresholds(items: pd.DataFrame, threshold: dict) -> dict[str, float]:
    """The value an item must exceed, per split present in ``items`` (item_table rows), on
    the threshold's scale (:func:`threshold_column`).

    kind percentile: that percentile of the split's own values, pooled over its units,
    with the `train` value for train and the `test` value for test and (separately)
    valid; kind probability: the value itself.
    """
    out = {}
    for split, probs in items.groupby("split")[threshold_column(threshold)]:
        value = threshold["train"] if split == "train" else threshold["test"]
        out[split] = float(np.percentile(probs, value)) if threshold["kind"] == "percentile" else float(value)
    return out


def cap(split: str, max_per_sequence: dict) -> int:
    """The most items correction may change in one unit of ``split``."""
    return int(max_per_sequence["train" if split == "train" else "test"])
