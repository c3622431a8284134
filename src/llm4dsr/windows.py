"""Windows: what a backbone trains and is tested on, built once per dataset from the
*clean* log, so that every noise setting shares identical windows (the noise stage,
llm4dsr.noise, then fills in the observed items).

1. The history of a window is up to ``max_history`` items before its target.
   ``window.construction: every_position`` (the study): one window per target position
   ``pos >= 1``. ``full_history`` (the reference code's ``range(min(10, n-1), n)``): one
   per position ``>= max_history``, and for a user with at most ``max_history`` items one
   window only, its last item the target: ``max(1, n - max_history)`` windows.
2. ``window.split_mode: global_time`` (the paper): all windows are sorted by target
   time (ties by user, then position) and cut train/valid/test by ``window.split``
   along that order. ``last_per_user``: each user's last window is test, the one
   before valid, the rest train.
3. ``max_eval_windows`` keeps a seeded sample of N valid and N test windows, and
   ``max_test_windows`` caps the test windows further (the reference's 5,000-window test
   sample); the samples depend on the config seed only, never on the noise setting.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from llm4dsr.io import Llm4dsrError
from llm4dsr.names import EVAL_SPLITS, SPLITS
from llm4dsr.streams import rng_for


def by_user(interactions: pd.DataFrame) -> pd.DataFrame:
    return interactions.sort_values(["user", "pos"], kind="stable", ignore_index=True)


CONSTRUCTIONS = ("every_position", "full_history")


def target_positions(pos: np.ndarray, n_items: np.ndarray, construction: str, max_history: int) -> np.ndarray:
    """Which interactions are a window's target, given each one's position ``pos`` in its
    user's time-sorted list and that user's number of interactions ``n_items``.

    every_position: ``pos >= 1``. full_history (the reference code): ``pos >=
    min(max_history, n - 1)``, and never ``pos 0`` (a one-item user gives no window).
    """
    if construction == "every_position":
        return pos >= 1
    if construction == "full_history":
        return pos >= np.maximum(1, np.minimum(max_history, n_items - 1))
    raise Llm4dsrError(f"config window.construction: {construction!r} is not one of {CONSTRUCTIONS}")


def split_windows(interactions: pd.DataFrame, window_cfg: dict) -> pd.DataFrame:
    """Clean windows in target-time order: ``row`` (target's row in the user-sorted log),
    ``user``, ``target_pos``, ``time``, ``split``."""
    seq = by_user(interactions)
    n_items = seq.groupby("user")["pos"].transform("size").to_numpy()
    rows = np.flatnonzero(target_positions(seq.pos.to_numpy(), n_items, window_cfg["construction"],
                                           window_cfg["max_history"]))
    user, pos, time = seq.user.to_numpy()[rows], seq.pos.to_numpy()[rows], seq.timestamp.to_numpy()[rows]
    order = np.lexsort((pos, user, time))
    if window_cfg["split_mode"] == "last_per_user":
        # windows are user-sorted by position: count each window's distance from the user's last
        from_end = np.r_[np.flatnonzero(np.diff(user)), len(user) - 1]
        last = np.repeat(from_end, np.diff(np.r_[-1, from_end]))
        split = np.asarray(("test", "valid", "train"), dtype=object)[np.minimum(last - np.arange(len(user)), 2)]
        split = split[order]
    else:
        fractions = np.asarray(window_cfg["split"], dtype=float)
        if len(fractions) != 3 or abs(fractions.sum() - 1) > 1e-6:
            raise Llm4dsrError(f"config window.split: {list(fractions)} must be 3 fractions summing to 1")
        n = len(rows)
        bounds = np.round(np.cumsum(fractions) * n).astype(np.int64)
        bounds[-1] = n
        split = np.asarray(SPLITS, dtype=object)[np.searchsorted(bounds, np.arange(n), side="right")]
    return pd.DataFrame({"row": rows[order], "user": user[order], "target_pos": pos[order],
                         "time": time[order], "split": split})


def sample_eval(windows: pd.DataFrame, n: int | None, seed: int, n_test: int | None = None) -> pd.DataFrame:
    """Keep a seeded sample of ``n`` valid and ``n`` test windows (all train windows), the
    test windows capped further at ``n_test`` (None: no cap)."""
    if n is None and n_test is None:
        return windows
    rng = rng_for(seed, "eval-windows")
    keep = windows.split.eq("train").to_numpy().copy()
    for split in EVAL_SPLITS:
        idx = np.flatnonzero(windows.split.eq(split).to_numpy())
        cap = min(c for c in (n, n_test if split == "test" else None, len(idx)) if c is not None)
        keep[idx if len(idx) <= cap else rng.choice(idx, size=cap, replace=False)] = True
    return windows[keep].reset_index(drop=True)


def make_windows(seq: pd.DataFrame, windows: pd.DataFrame, max_history: int) -> pd.DataFrame:
    """Window rows in the documented format from a noisy user-sorted log (see docs/outputs.md)."""
    g = windows.row.to_numpy()
    lo = np.maximum(g - seq.pos.to_numpy()[g], g - max_history)
    lengths = g - lo
    ends = np.cumsum(lengths)
    flat = np.arange(ends[-1] if len(ends) else 0) - np.repeat(ends - lengths, lengths) + np.repeat(lo, lengths)

    def lists(col: str) -> list[np.ndarray]:
        return np.split(seq[col].to_numpy(np.int64)[flat], ends[:-1])

    def at_target(col: str) -> np.ndarray:
        return seq[col].to_numpy(np.int64)[g]

    return pd.DataFrame({
        "window": np.arange(len(g), dtype=np.int64), "user": windows.user.to_numpy(np.int64),
        "split": windows.split.to_numpy(), "target_pos": windows.target_pos.to_numpy(np.int64),
        "time": windows.time.to_numpy(np.int64),
        "history": lists("item"), "history_noise": lists("noise"), "history_clean": lists("item_clean"),
        "target": at_target("item"), "target_noise": at_target("noise"), "target_clean": at_target("item_clean"),
    })
