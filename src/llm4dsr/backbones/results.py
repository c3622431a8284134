"""The results table of a noise setting: backbone test metrics by condition, with intervals.

Each run (model, condition, seed) leaves the rank of every test window's target. A
condition's metric is the mean over seeds and test windows of the per-window metric;
its interval comes from a bootstrap that resamples seeds and, independently, users
(the unit of independence: a user's test windows are drawn together). Conditions of
a model share their test windows and seeds, so a difference between two conditions has
a paired interval, drawn with the same replicates: each condition minus ``noisy`` (what
the correction does) and ``clean`` minus each condition (what remains of the noise).
A difference is a finding only when its interval excludes 0; the Markdown marks those.

Given each condition's windows, the table also holds its reference levels (DESIGN.md
section 9): a most-popular list built from the condition's train windows (``model`` =
``mostpop``, llm4dsr.backbones.reference), with each backbone minus it on the same test
windows (``{metric}_diff_mostpop``), and the random ranking's level in the Markdown.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from .. import intervals
from ..io import Llm4dsrError, atomic_path, read_catalogue, read_json, read_parquet, write_text
from ..streams import rng_for
from . import reference
from .trainer import ranks_path

BASELINE, ORACLE, MOSTPOP = "noisy", "clean", reference.MODEL
SHOWN = ("ndcg@10", "hr@10")  # the paired differences the Markdown table shows


def per_window(ranks: np.ndarray, metric: str) -> np.ndarray:
    """A metric of each window from its target's rank: hr@K or ndcg@K."""
    kind, k = metric.split("@")
    hit = ranks <= int(k)
    return hit.astype(float) if kind == "hr" else np.where(hit, 1.0 / np.log2(ranks + 1.0), 0.0)


def _read_runs(json_paths: Iterable[str | Path], csv_path) -> pd.DataFrame:
    records = []
    for p in json_paths:
        r = read_json(p)
        missing = [k for k in ("model", "condition", "seed", "test") if k not in r]
        if missing:
            raise Llm4dsrError(f"{p}: missing key(s) {', '.join(missing)}")
        ranks = read_parquet(ranks_path(p), ["window", "user", "rank"]).sort_values("window", kind="stable")
        records.append({"model": r["model"], "condition": r["condition"], "seed": r["seed"], **r["test"],
                        "best_epoch": r.get("best_epoch"), "train_seconds": r.get("train_seconds"),
                        "ranks": ranks, "path": str(p)})
    if not records:
        raise Llm4dsrError(f"{csv_path}: no backbone results to aggregate")
    df = pd.DataFrame(records)
    if df.duplicated(["model", "condition", "seed"]).any():
        raise Llm4dsrError(f"{csv_path}: duplicate (model, condition, seed) among the inputs")
    return df


def aggregate(json_paths: Iterable[str | Path], csv_path: str | Path, md_path: str | Path, intervals_cfg: dict,
              seed: int, windows: Mapping[str, str | Path] | None = None,
              catalogue: str | Path | None = None) -> pd.DataFrame:
    """results.csv / results.md of one noise setting (docs/outputs.md).

    Rows keep the order in which (model, condition) first appear in ``json_paths``. With
    ``windows`` (condition -> its windows.parquet) and ``catalogue`` (items.parquet: the
    items ranked), ``mostpop`` rows follow, one per condition of ``windows``, and each
    backbone row of such a condition gets its difference to them.
    """
    df = _read_runs(json_paths, csv_path)
    metrics = sorted((c for c in df.columns if "@" in c), key=lambda c: (c.split("@")[0], int(c.split("@")[1])))
    n_items = None
    pop: dict[str, tuple[pd.DataFrame, dict]] = {}
    if windows:
        if catalogue is None:
            raise Llm4dsrError(f"{csv_path}: the most-popular reference needs the catalogue (items.parquet)")
        n_items = read_catalogue(catalogue).n_items
        pop = {c: reference.mostpop(read_parquet(p, ["window", "user", "split", "target"]), n_items, metrics)
               for c, p in windows.items()}
        first = next(iter(windows))
        for c, (t, _) in pop.items():  # every condition's list on the same test windows: checked once here
            if not np.array_equal(t["window"].to_numpy(), pop[first][0]["window"].to_numpy()):
                raise Llm4dsrError(f"{windows[c]}: its test windows differ from those of {windows[first]}")
    rows = []
    for model, runs in df.groupby("model", sort=False):
        seeds, test, values = _run_values(model, runs, metrics, csv_path)
        extra = {c: {"best_epoch_mean": float(g["best_epoch"].mean()), "train_seconds_mean": float(g["train_seconds"].mean())}
                 for c, g in runs.groupby("condition", sort=False)}
        rows += _rows(model, len(seeds), test, values, metrics, extra, intervals_cfg, seed,
                      _aligned(pop, test, windows, csv_path))
    if pop:
        test = next(iter(pop.values()))[0]
        values = {c: {m: v[None, :] for m, v in per.items()} for c, (_, per) in pop.items()}  # one "seed"
        rows += _rows(MOSTPOP, 1, test, values, metrics, {}, intervals_cfg, seed, None)
    table = pd.DataFrame(rows)
    with atomic_path(csv_path) as tmp:
        table.round(6).to_csv(tmp, index=False)
    write_text(_markdown(table, metrics, intervals_cfg["level"], n_items), md_path)
    return table


def _aligned(pop: dict, test: pd.DataFrame, windows, csv_path) -> dict[str, dict[str, np.ndarray]]:
    """condition -> metric -> the most-popular list's per-window values, on the windows
    (in the order) of a model's runs (the lists share their windows: checked in aggregate)."""
    if pop:
        c, (t, _) = next(iter(pop.items()))
        if not np.array_equal(t["window"].to_numpy(), test["window"].to_numpy()):
            raise Llm4dsrError(f"{windows[c]}: its test windows differ from those the backbone runs of {csv_path} "
                               "were tested on")
    return {c: per for c, (_, per) in pop.items()}


def selection_gap(json_paths: Iterable[str | Path], csv_path: str | Path, md_path: str | Path) -> pd.DataFrame:
    """The test-selection diagnostic table (backbone.test_selection_diagnostic): per
    (model, condition), the mean over seeds of each test metric's gap between a selection
    on the test split and the reported, validation-selected, run. A diagnostic of what the
    reference code's flaw would add to its numbers, never a result."""
    records = []
    for p in json_paths:
        r = read_json(p)
        if "test_selection_diagnostic" not in r:
            raise Llm4dsrError(f"{p}: no test_selection_diagnostic (run with backbone.test_selection_diagnostic)")
        d = r["test_selection_diagnostic"]
        records.append({"model": r["model"], "condition": r["condition"], "seed": r["seed"],
                        "select_metric": d["select_metric"], "valid_selected_epoch": d["valid_selected_epoch"],
                        "test_selected_epoch": d["epoch"], **{f"{k}_gap": v for k, v in d["gap"].items()}})
    if not records:
        raise Llm4dsrError(f"{csv_path}: no backbone results")
    df = pd.DataFrame(records)
    gaps = sorted((c for c in df.columns if c.endswith("_gap")),
                  key=lambda c: (c.split("@")[0], int(c.split("@")[1].removesuffix("_gap"))))
    g = df.groupby(["model", "condition"], sort=False)
    table = g.size().rename("seeds").to_frame()
    table["select_metric"] = g["select_metric"].first()
    table["valid_selected_epoch_mean"] = g["valid_selected_epoch"].mean()
    table["test_selected_epoch_mean"] = g["test_selected_epoch"].mean()
    for c in gaps:
        table[f"{c}_mean"] = g[c].mean()
        table[f"{c}_std"] = g[c].std(ddof=1)
    table = table.reset_index()
    with atomic_path(csv_path) as tmp:
        table.round(6).to_csv(tmp, index=False)
    head = ["model", "condition", "seeds", "epoch (valid → test)", *(c.removesuffix("_gap").upper() for c in gaps)]
    lines = ["**Diagnostic, not a result.** How much higher each test metric would be if the same runs "
             f"were selected on the test split's {table['select_metric'].iloc[0].upper()}, as the reference code "
             "selects (mean ± std over seeds of test-selected minus reported). The study's results select on "
             "validation; these numbers only size the reference code's flaw.", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [r["model"], r["condition"], str(r["seeds"]),
                 f"{r['valid_selected_epoch_mean']:.1f} → {r['test_selected_epoch_mean']:.1f}"]
        for c in gaps:
            cell = f"{r[f'{c}_mean']:+.4f}"
            if not math.isnan(r[f"{c}_std"]):
                cell += f" ± {r[f'{c}_std']:.4f}"
            cells.append(cell)
        lines.append("| " + " | ".join(cells) + " |")
    write_text("\n".join(lines) + "\n", md_path)
    return table


def _run_values(model: str, runs: pd.DataFrame, metrics: list[str], csv_path
                ) -> tuple[list, pd.DataFrame, dict[str, dict[str, np.ndarray]]]:
    """(seeds, test windows: window, user; condition -> metric -> [seeds, windows]) of ``model``'s runs."""
    seeds = sorted(runs["seed"].unique())
    conditions = list(dict.fromkeys(runs["condition"]))
    first = runs.iloc[0]["ranks"]
    windows = first["window"].to_numpy()
    values: dict[str, dict[str, np.ndarray]] = {}  # condition -> metric -> [seeds, windows]
    for condition in conditions:
        part = runs[runs["condition"] == condition].set_index("seed")
        if sorted(part.index) != seeds:
            raise Llm4dsrError(f"{csv_path}: {model}/{condition} has seeds {sorted(part.index)}, others {seeds}")
        for s in seeds:
            if not np.array_equal(part.at[s, "ranks"]["window"].to_numpy(), windows):
                raise Llm4dsrError(f"{part.at[s, 'path']}: its test windows differ from those of the other runs")
        r = np.stack([part.at[s, "ranks"]["rank"].to_numpy(dtype=float) for s in seeds])
        values[condition] = {m: per_window(r, m) for m in metrics}
    return seeds, first[["window", "user"]], values


def _rows(model: str, n_seeds: int, test: pd.DataFrame, values: dict[str, dict[str, np.ndarray]], metrics: list[str],
          extra: dict, intervals_cfg: dict, seed: int, mostpop: dict[str, dict[str, np.ndarray]] | None) -> list[dict]:
    """One row per condition of ``model``: means, intervals and paired differences (against
    ``noisy``, ``clean`` and, with ``mostpop``, the same condition's most-popular list)."""
    users = test["user"].to_numpy()
    resamples, level = intervals_cfg["resamples"], intervals_cfg["level"]
    window_w = intervals.user_weights(users, resamples, seed, f"backbone-{model}")
    counts = rng_for(seed, f"backbone-seeds-{model}").multinomial(n_seeds, np.full(n_seeds, 1 / n_seeds),
                                                                  size=resamples).astype(float)

    def replicates(v: np.ndarray) -> np.ndarray:  # [seeds, windows] -> [resamples]
        return ((counts @ v) * window_w).sum(axis=1) / (n_seeds * window_w.sum(axis=1))

    def difference(row: dict, name: str, a: np.ndarray, b: np.ndarray) -> None:
        row[name] = float(a.mean() - b.mean())
        row[f"{name}_ci_low"], row[f"{name}_ci_high"] = intervals.interval(replicates(a - b), level)

    out = []
    for condition in values:
        row = {"model": model, "condition": condition, "seeds": n_seeds, "n_test": len(test),
               "test_users": int(len(np.unique(users)))}
        for m in metrics:
            v = values[condition][m]
            row[f"{m}_mean"] = float(v.mean())
            row[f"{m}_std"] = float(v.mean(axis=1).std(ddof=1)) if n_seeds > 1 else math.nan
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = intervals.interval(replicates(v), level)
            for name, a, b in ((f"{m}_diff_{BASELINE}", condition, BASELINE), (f"{m}_gap_{ORACLE}", ORACLE, condition)):
                if a in values and b in values and a != b:
                    difference(row, name, values[a][m], values[b][m])
            if mostpop and condition in mostpop:  # the same windows and seeds: the list has no seed
                difference(row, f"{m}_diff_{MOSTPOP}", v, mostpop[condition][m][None, :])
            if BASELINE in values:
                base = values[BASELINE][m].mean()
                row[f"{m}_gain_pct"] = 100 * (row[f"{m}_mean"] / base - 1) if base else math.nan
        row.update(extra.get(condition, {"best_epoch_mean": math.nan, "train_seconds_mean": math.nan}))
        out.append(row)
    return out


def excludes_zero(row: pd.Series, name: str) -> bool:
    """Whether the interval of difference ``name`` lies wholly on one side of 0."""
    lo, hi = row.get(f"{name}_ci_low"), row.get(f"{name}_ci_high")
    return bool(pd.notna(lo) and pd.notna(hi) and (lo > 0 or hi < 0))


def _diff_cell(row: pd.Series, name: str) -> str:
    if pd.isna(row.get(name)):
        return ""
    cell = f"{row[name]:+.4f} [{row[f'{name}_ci_low']:+.4f}, {row[f'{name}_ci_high']:+.4f}]"
    return f"**{cell}**" if excludes_zero(row, name) else cell


def _markdown(table: pd.DataFrame, metrics: list[str], level: float, n_items: int | None = None) -> str:
    pct = f"{100 * level:g}%"
    users = ", ".join(f"{m}: {n} test windows, {u} users" for m, n, u in
                      table.groupby("model", sort=False)[["n_test", "test_users"]].first().itertuples())
    head = ["model", "condition", "seeds", *(m.upper() for m in metrics)]
    lines = [f"Test metrics: mean over seeds and test windows [{pct} interval; seeds and users resampled] ({users}).",
             "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, r in table.iterrows():
        cells = [r["model"], r["condition"], str(r["seeds"])]
        cells += [f"{r[f'{m}_mean']:.4f} [{r[f'{m}_ci_low']:.4f}, {r[f'{m}_ci_high']:.4f}]" for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    shown = [m for m in SHOWN if m in metrics] or metrics[:1]
    cols = [(f"{m}_diff_{BASELINE}", f"{m.upper()} minus {BASELINE}") for m in shown]
    cols += [(f"{m}_gap_{ORACLE}", f"{ORACLE} minus it, {m.upper()}") for m in shown]
    cols += [(f"{m}_diff_{MOSTPOP}", f"minus {MOSTPOP}, {m.upper()}") for m in shown]
    cols = [(c, title) for c, title in cols if c in table]
    if cols:
        lines += ["", f"Paired differences on the same test windows and seeds [{pct} interval]. **Bold**: the "
                  "interval excludes 0 (a finding); otherwise the study cannot tell the two apart at this size.",
                  "", "| model | condition | " + " | ".join(t for _, t in cols) + " |", "|" + "---|" * (len(cols) + 2)]
        for _, r in table.iterrows():
            lines.append(f"| {r['model']} | {r['condition']} | " + " | ".join(_diff_cell(r, c) for c, _ in cols) + " |")
    if n_items:
        lines += ["", reference_text(n_items, shown)]
    return "\n".join(lines) + "\n"


def reference_text(n_items: int, metrics: Iterable[str]) -> str:
    """The reference levels of a results table, in one sentence."""
    level = reference.random_level(n_items, metrics)
    return (f"Reference levels: `{MOSTPOP}` ranks the items by how often they are the target of the condition's "
            f"train windows (ties in a random order, its expected metric); a random ranking of the {n_items} items "
            "scores " + ", ".join(f"{m.upper()} {v:.4f}" for m, v in level.items()) + ".")
