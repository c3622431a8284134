"""Noise stage: each noise setting's observed log and windows, and noise injection.

Every noise setting of a dataset shares identical windows (llm4dsr.windows: built from
the *clean* log, split, eval sample); then noise: each interaction is replaced, with
probability ``rate``, by another catalogue item (never itself), in every split. The
*target* of a test window is then shown clean (it is the label the backbones are scored
on), while the same interaction stays noisy where it appears in later windows'
histories: test histories carry as much noise as training ones. Valid targets may be
noisy, like any observed data a model is selected on. noise_stats.json gives the
realised rate of every split's histories.

Noise models, one module each (llm4dsr.noise_models, by name from llm4dsr.names.NOISE_MODELS):
``uniform`` (the paper), ``popularity`` (in proportion to interaction counts, so that
rarity does not give noise away) and ``confusable`` (in proportion to co-occurrence with
the item it replaces: noise that fits the history). Random streams come from the config
seed and a stable hash of a tag (the noise setting string; llm4dsr.streams).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from llm4dsr import registry
from llm4dsr.io import Llm4dsrError, read_catalogue, read_parquet, write_json, write_parquet
from llm4dsr.names import NOISE_MODELS, SPLITS
from llm4dsr.streams import rng_for
from llm4dsr.windows import by_user, make_windows, sample_eval, split_windows

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
        observed[idx] = registry.get("noise_model", model)(item[idx], seq, counts, rng)
    return observed, noisy.astype(np.int64)


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
    seq = by_user(read_parquet(interactions_path, ["user", "pos", "timestamp", "item"]))
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
