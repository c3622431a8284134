"""Units: the contexts a noise detector scores (units.parquet in docs/outputs.md).

Train units come from the train period only (interactions whose split is `train`
or `none`), so a correction never uses, nor changes, anything a valid or test
window will be judged on. Valid and test units are window histories: the target
is never shown to a detector.
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from llm4dsr.io import Llm4dsrError, read_catalogue, read_parquet, write_parquet
from llm4dsr.names import EVAL_SPLITS, TRAIN_PERIOD
from llm4dsr.noise import draw_replacement
from llm4dsr.scores import contrast

log = logging.getLogger(__name__)

MIN_ITEMS = 2  # a one-item context gives a detector nothing to compare against
COLUMNS = ["unit", "user", "split", "window", "positions", "items", "noise"]


def make_units(sequences: pd.DataFrame, windows: pd.DataFrame, mode: str, block: int) -> pd.DataFrame:
    """All units of a noise setting: train blocks or train windows, then valid and test histories.

    Units of fewer than MIN_ITEMS items (a user's first window, a lone train-period
    interaction) are left out: they are neither scored nor corrected.
    """
    if mode == "history":
        if block < MIN_ITEMS:
            raise Llm4dsrError(f"config.yaml: score.block must be >= {MIN_ITEMS}, not {block}")
        train = _history_blocks(sequences, block)
    elif mode == "window":
        train = _window_units(windows[windows["split"] == "train"], with_target=True)
    else:
        raise Llm4dsrError(f"config.yaml: score.mode must be history or window, not {mode!r}")
    evals = [_window_units(windows[windows["split"] == s], with_target=False) for s in EVAL_SPLITS]
    units = pd.concat([train, *evals], ignore_index=True)
    units = units[units["items"].map(len) >= MIN_ITEMS].reset_index(drop=True)
    units.insert(0, "unit", np.arange(len(units), dtype=np.int64))
    return units[COLUMNS]


def _history_blocks(sequences: pd.DataFrame, block: int) -> pd.DataFrame:
    """Consecutive blocks of each user's train-period interactions.

    A run of consecutive positions is cut into ceil(n / block) near-equal blocks, so
    no block is longer than ``block`` and no short leftover block is left alone.
    """
    seq = sequences[sequences["split"].isin(TRAIN_PERIOD)].sort_values(["user", "pos"])
    user, pos = seq["user"].to_numpy(), seq["pos"].to_numpy()
    item, noise = seq["item"].to_numpy(), seq["noise"].to_numpy()
    # a new run starts at each user change or position gap (a valid/test interaction between)
    starts = np.flatnonzero(np.r_[True, (np.diff(user) != 0) | (np.diff(pos) != 1)])
    rows = []
    for lo, hi in zip(starts, np.r_[starts[1:], len(seq)]):
        for idx in np.array_split(np.arange(lo, hi), -(-(hi - lo) // block)):
            rows.append((int(user[lo]), "train", -1, pos[idx].tolist(), item[idx].tolist(), noise[idx].tolist()))
    return pd.DataFrame(rows, columns=COLUMNS[1:])


def _window_units(windows: pd.DataFrame, with_target: bool) -> pd.DataFrame:
    rows = []
    for w in windows.itertuples(index=False):
        hist, tp = list(w.history), int(w.target_pos)
        positions = list(range(tp - len(hist), tp))
        items, noise = hist, list(w.history_noise)
        if with_target:
            positions, items, noise = positions + [tp], items + [int(w.target)], noise + [int(w.target_noise)]
        rows.append((int(w.user), w.split, int(w.window), positions, [int(i) for i in items],
                     [int(x) for x in noise]))
    return pd.DataFrame(rows, columns=COLUMNS[1:])


def check_units(units: pd.DataFrame, windows: pd.DataFrame, sequences: pd.DataFrame,
                name: str = "units.parquet") -> None:
    """Raise unless train units stay in the train period and no unit holds its window's target."""
    period = dict(zip(zip(sequences["user"], sequences["pos"]), sequences["split"]))
    target = dict(zip(windows["window"], windows["target_pos"]))
    for u in units.itertuples(index=False):
        if u.split == "train":
            bad = [p for p in u.positions if period.get((u.user, p)) not in TRAIN_PERIOD]
            if bad:
                raise Llm4dsrError(f"{name}: train unit {u.unit} reaches outside the train period (pos {bad[0]})")
        elif u.window not in target:
            raise Llm4dsrError(f"{name}: {u.split} unit {u.unit} names window {u.window}, not in windows.parquet")
        elif max(u.positions) >= target[u.window]:
            raise Llm4dsrError(f"{name}: {u.split} unit {u.unit} shows the target of window {u.window}")


def item_table(units: pd.DataFrame, scores: pd.DataFrame | None = None, name: str = "scores") -> pd.DataFrame:
    """One row per (unit, item): unit, user, split, window, idx, pos, item, noise [, prob, logp,
    contrast (:func:`llm4dsr.scores.contrast`)].

    With ``scores``, only scored units are kept; a scores table that names an unknown
    unit or gives the wrong number of values raises an error naming ``name``.
    """
    if scores is not None:
        if scores["unit"].duplicated().any():
            raise Llm4dsrError(f"{name}: unit {scores['unit'][scores['unit'].duplicated()].iloc[0]} scored twice")
        merged = units.merge(scores[["unit", "probs", "logp"]], on="unit", how="right", indicator=True)
        if (merged["_merge"] != "both").any():
            raise Llm4dsrError(f"{name}: unit {merged['unit'][merged['_merge'] != 'both'].iloc[0]} is not in units")
        lengths = merged["items"].map(len)
        for col in ("probs", "logp"):
            bad = merged[merged[col].map(len) != lengths]
            if len(bad):
                raise Llm4dsrError(f"{name}: unit {bad['unit'].iloc[0]} has {len(bad[col].iloc[0])} {col} "
                                   f"for {len(bad['items'].iloc[0])} items")
        units = merged.drop(columns="_merge").sort_values("unit")
    lists = ["positions", "items", "noise"] + (["probs", "logp"] if scores is not None else [])
    long = units.explode(lists, ignore_index=True).rename(columns={"positions": "pos", "items": "item", "probs": "prob"})
    long.insert(4, "idx", long.groupby("unit").cumcount())
    types = {"pos": np.int64, "item": np.int64, "noise": np.int64, "prob": float, "logp": float}
    long = long.astype({c: t for c, t in types.items() if c in long})
    if scores is not None:
        long["contrast"] = contrast(long["unit"].to_numpy(), long["logp"].to_numpy())
    return long


def self_supervised_units(windows: pd.DataFrame, n_items: int, n: int, seed: int,
                          counts: np.ndarray | None = None) -> pd.DataFrame:
    """Held-out self-supervised units: in a train-window history (its items as observed in
    the setting that trains the denoiser), one item replaced.

    As in the fine-tuning data (:func:`llm4dsr.noise.draw_replacement`), the replacement
    is a catalogue item not already in the history, uniform or, with ``counts``, drawn
    by popularity; its position is the unit's only noise=1. Labels are free.
    """
    train = windows[(windows["split"] == "train") & (windows["history"].map(len) >= MIN_ITEMS)]
    if n_items <= max(train["history"].map(len), default=0):
        raise Llm4dsrError(f"items.parquet: {n_items} items are too few to replace one in a history")
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.choice(len(train), size=min(n, len(train)), replace=False))
    rows = []
    for w in train.iloc[chosen].itertuples(index=False):
        items, tp = [int(i) for i in w.history], int(w.target_pos)
        k = int(rng.integers(len(items)))
        items[k] = draw_replacement(set(items), n_items, counts, rng)
        noise = [int(j == k) for j in range(len(items))]
        rows.append((int(w.user), "train", int(w.window), list(range(tp - len(items), tp)), items, noise))
    units = pd.DataFrame(rows, columns=COLUMNS[1:])
    units.insert(0, "unit", np.arange(len(units), dtype=np.int64))
    return units


def run(sequences_path, windows_path, mode: str, block: int, out_path) -> pd.DataFrame:
    """The workflow step of rule units: every unit of a noise setting, checked for leaks."""
    sequences = read_parquet(sequences_path, ["user", "pos", "item", "noise", "split"])
    windows = read_parquet(windows_path, ["window", "user", "split", "target_pos", "history", "history_noise",
                                          "target", "target_noise"])
    units = make_units(sequences, windows, mode, block)
    check_units(units, windows, sequences, name=str(out_path))
    for split in ("train", *EVAL_SPLITS):
        if not (units["split"] == split).any():  # a defined result: null metrics, nothing corrected there
            log.warning("no %s unit of %d+ items: that split's detection metrics are null and nothing in it is "
                        "corrected", split, MIN_ITEMS)
    log.info("%d units (%s), %d items", len(units), units.groupby("split").size().to_dict(),
             units["items"].map(len).sum())
    write_parquet(units, out_path)
    return units


def run_selfsup(windows_path, catalogue_path, n: int, seed: int, replace_with: str, out_path) -> pd.DataFrame:
    """The workflow step of rule selfsup_units: held-out self-supervised units, the
    replaced item drawn as in fine-tuning (``replace_with``: uniform | popularity)."""
    windows = read_parquet(windows_path, ["window", "user", "split", "target_pos", "history"])
    catalogue = read_catalogue(catalogue_path)
    counts = catalogue.counts if replace_with == "popularity" else None
    units = self_supervised_units(windows, catalogue.n_items, n, seed, counts)
    log.info("%d self-supervised units (%s replacements)", len(units), replace_with)
    write_parquet(units, out_path)
    return units
