"""Noise stage: windows, their global-time split, and noise injection.

The order matters, so that every noise setting of a dataset shares identical windows:

1. Windows come from the *clean* log; the history is up to ``max_history`` preceding
   items. ``window.construction: every_position`` (the study): one per target position
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
4. Noise: each interaction is replaced, with probability ``rate``, by another
   catalogue item (never itself), in every split. The *target* of a test window is
   then shown clean (it is the label the backbones are scored on), while the same
   interaction stays noisy where it appears in later windows' histories: test
   histories carry as much noise as training ones. Valid targets may be noisy, like
   any observed data a model is selected on. noise_stats.json gives the realised
   rate of every split's histories.

Noise models: ``uniform`` (the paper), ``popularity`` (in proportion to interaction
counts, so that rarity does not give noise away) and ``confusable`` (in proportion to
co-occurrence with the item it replaces: noise that fits the history).
Random streams come from the config seed and a stable hash of a tag (the noise
setting string), never Python's salted ``hash()``.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from llm4dsr.io import Llm4dsrError, read_catalogue, read_parquet, write_json, write_parquet
from llm4dsr.names import EVAL_SPLITS, NOISE_MODELS, SPLITS

log = logging.getLogger(__name__)


def parse_setting(setting: str) -> tuple[str, float]:
    """``"popularity-0.1"`` -> ``("popularity", 0.1)``."""
    model, _, rate = setting.rpartition("-")
    try:
        value = float(rate)
    except ValueError:
        value = -1.0
    if model not in NOISE_MODELS or not 0.0 <= value <= 1.0:
        raise Llm4dsrError(f"config noise.settings: {setting!r} is not <{'|'.join(NOISE_MODELS)}>-<rate in [0, 1]>")
    return model, value


def rng_for(seed: int, tag: str) -> np.random.Generator:
    """A random stream for (seed, tag), stable across processes and Python versions."""
    return np.random.default_rng([seed, int.from_bytes(hashlib.sha256(tag.encode()).digest()[:8], "little")])


def _by_user(interactions: pd.DataFrame) -> pd.DataFrame:
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
    seq = _by_user(interactions)
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


def draw_uniform(original: np.ndarray, n_items: int, rng: np.random.Generator) -> np.ndarray:
    """Uniform over items ``1..n_items`` other than the original."""
    r = rng.integers(1, n_items, size=len(original))  # 1..n_items-1, then skip the original
    return r + (r >= original)


def draw_popularity(original: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """In proportion to ``counts`` (indexed by item id, ``counts[0] = 0``), never the original."""
    p = counts / counts.sum()
    out = rng.choice(len(counts), size=len(original), p=p)
    while (same := out == original).any():  # rejection keeps p_j / (1 - p_original) exact
        out[same] = rng.choice(len(counts), size=int(same.sum()), p=p)
    return out


def draw_replacement(exclude: set[int], n_items: int, counts: np.ndarray | None,
                     rng: np.random.Generator) -> int:
    """One item of ``1..n_items`` not in ``exclude``: uniform (``counts`` None) or in
    proportion to ``counts`` (indexed by item id). The self-supervised examples and
    held-out units draw their replaced item here, so both follow one noise model."""
    p = None
    if counts is not None:
        w = np.asarray(counts[1:n_items + 1], dtype=float)
        if not np.any(np.delete(w, [i - 1 for i in exclude if 1 <= i <= n_items]) > 0):
            raise Llm4dsrError("popularity replacement: every item with a count is in the history")
        p = w / w.sum()
    elif sum(1 <= i <= n_items for i in exclude) >= n_items:
        raise Llm4dsrError(f"replacement: all {n_items} items are in the history")
    while (item := int(rng.choice(n_items, p=p)) + 1) in exclude:
        pass
    return item


def cooccurrence(interactions: pd.DataFrame, n_items: int) -> sp.csr_matrix:
    """Item x item count of users who interacted with both (zero diagonal)."""
    x = sp.csr_matrix((np.ones(len(interactions)), (interactions.user, interactions["item"])),
                      shape=(int(interactions.user.max()) + 1, n_items + 1))
    x.data[:] = 1.0
    c = (x.T @ x).tocsr()
    c.setdiag(0)
    c.eliminate_zeros()
    return c


def draw_confusable(original: np.ndarray, cooc: sp.csr_matrix, counts: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
    """In proportion to co-occurrence with the original item (the diagonal is zero, so
    never the original itself); popularity when it co-occurs with nothing."""
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
        out[fallback] = draw_popularity(original[fallback], counts, rng)
    return out


def inject(seq: pd.DataFrame, counts: np.ndarray, model: str, rate: float, clean: np.ndarray,
           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Observed items and the 0/1 noise mask for a user-sorted log; ``clean`` rows never change."""
    item = seq["item"].to_numpy(np.int64)
    noisy = (rng.random(len(item)) < rate) & ~clean
    idx = np.flatnonzero(noisy)
    observed = item.copy()
    if len(idx):
        if len(counts) < 3:
            raise Llm4dsrError("items.parquet: noise needs at least 2 items")
        if model == "uniform":
            observed[idx] = draw_uniform(item[idx], len(counts) - 1, rng)
        elif model == "popularity":
            observed[idx] = draw_popularity(item[idx], counts, rng)
        else:
            observed[idx] = draw_confusable(item[idx], cooccurrence(seq, len(counts) - 1), counts, rng)
    return observed, noisy.astype(np.int64)


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


def _rate(noise: np.ndarray) -> dict:
    n = int(len(noise))
    return {"n": n, "noisy": int(noise.sum()), "rate": float(noise.mean()) if n else 0.0}


def noise_stats(setting: str, seq: pd.DataFrame, wins: pd.DataFrame, clean: np.ndarray) -> dict:
    model, rate = parse_setting(setting)
    by_split = {s: _rate(seq.noise.to_numpy()[seq.split.eq(s).to_numpy()]) for s in (*SPLITS, "none")}
    history = {s: {**_rate(np.concatenate([*wins.history_noise[wins.split.eq(s)], np.zeros(0, np.int64)])),
                   "windows": int(wins.split.eq(s).sum()),
                   "target_rate": float(wins.target_noise[wins.split.eq(s)].mean()) if wins.split.eq(s).any() else 0.0}
               for s in SPLITS}
    return {"setting": setting, "model": model, "rate_requested": rate,
            "interactions": {"all": _rate(seq.noise.to_numpy()), **by_split},
            "eligible": _rate(seq.noise.to_numpy()[~clean]),
            "kept_clean": int(clean.sum()),
            "window_history": history}


def run(interactions_path: str | Path, items_path: str | Path, setting: str, window_cfg: dict, seed: int,
        out_dir: str | Path) -> dict:
    """Write sequences.parquet, windows.parquet and noise_stats.json for one noise setting."""
    model, rate = parse_setting(setting)
    seq = _by_user(read_parquet(interactions_path, ["user", "pos", "timestamp", "item"]))
    counts = read_catalogue(items_path).counts

    all_wins = split_windows(seq, window_cfg)
    wins = sample_eval(all_wins, window_cfg["max_eval_windows"], seed, window_cfg["max_test_windows"])
    clean = np.zeros(len(seq), dtype=bool)  # no interaction is exempt from noise
    observed, mask = inject(seq, counts, model, rate, clean, rng_for(seed, setting))
    split = np.full(len(seq), "none", dtype=object)
    split[all_wins.row.to_numpy()] = all_wins.split.to_numpy()
    seq = seq.assign(item_clean=seq["item"], item=observed, noise=mask, split=split)
    seq = seq[["user", "pos", "timestamp", "item", "item_clean", "noise", "split"]]
    windows = make_windows(seq, wins, window_cfg["max_history"])
    test = windows.split.eq("test").to_numpy()
    windows.loc[test, "target"] = windows.loc[test, "target_clean"]
    windows.loc[test, "target_noise"] = 0
    stats = noise_stats(setting, seq, windows, clean)

    out_dir = Path(out_dir)
    write_parquet(seq, out_dir / "sequences.parquet")
    write_parquet(windows, out_dir / "windows.parquet")
    write_json(stats, out_dir / "noise_stats.json")
    log.info("%s: %d interactions, %d windows %s, realised rate %.4f (eligible %.4f)", setting, len(seq),
             len(windows), windows.split.value_counts().to_dict(), stats["interactions"]["all"]["rate"],
             stats["eligible"]["rate"])
    return stats
