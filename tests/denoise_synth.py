"""Synthetic sequences.parquet / windows.parquet (docs/outputs.md) for the denoising tests.

Two disjoint item communities (items 1..half and half+1..2*half); each user draws
from one. Noise replaces an item, with probability ``rate``, by an item of the other
community, so a co-occurrence detector can find it. As in the noise stage (noise.py),
every split is noisy and a test window shows its target clean, while the same
interaction stays noisy in the sequences and in later windows' histories.
"""
from __future__ import annotations

import numpy as np
import pandas as pd


def make_log(n_users: int = 40, length: int = 20, half: int = 20, rate: float = 0.1,
             max_history: int = 5, seed: int = 0, cycle: bool = False) -> tuple[pd.DataFrame, pd.DataFrame]:
    """With ``cycle``, a user walks their community in order (s, s+1, ..., wrapping within it)
    from a random start, so the next item is predictable as well."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        base = 1 + (u % 2) * half
        if cycle:
            clean = base + (int(rng.integers(half)) + np.arange(length)) % half
        else:
            # a user walks through a random subset of their community, so neighbours co-occur
            clean = base + rng.choice(half, size=length, replace=length > half)
        for p, it in enumerate(clean):
            noisy = rng.random() < rate
            other = 1 + (1 - u % 2) * half + rng.integers(half)
            rows.append((u, p, u * 7 + p * 1000, int(other if noisy else it), int(it), int(noisy)))
    seq = pd.DataFrame(rows, columns=["user", "pos", "timestamp", "item", "item_clean", "noise"])
    windows = _windows(seq, max_history)
    split = dict(zip(zip(windows["user"], windows["target_pos"]), windows["split"]))
    seq["split"] = [split.get(k, "none") for k in zip(seq["user"], seq["pos"])]
    windows = _windows(seq, max_history, split)
    test = windows["split"] == "test"  # the label: clean, only where it is the target
    windows.loc[test, "target"], windows.loc[test, "target_noise"] = windows.loc[test, "target_clean"], 0
    return seq, windows


def _windows(seq: pd.DataFrame, h: int, split: dict | None = None) -> pd.DataFrame:
    rows = []
    for u, g in seq.groupby("user"):
        it, cl, no, ts = (g[c].to_list() for c in ("item", "item_clean", "noise", "timestamp"))
        for t in range(1, len(g)):
            lo = max(0, t - h)
            rows.append((u, t, ts[t], it[lo:t], no[lo:t], cl[lo:t], it[t], no[t], cl[t]))
    w = pd.DataFrame(rows, columns=["user", "target_pos", "time", "history", "history_noise",
                                    "history_clean", "target", "target_noise", "target_clean"])
    w = w.sort_values("time", kind="stable").reset_index(drop=True)
    w.insert(0, "window", np.arange(len(w), dtype=np.int64))
    if split is None:
        n = len(w)
        w.insert(2, "split", np.where(np.arange(n) < 0.8 * n, "train", np.where(np.arange(n) < 0.9 * n, "valid", "test")))
    else:
        w.insert(2, "split", [split[k] for k in zip(w["user"], w["target_pos"])])
    return w[["window", "user", "split", "target_pos", "time", "history", "history_noise", "history_clean",
              "target", "target_noise", "target_clean"]]
