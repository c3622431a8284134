"""Correction: replace the items a detector is sure about, then rebuild the windows.

Positions are chosen per unit: probability above the split's threshold, at most N per
unit, and only where a replacement is known. When nothing is chosen (a percentile of
100, a probability no item reaches, no suggestion) the windows are written unchanged,
with an empty changes table and a warning in the log. Train blocks (units with window -1)
change the interaction log, from which every train window is rebuilt; window units
(valid/test histories, or train windows in `window` mode) change their own window.
A valid or test window's target is never changed (checked, not assumed).
"""
from __future__ import annotations

import logging

import numpy as np
import pandas as pd

from llm4dsr import names
from llm4dsr.io import Llm4dsrError, read_catalogue, read_parquet, write_parquet
from llm4dsr.scores import cap, split_thresholds, threshold_column
from llm4dsr.units import MIN_ITEMS, check_units, item_table

log = logging.getLogger(__name__)

CHANGE_COLUMNS = ["unit", "user", "split", "pos", "old_item", "new_item", "prob", "was_noise"]


def select(items: pd.DataFrame, threshold: dict, max_per_sequence: dict,
           allowed: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows of ``items`` whose value on the threshold's scale (prob, or logp) clears the split
    threshold, the highest first, at most max_per_sequence per unit; with ``allowed`` (unit,
    pos), only those positions."""
    cuts = split_thresholds(items, threshold)
    col = threshold_column(threshold)
    chosen = items[items[col] > items["split"].map(cuts)]
    if allowed is not None:
        chosen = chosen.merge(allowed[["unit", "pos"]].drop_duplicates(), on=["unit", "pos"])
    chosen = chosen.sort_values(["unit", col, "idx"], ascending=[True, False, True], kind="stable")
    rank = chosen.groupby("unit").cumcount().to_numpy()
    most = np.array([cap(s, max_per_sequence) for s in chosen["split"]], dtype=np.int64)  # int even when empty
    return chosen[rank < most].sort_values(["unit", "idx"])


def select_top(items: pd.DataFrame) -> pd.DataFrame:
    """The single most probable item of every unit (first on ties), whatever its probability."""
    return items.loc[items.groupby("unit", sort=True)["prob"].idxmax()]


def select_random(items: pd.DataFrame, counts: dict[str, int], max_per_sequence: dict, seed: int) -> pd.DataFrame:
    """``counts[split]`` random positions of each split's units, at most max_per_sequence per unit."""
    rng = np.random.default_rng(seed)
    parts = []
    for split, n in sorted(counts.items()):
        rows = items[items["split"] == split]
        rows = rows.iloc[rng.permutation(len(rows))]
        rows = rows[rows.groupby("unit").cumcount() < cap(split, max_per_sequence)]
        if len(rows) < n:
            log.warning("random: only %d positions available for %d %s changes", len(rows), n, split)
        parts.append(rows.head(n))
    return pd.concat(parts).sort_values(["unit", "idx"]) if parts else items.head(0)


def best_suggestions(suggestions: pd.DataFrame, items: pd.DataFrame, n_items: int,
                     name: str = "suggestions.parquet") -> pd.DataFrame:
    """unit, pos, new_item: each position's best-ranked suggestion that differs from the item there."""
    if not suggestions["item"].between(1, n_items).all():
        raise Llm4dsrError(f"{name}: suggested item outside 1..{n_items}")
    s = suggestions.merge(items[["unit", "pos", "item"]].rename(columns={"item": "old"}), on=["unit", "pos"], how="left")
    if s["old"].isna().any():
        bad = s[s["old"].isna()].iloc[0]
        raise Llm4dsrError(f"{name}: unit {bad['unit']} has no position {bad['pos']}")
    s = s[s["item"] != s["old"]].sort_values(["unit", "pos", "rank"], kind="stable")
    return s.drop_duplicates(["unit", "pos"])[["unit", "pos", "item"]].rename(columns={"item": "new_item"})


def apply(windows: pd.DataFrame, sequences: pd.DataFrame, units: pd.DataFrame,
          chosen: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply ``chosen`` (unit, pos, new_item, prob) and return (corrected windows, changes).

    A changed position's noise flag becomes new_item != item_clean; the others keep theirs.
    """
    info = item_table(units)[["unit", "user", "split", "window", "pos", "item", "noise"]]
    ch = chosen[["unit", "pos", "new_item", "prob"]].merge(info, on=["unit", "pos"], how="left", validate="1:1")
    if ch["item"].isna().any():
        raise Llm4dsrError(f"units.parquet: chosen position {ch[ch['item'].isna()].iloc[0][['unit', 'pos']].tolist()} "
                           "is not in its unit")
    out = windows.copy()
    blocks = ch[ch["window"] == -1]
    if (units["window"] == -1).any():
        _rebuild_train_windows(out, sequences, blocks)
    _change_windows(out, ch[ch["window"] >= 0])
    _check_targets(windows, out)
    changes = ch.rename(columns={"item": "old_item", "noise": "was_noise"})[CHANGE_COLUMNS]
    return out, changes.sort_values(["unit", "pos"]).reset_index(drop=True)


def _rebuild_train_windows(out: pd.DataFrame, sequences: pd.DataFrame, blocks: pd.DataFrame) -> None:
    """Change the interaction log, then rebuild every train window from it (in place)."""
    seq = sequences.sort_values(["user", "pos"]).set_index(["user", "pos"])
    key = pd.MultiIndex.from_arrays([blocks["user"], blocks["pos"]])
    item, noise = seq["item"].copy(), seq["noise"].copy()
    item[key] = blocks["new_item"].to_numpy()
    noise[key] = (blocks["new_item"].to_numpy() != seq.loc[key, "item_clean"].to_numpy()).astype(noise.dtype)
    item_by_user = {u: g.to_numpy() for u, g in item.groupby(level="user")}
    noise_by_user = {u: g.to_numpy() for u, g in noise.groupby(level="user")}
    old_by_user = {u: g.to_numpy() for u, g in seq["item"].groupby(level="user")}
    for r in np.flatnonzero(out["split"].to_numpy() == "train"):
        u, tp, n = out.at[r, "user"], int(out.at[r, "target_pos"]), len(out.at[r, "history"])
        span = slice(tp - n, tp)
        if list(old_by_user[u][span]) != list(out.at[r, "history"]) or old_by_user[u][tp] != out.at[r, "target"]:
            raise Llm4dsrError(f"windows.parquet: window {out.at[r, 'window']} does not match sequences.parquet")
        out.at[r, "history"] = item_by_user[u][span].tolist()
        out.at[r, "history_noise"] = noise_by_user[u][span].tolist()
        out.at[r, "target"] = int(item_by_user[u][tp])
        out.at[r, "target_noise"] = int(noise_by_user[u][tp])


def _change_windows(out: pd.DataFrame, changes: pd.DataFrame) -> None:
    """Apply changes of window units to their own window row (history, or a train target)."""
    row_of = pd.Series(np.arange(len(out)), index=out["window"].to_numpy())
    for w, g in changes.groupby("window"):
        r = int(row_of[w])
        hist, noise, clean = (list(out.at[r, c]) for c in ("history", "history_noise", "history_clean"))
        tp, start = int(out.at[r, "target_pos"]), int(out.at[r, "target_pos"]) - len(hist)
        for pos, new in zip(g["pos"], g["new_item"]):
            if pos == tp and out.at[r, "split"] == "train":
                out.at[r, "target"] = int(new)
                out.at[r, "target_noise"] = int(new != out.at[r, "target_clean"])
            elif start <= pos < tp:
                hist[pos - start], noise[pos - start] = int(new), int(new != clean[pos - start])
            else:
                raise Llm4dsrError(f"units.parquet: position {pos} is outside window {w}'s history")
        out.at[r, "history"], out.at[r, "history_noise"] = hist, noise


def _check_targets(before: pd.DataFrame, after: pd.DataFrame) -> None:
    held = before["split"].isin(names.EVAL_SPLITS).to_numpy()
    if (before["target"].to_numpy()[held] != after["target"].to_numpy()[held]).any():
        raise Llm4dsrError("units.parquet: a correction reached a valid/test target")


def correct(condition: str, windows: pd.DataFrame, sequences: pd.DataFrame, units: pd.DataFrame, n_items: int,
            cfg: dict, seed: int, scores: pd.DataFrame | None = None, suggestions: pd.DataFrame | None = None,
            llm_changes: pd.DataFrame | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Corrected windows and changes of one condition (``cfg`` = config `correct`).

    llm4dsr / llm4dsr_no_uncertainty need the LLM's scores and suggestions; popularity,
    cooccurrence, idtransformer that detector's scores (co-occurrence suggestions);
    random the llm4dsr changes, whose number per split it matches.
    """
    check_units(units, windows, sequences)
    if condition == "random":
        items = item_table(units)
        counts = llm_changes.groupby("split").size().to_dict()
        chosen = select_random(items, counts, cfg["max_per_sequence"], seed)
        rng = np.random.default_rng(seed + 1)
        new = rng.integers(1, n_items, size=len(chosen))  # 1..n_items without the old item
        chosen = chosen.assign(new_item=new + (new >= chosen["item"].to_numpy()), prob=np.nan)
    elif condition in names.LLM_CONDITIONS:
        items = item_table(units, scores)
        best = best_suggestions(suggestions, items, n_items)
        if condition == "llm4dsr":
            chosen = select(items, cfg["threshold"], cfg["max_per_sequence"], allowed=best)
        else:
            chosen = select_top(items)
        chosen = chosen.merge(best, on=["unit", "pos"])
    elif condition in names.DETECTORS:
        from llm4dsr.detectors import Cooccurrence, suggest_cooccurrence

        items = item_table(units, scores)
        chosen = select(items, cfg["threshold"], cfg["max_per_sequence"])
        chosen = chosen.assign(new_item=suggest_cooccurrence(Cooccurrence().fit(sequences, n_items), units, chosen))
    else:
        raise Llm4dsrError(f"config backbone.conditions: unknown correction condition {condition!r}")
    if chosen.empty:  # a defined result, not an error: e.g. a percentile of 100, or no probability that high
        log.warning("%s: no item clears the threshold %s with a replacement: the windows are written unchanged "
                    "and changes.parquet is empty", condition, cfg["threshold"])
    else:
        log.info("%s: %d changes (%s)", condition, len(chosen), chosen.groupby("split").size().to_dict())
    return apply(windows, sequences, units, chosen)


def run(condition: str, windows_path, sequences_path, units_path, catalogue_path, cfg: dict, seed: int,
        out_windows, out_changes, scores_path=None, suggestions_path=None, llm_changes_path=None) -> pd.DataFrame:
    """The workflow step of rule correct: one condition's corrected windows and changes.
    ``cfg`` is the config's `correct` section; the optional inputs as :func:`correct` needs."""
    optional = {key: read_parquet(path) for key, path in
                (("scores", scores_path), ("suggestions", suggestions_path), ("llm_changes", llm_changes_path))
                if path is not None}
    windows, changes = correct(condition, read_parquet(windows_path), read_parquet(sequences_path),
                               read_parquet(units_path), read_catalogue(catalogue_path).n_items, cfg, seed, **optional)
    write_parquet(windows, out_windows)
    write_parquet(changes, out_changes)
    return changes


LENGTH_BINS = (MIN_ITEMS, 4, 7)  # lower ends of the history-length bins of spread(): 2-3, 4-6, 7 and up


def spread(units: pd.DataFrame, changes: pd.DataFrame) -> pd.DataFrame:
    """Where corrections land: per split and unit-length bin, the units, items, injected noise
    items and changes, each bin's share of the split's items, noise and changes, and the
    precision of its changes (the share that replaced noise). A rule that follows suspicion
    spreads its changes like the noise; one that follows length piles them into one bin.

    ``changes``: a changes table (unit, was_noise); rows of unit -1 (the published denoisers'
    per-window changes) are left out.
    """
    length = units["items"].map(len).to_numpy()
    edges = [*LENGTH_BINS, max(length.max(initial=0), LENGTH_BINS[-1]) + 1]
    labels = [f"{lo}-{hi - 1}" for lo, hi in zip(edges[:-1], edges[1:])]
    u = pd.DataFrame({"unit": units["unit"], "split": units["split"], "items": length,
                      "noise": units["noise"].map(sum).astype(np.int64),
                      "length": pd.cut(length, edges, right=False, labels=labels)})
    ch = changes[changes["unit"] >= 0][["unit", "was_noise"]].merge(u[["unit", "split", "length"]], on="unit",
                                                                     how="left", validate="m:1")
    if ch["split"].isna().any():
        raise Llm4dsrError(f"changes.parquet: unit {ch['unit'][ch['split'].isna()].iloc[0]} is not in units.parquet")
    keys = ["split", "length"]
    t = u.groupby(keys, observed=False).agg(units=("unit", "size"), items=("items", "sum"), noise=("noise", "sum"))
    t = t.join(ch.groupby(keys, observed=False).agg(changes=("unit", "size"), hits=("was_noise", "sum")))
    t = t.fillna(0).astype(np.int64)
    t = t[t.groupby("split")["units"].transform("sum") > 0]  # splits without units
    for col in ("items", "noise", "changes"):
        t[f"{col}_share"] = t[col] / t.groupby("split")[col].transform("sum")  # NaN: none in the split
    t["precision"] = t["hits"] / t["changes"].where(t["changes"] > 0)
    t = t.drop(columns="hits").reset_index()
    order = {s: i for i, s in enumerate(names.SPLITS)}
    return t.sort_values(["split", "length"], key=lambda c: c.map(order) if c.name == "split" else c.cat.codes,
                         kind="stable").reset_index(drop=True)


def clean_windows(windows: pd.DataFrame) -> pd.DataFrame:
    """The oracle condition: every window with its pre-noise history and target."""
    out = windows.copy()
    out["history"] = out["history_clean"]
    out["target"] = out["target_clean"]
    out["history_noise"] = [[0] * len(h) for h in out["history_clean"]]
    out["target_noise"] = 0
    return out


def run_clean(windows_path, out_path) -> None:
    """The workflow step of rule clean_windows (the `clean` condition)."""
    cols = ["history", "history_noise", "history_clean", "target", "target_noise", "target_clean"]
    write_parquet(clean_windows(read_parquet(windows_path, cols)), out_path)
