"""The score table every detector writes, and the threshold rule that reads it.

A detector (the LLM's scorers, the simple baselines, the calibrated combination) gives
each item of a unit a log-score, higher = more likely noise. ``scores/{detector}.parquet``
holds, per unit, those log-scores (``logp``) and probabilities (``probs``): by default
the softmax of the log-scores over the unit's items, so that every detector is
normalised the same way (docs/outputs.md). The correction stage, the suggestion stage
and the detection metrics all threshold these probabilities with :func:`split_thresholds`,
or, with ``correct.threshold.scale: logprob`` (the reference code), the raw log-scores.
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


SCALES = {"unit_prob": "prob", "logprob": "logp"}  # correct.threshold.scale -> the item_table column


def threshold_column(threshold: dict) -> str:
    """The item_table column a threshold is taken on: ``prob`` (scale unit_prob, the
    probability normalised over the unit) or ``logp`` (scale logprob, the raw log-score:
    the reference code's percentiles of the first-token vocabulary log-probability)."""
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
