"""Data stage: read a source's raw files (llm4dsr.sources) and preprocess them into the
documented log.

A source's reader returns two frames in file order: interactions (``user``, ``item`` as
strings, ``timestamp`` int64 seconds, ``rating`` float or NaN) and items (``item``,
``title`` or None); ``attrs["path"]`` names the file each came from. A timestamp that
is not a finite number of seconds stops the run (it decides the order of a history).
:func:`check_raw` then drops or repairs the rows with data problems (an item without a
title or missing from the items file, a blank user id, a duplicate (user, item, timestamp) row, a
rating that is not a number when ``min_rating`` is set, an item id listed with two
titles: the first is kept), counts them, and warns, or stops when they exceed
``max_dropped_fraction`` of the interactions; it also cuts titles longer than
``max_title_chars``. :func:`preprocess` turns the checked frames into
``interactions.parquet`` and ``items.parquet`` (see docs/outputs.md). Steps, in order:
``min_rating``, a random ``max_items`` sample (the paper's Movies sample), each
user's most recent ``max_items_per_user``, iterated k-core, then a random ``max_users``
sample and the k-core again (sampling users *after* the k-core keeps a sparse source's
structure: sampled first, most of its users and items would fall below k), contiguous ids.

Downloads (ml-1m, Amazon) land in ``resources/<dataset>/``. The ml-1m zip is checked
against the md5 GroupLens publishes (``ml-1m.zip.md5``); no checksums are published
for the Amazon files, so :func:`llm4dsr.sources.download` records the sha256 of what it
fetched in ``<file>.sha256`` beside it, for the user to compare across machines.
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from llm4dsr import prompts, sources, windows
from llm4dsr.io import Llm4dsrError, write_json, write_parquet
from llm4dsr.names import EVAL_SPLITS, SPLITS

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- data problems
# What check_raw counts, in the order a row is attributed to its first problem. The
# first five drop the row; conflicting_title keeps it, with the item's first title.
PROBLEMS = {
    "blank_user": "rows without a user id",
    "duplicate_row": "duplicate (user, item, timestamp) rows",
    "unknown_item": "items missing from the items file",
    "untitled_item": "items without a title",
    "unrated": "ratings that are not a number (min_rating)",
    "conflicting_title": "items listed twice with different titles (the first is kept)",
}
EXAMPLES = 3  # offending rows shown per problem


def cut_title(title: str, limit: int | None) -> str:
    """``title`` if it has at most ``limit`` characters, else cut at a word boundary (when
    one is in its second half) and ended with "…", ``limit`` characters at most."""
    if limit is None or len(title) <= limit:
        return title
    head = title[:limit - 1]
    space = head.rfind(" ")
    if space >= limit // 2:
        head = head[:space]
    return head.rstrip(" ,;:-/(") + "…"


def _row(df: pd.DataFrame, i: int) -> str:
    r = df.iloc[i]
    return f"row {int(r['row']) + 1} (user {r['user']!r}, item {r['item']!r}, timestamp {r['timestamp']})"


def check_raw(interactions: pd.DataFrame, items: pd.DataFrame, dataset_cfg: dict,
              name: str = "dataset") -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Raw frames -> (interactions without problem rows, one titled row per item, report).

    Rows with a data problem (PROBLEMS) are dropped, or kept with a repaired title, and
    counted. Up to ``max_dropped_fraction`` of the interactions the run goes on with a
    warning; above it, it stops. Either way the message gives each problem's count and
    its first offending rows, and the report (stats.json ``problems``) records them.
    Titles longer than ``max_title_chars`` are cut (:func:`cut_title`) and counted.
    """
    dotted = f"datasets.{name}"
    key = f"config {dotted}"
    files = {"interactions": interactions.attrs.get("path", "interactions"), "items": items.attrs.get("path", "items")}
    df = interactions.assign(row=np.arange(len(interactions)))
    min_rating = dataset_cfg["min_rating"]
    if min_rating is not None and len(df) and df["rating"].isna().all():
        raise Llm4dsrError(f"{key}.min_rating: {files['interactions']} has no ratings")
    titled = items[items["title"].notna()]
    first = titled.drop_duplicates("item", keep="first")
    n_titles = titled.drop_duplicates(["item", "title"]).groupby("item").size()
    conflicting = n_titles.index[n_titles > 1]
    listed = set(items["item"])
    has_title = set(first["item"])
    masks = {
        "blank_user": (df["user"].str.strip() == "").to_numpy(),  # else one user '' of many people
        "duplicate_row": df.duplicated(["user", "item", "timestamp"], keep="first").to_numpy(),
        "unknown_item": ~df["item"].isin(listed).to_numpy(),
        "untitled_item": ~df["item"].isin(has_title).to_numpy(),
        "unrated": df["rating"].isna().to_numpy() if min_rating is not None else np.zeros(len(df), bool),
        "conflicting_title": df["item"].isin(conflicting).to_numpy(),
    }
    seen = np.zeros(len(df), dtype=bool)
    drop = np.zeros(len(df), dtype=bool)
    report: dict = {}
    for problem, mask in masks.items():
        mask = mask & ~seen  # each row counts once, under its first problem
        seen |= mask
        if problem != "conflicting_title":
            drop |= mask
        if not mask.any():
            continue
        where = np.flatnonzero(mask)
        entry = {"rows": int(mask.sum()), "items": int(df["item"].iloc[where].nunique()),
                 "first": [_row(df, i) for i in where[:EXAMPLES]]}
        if problem == "conflicting_title":
            shown = df["item"].iloc[where].unique()[:EXAMPLES]
            entry["first"] = [f"item {i!r}: " + " / ".join(repr(cut_title(t, 60)) for t in
                                                           titled.loc[titled["item"] == i, "title"].unique()[:2])
                              for i in shown]
        report[problem] = entry
    kept = df[~drop].drop(columns="row")
    kept.attrs = interactions.attrs
    affected = int(seen.sum())
    fraction = affected / max(len(df), 1)
    limit = dataset_cfg["max_dropped_fraction"]
    if report:
        parts = "; ".join(f"{p.replace('_', ' ')} {e['rows']} rows of {e['items']} items "
                          f"(first: {', '.join(e['first'])})" for p, e in report.items())
        head = (f"{files['interactions']} / {files['items']}: data problems drop or alter {affected} of "
                f"{len(df)} interactions ({fraction:.2%}): {parts}")
        if fraction > limit:
            raise Llm4dsrError(f"{key}.max_dropped_fraction: {head}; that is more than {limit:g}: fix the files "
                               f"or raise {dotted}.max_dropped_fraction")
        log.warning("%s (within %s.max_dropped_fraction %g)", head, dotted, limit)
    catalogue = first.assign(title=[cut_title(t, dataset_cfg["max_title_chars"]) for t in first["title"]])
    used = catalogue["item"].isin(kept["item"]).to_numpy()
    cut = used & (catalogue["title"] != first["title"]).to_numpy()
    titles_cut = {"items": int(cut.sum()), "limit": dataset_cfg["max_title_chars"],
                  "longest": int(first["title"][used].str.len().max()) if used.any() else 0}
    if cut.any():
        log.warning("%s: %d titles longer than %s.max_title_chars=%s characters cut (the longest had %d), e.g. %r",
                    files["items"], titles_cut["items"], dotted, titles_cut["limit"], titles_cut["longest"],
                    catalogue["title"][cut].iloc[0])
    catalogue.attrs = items.attrs
    return kept, catalogue, {"problems": report, "affected": affected, "affected_fraction": fraction,
                             "max_dropped_fraction": limit, "titles_cut": titles_cut}


# --------------------------------------------------------------------------- preprocessing
def natural_order(ids: np.ndarray) -> np.ndarray:
    """Unique raw ids, numerically sorted when all are integers, else as strings."""
    uniq = np.unique(np.asarray(ids, dtype=str))
    if all(s.isdigit() for s in uniq):
        return uniq[np.argsort([int(s) for s in uniq], kind="stable")]
    return uniq


def kcore(df: pd.DataFrame, k: int) -> pd.DataFrame:
    """Keep users and items with >= k interactions, repeated until nothing changes."""
    while len(df):
        keep = (df.groupby("user")["item"].transform("size") >= k) & \
               (df.groupby("item")["user"].transform("size") >= k)
        if keep.all():
            break
        df = df[keep]
    return df


def unique_titles(titles: list[str], limit: int | None = None) -> list[str]:
    """Make titles distinct in order: the 2nd "X" becomes "X [2]", the 3rd "X [3]", ...

    Distinct as the LLM reads them (prompts.display_title), so that no two items share
    a title in a prompt, in the suggestion trie or in grounding. With ``limit``
    (max_title_chars) the title is cut further to leave room for its suffix."""
    seen: set[str] = set()
    out = []
    for title in titles:
        new, k = title, 2
        while prompts.display_title(new) in seen:
            suffix = f" [{k}]"
            base = title if limit is None else cut_title(title, max(limit - len(suffix), 1))
            new, k = base + suffix, k + 1
        seen.add(prompts.display_title(new))
        out.append(new)
    return out


def _sample(df: pd.DataFrame, col: str, n: int | None, rng: np.random.Generator) -> pd.DataFrame:
    ids = natural_order(df[col].to_numpy())
    if n is None or n >= len(ids):
        return df
    return df[df[col].isin(rng.choice(ids, size=n, replace=False))]


# The steps of stats.json in the order the pipeline runs them (the JSON's keys are sorted).
STEPS = ("read", "checked", "min_rating", "max_items", "max_items_per_user", "kcore", "max_users")


def preprocess(interactions: pd.DataFrame, items: pd.DataFrame, dataset_cfg: dict, seed: int,
               name: str = "dataset") -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Checked frames (:func:`check_raw`) -> (interactions, items, trace of counts after each step)."""
    key = f"config datasets.{name}"
    titled = items[items.title.notna()].drop_duplicates("item", keep="first")
    df = interactions.assign(row=np.arange(len(interactions)))  # file order breaks time ties
    trace = {"raw": _counts(df)}
    df = df[df["item"].isin(titled["item"])]
    trace["titled"] = _counts(df)
    if dataset_cfg["min_rating"] is not None:
        if df.rating.isna().all():
            raise Llm4dsrError(f"{key}.min_rating: this source has no ratings")
        top = df.rating.max()
        df = df[df.rating >= dataset_cfg["min_rating"]]
        trace["min_rating"] = _counts(df)
        if df.empty:  # else the k-core would be blamed
            raise Llm4dsrError(f"{key}.min_rating: no rating is at least {dataset_cfg['min_rating']:g} "
                               f"(the highest is {top:g})")
    rng = np.random.default_rng(seed)
    if dataset_cfg["max_items"] is not None:
        df = _sample(df, "item", dataset_cfg["max_items"], rng)
        trace["max_items"] = _counts(df)
    df = df.sort_values(["user", "timestamp", "row"], kind="stable")
    if dataset_cfg["max_items_per_user"]:
        df = df.groupby("user", sort=False).tail(dataset_cfg["max_items_per_user"])
        trace["max_items_per_user"] = _counts(df)
    df = kcore(df, dataset_cfg["kcore"])
    trace["kcore"] = _counts(df)
    if dataset_cfg["max_users"] is not None:
        cored = trace["kcore"]
        df = kcore(_sample(df, "user", dataset_cfg["max_users"], rng), dataset_cfg["kcore"])
        trace["max_users"] = kept = _counts(df)
        # on a sparse source the sample's own k-core can collapse (972 users -> 300 -> 10):
        # a study of what is left would not be a sample of the data
        sampled = min(dataset_cfg["max_users"], cored["users"])
        if kept["users"] < sampled / 2:
            raise Llm4dsrError(
                f"{key}.max_users: a sample of {sampled} of the {cored['users']} users the {dataset_cfg['kcore']}-core "
                f"keeps leaves {kept['users']} users, {kept['items']} items, {kept['interactions']} interactions "
                f"once the k-core is enforced again (the sample is too sparse to keep it): raise max_users (null "
                f"= all {cored['users']}) or lower kcore")
    if df.empty:
        raise Llm4dsrError(f"{key}.kcore: no interactions left after filtering ({trace})")

    users = natural_order(df.user.to_numpy())
    raw_items = natural_order(df["item"].to_numpy())
    out = pd.DataFrame({"user": _index(users, df.user.to_numpy()),
                        "timestamp": df.timestamp.to_numpy(np.int64), "row": df.row.to_numpy(),
                        "item": _index(raw_items, df["item"].to_numpy()) + 1})
    out = out.sort_values(["user", "timestamp", "row"], kind="stable", ignore_index=True)
    out.insert(1, "pos", out.groupby("user").cumcount().astype(np.int64))
    out = out[["user", "pos", "timestamp", "item"]].astype(np.int64)

    title_of = dict(zip(titled["item"], titled.title))
    items_out = pd.DataFrame({
        "item": np.arange(1, len(raw_items) + 1, dtype=np.int64),
        "title": unique_titles([title_of[i] for i in raw_items], dataset_cfg["max_title_chars"]),
        "raw_id": raw_items.astype(object),
        "count": np.bincount(out["item"], minlength=len(raw_items) + 1)[1:].astype(np.int64),
    })
    return out, items_out, trace


def _index(order: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Position of each value in ``order`` (a permutation of the unique values)."""
    lookup = {v: i for i, v in enumerate(order)}
    return np.fromiter((lookup[v] for v in values), dtype=np.int64, count=len(values))


def _counts(df: pd.DataFrame) -> dict[str, int]:
    return {"interactions": len(df), "users": int(df.user.nunique()), "items": int(df["item"].nunique())}


def stats(interactions: pd.DataFrame, items: pd.DataFrame, window_cfg: dict, seed: int) -> dict:
    """Dataset statistics, including the clean windows per split (the noise stage's split)
    and the valid and test windows and distinct users the study keeps (max_eval_windows):
    users are the unit of independence of every interval the study reports."""
    wins = windows.split_windows(interactions, window_cfg)
    per_split = wins.split.value_counts()
    kept = windows.sample_eval(wins, window_cfg["max_eval_windows"], seed, window_cfg["max_test_windows"])
    lengths = interactions.groupby("user").size()
    n_users, n_items = len(lengths), len(items)
    return {
        "users": n_users, "items": n_items, "interactions": len(interactions),
        "windows": {s: int(per_split.get(s, 0)) for s in SPLITS},
        "eval_windows_kept": {s: int((kept.split == s).sum()) for s in EVAL_SPLITS},
        "eval_users_kept": {s: int(kept.user[kept.split == s].nunique()) for s in EVAL_SPLITS},
        "mean_history_length": float(lengths.mean()),
        "mean_window_history": float(np.minimum(wins.target_pos, window_cfg["max_history"]).mean()),
        "density": len(interactions) / (n_users * n_items),
    }


def run(dataset_cfg: dict, window_cfg: dict, seed: int, out_dir: str | Path,
        raw_dir: str | Path | None = None, name: str = "dataset") -> dict:
    """Read, preprocess and write interactions.parquet, items.parquet, stats.json."""
    out_dir = Path(out_dir)
    raw_inter, raw_items = sources.load_raw(dataset_cfg, raw_dir, name)
    log.info("%s: read %d interactions, %d items (%s)", name, len(raw_inter), len(raw_items), dataset_cfg["source"])
    checked, catalogue, checks = check_raw(raw_inter, raw_items, dataset_cfg, name)
    inter, items, trace = preprocess(checked, catalogue, dataset_cfg, seed, name)
    # preprocess's "raw" (and "titled") are the checked frames
    trace = {"read": _counts(raw_inter), "checked": trace.pop("raw"),
             **{k: v for k, v in trace.items() if k != "titled"}}
    for step, counts in trace.items():
        log.info("%s: after %s: %s", name, step, counts)
    summary = {"source": dataset_cfg["source"], "steps": trace, **checks, **stats(inter, items, window_cfg, seed)}
    if window_cfg["split_mode"] == "global_time" and inter["timestamp"].nunique() == 1:
        raise Llm4dsrError(f"config window.split_mode: global_time, but every timestamp of dataset {name} is "
                           f"{inter['timestamp'].iloc[0]}: the split would follow file order, not time (fix the "
                           f"timestamps, or use split_mode last_per_user)")
    empty = [s for s in SPLITS if not summary["windows"][s]]
    if empty:  # backbones train, select and test on these: stop here, not in a later job
        key = "split" if window_cfg["split_mode"] == "global_time" else "split_mode"
        raise Llm4dsrError(f"config window.{key}: {window_cfg[key]} leaves the {' and '.join(empty)} split(s) of "
                           f"dataset {name} without windows ({sum(summary['windows'].values())} windows in all, "
                           f"{summary['interactions']} interactions): the data is too small")
    test_users, floor = summary["eval_users_kept"]["test"], window_cfg["min_test_users"]
    if test_users < floor:  # the power floor, checked before any expensive job
        more = "" if window_cfg["split_mode"] == "last_per_user" else ", split_mode last_per_user, a larger test share"
        raise Llm4dsrError(f"config window.min_test_users: dataset {name} keeps {summary['eval_windows_kept']['test']} "
                           f"test windows from {test_users} users ({summary['users']} users in all), fewer than "
                           f"{floor}: no interval on so few users can tell the study's conditions apart; give it more "
                           f"test users (datasets.{name}.max_users, kcore{more}, window.max_eval_windows) or lower "
                           f"window.min_test_users knowing that")
    write_parquet(inter, out_dir / "interactions.parquet")
    write_parquet(items, out_dir / "items.parquet")
    write_json(summary, out_dir / "stats.json")
    log.info("%s: %s", name, {k: v for k, v in summary.items() if k != "steps"})
    return summary
