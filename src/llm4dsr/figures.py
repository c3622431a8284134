"""Figures, tables and sentences of the report notebook (notebooks/report.ipynb).

Everything here reads workflow outputs (docs/outputs.md) and nothing else. Each
``fig_*`` function returns a matplotlib Figure with a title, labelled axes and units,
or None when its inputs are absent; the notebook then prints a note instead.

Every number carries its 95% interval (users resampled, see llm4dsr.intervals), every
figure draws the intervals, and a sentence calls a difference a finding only when the
interval of that paired difference excludes 0. Each detector and condition keeps one
colour in every figure (:func:`color`).
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from llm4dsr import names
from llm4dsr.names import LABELS, SPLITS, noise_rate
from llm4dsr.units import item_table

# roc_auc_within first: the headline, since a pooled ROC-AUC of probabilities normalised
# over each history also ranks by history length (DESIGN.md section 9)
METRIC_LABELS = {"roc_auc_within": "ROC-AUC within histories", "roc_auc": "ROC-AUC, pooled", "pr_auc": "PR-AUC",
                 "top1": "top-1"}


def label(name: str) -> str:
    return LABELS.get(name, name)


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.upper())


def injected(settings: Iterable[str]) -> list[str]:
    """The settings with injected noise (rate 0.0 has no noise mask to score against)."""
    return [s for s in settings if noise_rate(s) > 0]


# one colour per detector and condition, the same in every figure: the LLM in reds,
# the data as it is in black (noisy) and green (clean), the simple detectors in blues
COLORS = {"noisy": "#222222", "clean": "#2ca02c", "llm4dsr": "#d62728", "llm4dsr_no_uncertainty": "#ff9896",
          "llm_full_title": "#d62728", "llm_first_token": "#ff7f0e", "llm_trie": "#8c564b",
          "popularity": "#1f77b4", "cooccurrence": "#9467bd", "idtransformer": "#17becf", "random": "#7f7f7f",
          "llm_embedding": "#e7969c", "combined": "#e377c2", "combined_collab": "#bcbd22",
          "combined_no_embedding": "#6b6ecf", "mostpop": "#a07800"}
_SPARE = ["#aec7e8", "#98df8a", "#c5b0d5", "#c49c94", "#f7b6d2", "#dbdb8d", "#9edae5", "#ffbb78", "#c7c7c7"]


def color(name: str) -> str:
    """The colour of a detector or condition: fixed for the study's names; others (the
    threshold sweep's llm4dsr-pT, new conditions) take a spare colour by a stable rule."""
    if name in COLORS:
        return COLORS[name]
    sweep = names.SWEEP_CONDITION.fullmatch(name)
    if sweep:  # darker red for a stricter threshold
        import matplotlib.pyplot as plt

        return plt.get_cmap("Reds")(0.35 + 0.6 * float(sweep.group(1)) / 100)
    return _SPARE[sum(name.encode()) % len(_SPARE)]


def interval_text(value: float | None, ci: list | None, digits: int = 3, sign: bool = False) -> str:
    """``0.690 [0.578, 0.767]``; with ``sign``, ``+0.086 [-0.105, +0.277]``."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    return f.format(value) + (f" [{f.format(ci[0])}, {f.format(ci[1])}]" if ci else "")


def excludes_zero(ci: list | None) -> bool:
    return bool(ci) and (ci[0] > 0 or ci[1] < 0)


def _yerr(values, lows, highs) -> np.ndarray:
    """Asymmetric error bars [2, n] from interval bounds (0 where unknown)."""
    v, lo, hi = (np.asarray(x, dtype=float) for x in (values, lows, highs))
    return np.nan_to_num(np.vstack([v - lo, hi - v]), nan=0.0).clip(min=0)


# reading inputs

def find(path: str | Path) -> Path | None:
    """``path`` if it exists; otherwise print a note (the figure that needs it is skipped)."""
    path = Path(path)
    if path.exists():
        return path
    print(f"note: {path} not found; what needs it is skipped")
    return None


def read_scores(paths: dict[str, str | Path]) -> dict[str, pd.DataFrame]:
    """The score tables (detector -> path) of one noise setting that exist."""
    return {d: pd.read_parquet(p) for d, path in paths.items() if (p := find(path))}


def save(fig, name: str, figures_dir: str | Path | None) -> None:
    """Write ``fig`` as figures_dir/name.png and show it (the notebook's one image per figure)."""
    import matplotlib.pyplot as plt

    if fig is None:
        print(f"note: figure {name} skipped (inputs missing)")
        return
    if figures_dir is not None:
        Path(figures_dir).mkdir(parents=True, exist_ok=True)
        fig.savefig(Path(figures_dir) / f"{name}.png", dpi=110, bbox_inches="tight")
    plt.show()


def stats_table(stats: dict) -> pd.DataFrame:
    """stats.json as a readable two-column table (what was kept, and the evaluation's size)."""
    part = {key: stats[key] if key in stats else {} for key in ("windows", "eval_windows_kept", "eval_users_kept",
                                                                   "steps")}
    rows = [(key, stats[key]) for key in ("users", "items", "interactions") if key in stats]
    for split, n in part["windows"].items():
        rows.append((f"{split} windows", n))
    for split, n in part["eval_windows_kept"].items():
        users = part["eval_users_kept"][split] if split in part["eval_users_kept"] else None
        rows.append((f"{split} windows kept (distinct users)", f"{n} ({users})" if users is not None else n))
    for key in ("mean_history_length", "mean_window_history", "density"):
        if key in stats:
            rows.append((key.replace("_", " "), f"{stats[key]:.4g}"))
    from llm4dsr.data import STEPS

    order = {step: i for i, step in enumerate(STEPS)}  # the pipeline's order; any other step after them
    steps = sorted(part["steps"].items(), key=lambda kv: order.get(kv[0], len(STEPS)))
    for step, counts in steps:
        rows.append((f"after {step.replace('_', ' ')}",
                     f"{counts['users']} users, {counts['items']} items, {counts['interactions']} interactions"))
    return pd.DataFrame(rows, columns=["", "value"]).set_index("")


# detection

def curves(items: pd.DataFrame) -> dict | None:
    """ROC and PR curves of one detector on one split (item_table rows); None with one class."""
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    y, p = items["noise"].to_numpy(), items["prob"].to_numpy()
    if not 0 < y.sum() < len(y):
        return None
    fpr, tpr, _ = roc_curve(y, p)
    precision, recall, _ = precision_recall_curve(y, p)
    return {"fpr": fpr, "tpr": tpr, "recall": recall, "precision": precision, "base": y.mean(),
            "roc_auc": roc_auc_score(y, p), "pr_auc": average_precision_score(y, p)}


def fig_detection_curves(units: pd.DataFrame, scores: dict[str, pd.DataFrame], noise: str):
    """ROC (top row) and PR (bottom row) curves per split, pooled over the split's units."""
    import matplotlib.pyplot as plt

    if not scores:
        return None
    tables = {d: item_table(units, s, name=f"scores/{d}.parquet") for d, s in scores.items()}
    fig, axes = plt.subplots(2, len(SPLITS), figsize=(4.2 * len(SPLITS), 8), squeeze=False)
    for j, split in enumerate(SPLITS):
        roc, pr = axes[0, j], axes[1, j]
        for d, items in tables.items():
            c = curves(items[items["split"] == split])
            if c is None:
                continue
            roc.plot(c["fpr"], c["tpr"], color=color(d), label=f"{label(d)} ({c['roc_auc']:.3f})")
            pr.plot(c["recall"], c["precision"], color=color(d), label=f"{label(d)} ({c['pr_auc']:.3f})")
            base = c["base"]
        if not roc.lines:
            roc.text(0.5, 0.5, "no noise items in this split", ha="center", transform=roc.transAxes)
        else:
            roc.plot([0, 1], [0, 1], "k:", lw=1, label="chance (0.5)")
            pr.axhline(base, color="k", ls=":", lw=1, label=f"chance ({base:.3f})")
        users = units.loc[units["split"] == split, "user"].nunique()
        roc.set(title=f"ROC, {split} split ({users} users)", xlabel="false-positive rate (share of clean items flagged)",
                ylabel="true-positive rate (share of noise items flagged)", xlim=(0, 1), ylim=(0, 1.01))
        pr.set(title=f"precision-recall, {split} split ({users} users)", xlabel="recall (share of noise items flagged)",
               ylabel="precision (share of flagged items that are noise)", xlim=(0, 1), ylim=(0, 1.01))
        for ax, where in ((roc, "lower right"), (pr, "upper right")):
            if ax.lines:
                ax.legend(fontsize=6, title="detector (AUC)", title_fontsize=6, loc=where, framealpha=0.6)
    fig.suptitle(f"Noise detection on {noise}: every item of every unit, pooled per split")
    fig.tight_layout()
    return fig


def chance_top1(units: pd.DataFrame, split: str = "test") -> float:
    """Top-1 of a uniformly random pick: mean share of noise items in the units holding noise."""
    part = units[units["split"] == split]
    share = part["noise"].map(lambda n: sum(n) / len(n))
    share = share[share > 0]
    return float(share.mean()) if len(share) else math.nan


DETECTION_COLUMNS = ["noise", "detector", *(f"{m}{x}" for m in METRIC_LABELS for x in ("", "_ci_low", "_ci_high")),
                     "ece", "units", "roc_auc_within_units", "users", "noise_items"]


def detection_table(detections: dict[str, dict], detectors: list[str], split: str = "test") -> pd.DataFrame:
    """Long table from detection.json files: noise, detector (in ``detectors`` order), ROC-AUC
    within histories and pooled, PR-AUC, top-1 with their interval bounds, ECE and counts
    (units, units holding noise and clean items, users, noise items)."""
    rows = []
    for noise, report in detections.items():
        for det in (d for d in detectors if d in report):
            m = report[det].get(split, {})
            row = {"noise": noise, "detector": det, "ece": m.get("ece"), "units": m.get("units"),
                   "roc_auc_within_units": m.get("roc_auc_within_units"), "users": m.get("users"),
                   "noise_items": m.get("noise_items")}
            for k in METRIC_LABELS:
                ci = m.get(f"{k}_ci") or [None, None]
                row.update({k: m.get(k), f"{k}_ci_low": ci[0], f"{k}_ci_high": ci[1]})
            rows.append(row)
    return pd.DataFrame(rows, columns=DETECTION_COLUMNS)


def detection_wide(table: pd.DataFrame) -> pd.DataFrame:
    """Detector x (noise setting, metric) cells "value [low, high]", for display."""
    table = table.dropna(subset=["roc_auc"])
    cells = {}
    for r in table.itertuples(index=False):
        for m in ("roc_auc_within", "roc_auc", "top1"):
            ci = [getattr(r, f"{m}_ci_low"), getattr(r, f"{m}_ci_high")]
            cells[(r.detector, f"{r.noise} ({r.users} users)", metric_label(m))] = interval_text(
                getattr(r, m), None if pd.isna(ci[0]) else ci)
    if not cells:
        return pd.DataFrame()
    wide = pd.Series(cells).unstack([1, 2])
    wide = wide.reindex(list(dict.fromkeys(table["detector"])))
    wide.index = [label(d) for d in wide.index]
    return wide


def fig_detection_bars(table: pd.DataFrame, chance: dict[str, float], split: str = "test"):
    """ROC-AUC within histories and pooled, and top-1, per detector, grouped by noise
    setting, with chance levels."""
    import matplotlib.pyplot as plt

    table = table.dropna(subset=["roc_auc"])
    if table.empty:
        return None
    noises, dets = list(dict.fromkeys(table["noise"])), list(dict.fromkeys(table["detector"]))
    users = table.groupby("noise")["users"].max()
    fig, axes = plt.subplots(1, 3, figsize=(17, 4.8))
    width = 0.8 / len(dets)
    for ax, metric in zip(axes, ("roc_auc_within", "roc_auc", "top1")):
        for k, d in enumerate(dets):
            part = table[table["detector"] == d].set_index("noise").reindex(noises)
            ax.bar(np.arange(len(noises)) + (k - (len(dets) - 1) / 2) * width, part[metric].astype(float), width,
                   yerr=_yerr(part[metric], part[f"{metric}_ci_low"], part[f"{metric}_ci_high"]),
                   error_kw={"lw": 0.8, "capsize": 1.5}, color=color(d), label=label(d))
        for i, n in enumerate(noises):
            level = 0.5 if metric.startswith("roc_auc") else chance.get(n, np.nan)
            ax.hlines(level, i - 0.45, i + 0.45, colors="k", linestyles=":", label="chance" if i == 0 else None)
        ax.set(xticks=range(len(noises)), xticklabels=[f"{n}\n({users.get(n, 0):.0f} users)" for n in noises],
               xlabel="noise setting (model-rate)", ylabel=f"{metric_label(metric)} ({split} split, 0-1)",
               ylim=(0, 1), title=f"{metric_label(metric)} of each detector, with 95% intervals")
    handles, labels_ = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels_, loc="lower center", ncol=min(len(labels_), 5), fontsize=8)
    fig.suptitle(f"Noise detection quality, {split} split (intervals: users resampled)")
    fig.tight_layout(rect=(0, 0.12, 1, 1))
    return fig


def pooled_calibration(report: dict, detector: str) -> pd.DataFrame:
    """One detector's calibration bins (detection.json), pooled over the splits."""
    rows = [b for s in SPLITS for b in report[detector].get(s, {}).get("calibration", []) if b["count"]]
    if not rows:
        return pd.DataFrame(columns=["lo", "hi", "count", "mean_prob", "noise_rate"])
    df = pd.DataFrame(rows)
    df["p_sum"], df["y_sum"] = df["count"] * df["mean_prob"], df["count"] * df["noise_rate"]
    g = df.groupby(["lo", "hi"], as_index=False)[["count", "p_sum", "y_sum"]].sum()
    return g.assign(mean_prob=g["p_sum"] / g["count"], noise_rate=g["y_sum"] / g["count"])[
        ["lo", "hi", "count", "mean_prob", "noise_rate"]]


def fig_reliability(detections: dict[str, dict], detectors: list[str]):
    """Reliability diagram per noise setting: observed noise share against mean probability."""
    import matplotlib.pyplot as plt

    detections = {n: r for n, r in detections.items() if noise_rate(n) > 0}
    if not detections:
        return None
    fig, axes = plt.subplots(1, len(detections), figsize=(4.5 * len(detections), 4.5), squeeze=False)
    for ax, (noise, report) in zip(axes[0], detections.items()):
        for d in detectors:
            if d not in report:
                continue
            cal = pooled_calibration(report, d)
            if cal.empty:
                continue
            ece = (cal["count"] * (cal["mean_prob"] - cal["noise_rate"]).abs()).sum() / cal["count"].sum()
            ax.plot(cal["mean_prob"], cal["noise_rate"], "-", color=color(d), lw=1)
            ax.scatter(cal["mean_prob"], cal["noise_rate"], s=8 + 60 * np.sqrt(cal["count"] / cal["count"].max()),
                       color=color(d), label=f"{label(d)} (ECE {ece:.3f})")
        ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect calibration")
        ax.set(title=noise, xlabel="mean predicted noise probability in bin (0-1)",
               ylabel="observed share of noise items in bin (0-1)", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=6, loc="upper left", framealpha=0.6)
    fig.suptitle("Reliability of the noise probabilities (10 equal-width bins, all splits; marker area ~ items)")
    fig.tight_layout()
    return fig


def detection_summary(report: dict, noise: str, llm: str, split: str = "test") -> str:
    """Sentences on ``noise`` from its detection.json, headline first: each detector's mean
    ROC-AUC within histories, then pooled over all items, with their intervals; after each,
    the paired differences of the LLM score and of the LLM's contribution to the
    combination, called a finding only when the interval excludes 0."""
    part = {d: m[split] for d, m in report.items() if d != "paired" and m.get(split, {}).get("roc_auc") is not None}
    if llm not in part:
        return f"No {label(llm)} scores with injected noise on {noise}."
    users = part[llm]["users"]
    text = f"On {noise} ({split} split, {users} users, {part[llm]['noise_items']} noise items),"
    within = {d: m for d, m in part.items() if m.get("roc_auc_within") is not None}
    if llm in within:
        ranked = sorted(within, key=lambda d: -within[d]["roc_auc_within"])
        text += (f" mean ROC-AUC within a history ({within[llm]['roc_auc_within_units']} histories holding noise and "
                 "clean items; chance 0.5) from best to worst: " + ", ".join(
                     f"{label(d)} {interval_text(within[d]['roc_auc_within'], within[d]['roc_auc_within_ci'])}"
                     for d in ranked) + "." + _paired_sentences(report, llm, split, "roc_auc_within",
                                                                 "within-history ROC-AUC")
                 + " Pooled over all items (which also ranks by history length),")
    ranked = sorted(part, key=lambda d: -part[d]["roc_auc"])
    text += (" ROC-AUC from best to worst: " + ", ".join(
        f"{label(d)} {interval_text(part[d]['roc_auc'], part[d]['roc_auc_ci'])}" for d in ranked) + ".")
    return text + _paired_sentences(report, llm, split, "roc_auc", "ROC-AUC")


def _paired_sentences(report: dict, llm: str, split: str, metric: str, name: str) -> str:
    text = ""
    for pair, by_split in report.get("paired", {}).items():
        a, b = pair.split(" - ")
        if a != llm and a not in names.LLM_DETECTORS and a != "combined":
            continue
        d = by_split.get(split, {}).get(metric, {})
        if d.get("diff") is None:
            continue
        diff = interval_text(d["diff"], d["ci"], sign=True)
        verdict = (f"{label(a)} is {'higher' if d['diff'] > 0 else 'lower'}" if excludes_zero(d["ci"])
                   else "the study cannot tell them apart at this size")
        text += f" {label(a)} minus {label(b)}, {name} {diff}: {verdict}."
    return text


# backbones

def results_display(results: pd.DataFrame, metrics: Iterable[str] = ("ndcg@10", "hr@10")):
    """results.csv as model x condition: "mean [interval]" per metric, and on the first
    metric each condition minus noisy and each backbone minus the same condition's
    most-popular list; a difference whose interval excludes 0 in bold. An HTML table styled
    by pandas: the bold is CSS, so it renders (Markdown ``**`` would print as is). Its CSS ids
    come from its content, not pandas' random ones, so the same run writes the same notebook."""
    import hashlib

    from IPython.display import HTML

    out = results[["model", "condition", "seeds"]].copy()
    for m in metrics:
        out[m.upper()] = [interval_text(r[f"{m}_mean"], [r[f"{m}_ci_low"], r[f"{m}_ci_high"]], 4)
                          for _, r in results.iterrows()]
    bold = pd.DataFrame(False, index=out.index, columns=out.columns)
    m = list(metrics)[0]
    for key, title in ((f"{m}_diff_noisy", f"{m.upper()} minus noisy"), (f"{m}_diff_mostpop", f"{m.upper()} minus mostpop")):
        if key not in results:
            continue
        cells, marks = [], []
        for _, r in results.iterrows():
            ci = [r.get(f"{key}_ci_low"), r.get(f"{key}_ci_high")]
            cells.append("" if pd.isna(r.get(key)) else interval_text(r[key], ci, 4, sign=True))
            marks.append(bool(cells[-1]) and excludes_zero(ci))
        out[title], bold[title] = cells, marks
    out, bold = (df.set_index([results["model"], results["condition"]]).drop(columns=["model", "condition"])
                 for df in (out, bold))
    css = pd.DataFrame(np.where(bold.to_numpy(dtype=bool), "font-weight: bold", ""), index=out.index, columns=out.columns)
    uuid = hashlib.sha256(out.to_csv().encode()).hexdigest()[:8]  # distinct per table: ids must not clash
    return HTML(out.style.set_uuid(uuid).apply(lambda _: css, axis=None).to_html())


def reference_summary(df: pd.DataFrame, noise: str, n_items: int | None, metric: str = "ndcg@10") -> str:
    """The reference levels of a results table (DESIGN.md section 9): the random ranking's
    expected metric, the most-popular list's, and whether each backbone beats it on the
    same condition (noisy and clean), with the paired interval."""
    from llm4dsr.backbones.reference import random_level

    parts = []
    if n_items:
        parts.append(f"a random ranking of the {n_items} items scores {metric.upper()} "
                     f"{random_level(n_items, [metric])[metric]:.4f}")
    pop = df[df["model"] == "mostpop"].set_index("condition")
    for c in (c for c in ("noisy", "clean") if c in pop.index):
        r = pop.loc[c]
        parts.append(f"the most-popular list of {c} data {interval_text(r[f'{metric}_mean'], [r[f'{metric}_ci_low'], r[f'{metric}_ci_high']], 4)}")
    text = f"Reference levels on {noise}: " + "; ".join(parts) + "." if parts else ""
    key = f"{metric}_diff_mostpop"
    if key in df:
        for c in (c for c in ("noisy", "clean") if c in pop.index):
            rows = df[(df["condition"] == c) & df[key].notna()]
            found = []
            for _, r in rows.iterrows():
                ci = [r[f"{key}_ci_low"], r[f"{key}_ci_high"]]
                verdict = ("beats it" if ci[0] > 0 else "is below it") if excludes_zero(ci) else "cannot be told apart"
                found.append(f"{r['model']} {interval_text(r[key], ci, 4, sign=True)} ({verdict})")
            if found:
                text += f" Minus the most-popular list, on {c}: " + "; ".join(found) + "."
    return text


def _bounds(df: pd.DataFrame, metric: str):
    return df[f"{metric}_mean"], df[f"{metric}_ci_low"], df[f"{metric}_ci_high"]


def fig_metric_bars(results: dict[str, pd.DataFrame], metric: str = "ndcg@10"):
    """Grouped bars (mean over seeds and windows, 95% interval) per backbone, one panel per noise setting."""
    import matplotlib.pyplot as plt

    if not results:
        return None
    conds = list(dict.fromkeys(c for df in results.values() for c in df["condition"]))
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.5), squeeze=False, sharey=True)
    for ax, (noise, df) in zip(axes[0], results.items()):
        models = list(dict.fromkeys(df["model"]))
        width = 0.8 / len(conds)
        for k, c in enumerate(conds):
            part = df[df["condition"] == c].set_index("model").reindex(models)
            ax.bar(np.arange(len(models)) + (k - (len(conds) - 1) / 2) * width, part[f"{metric}_mean"], width,
                   yerr=_yerr(*_bounds(part, metric)), error_kw={"lw": 0.8, "capsize": 1.5}, color=color(c),
                   label=c)
        users = int(df["test_users"].max()) if "test_users" in df else 0
        ax.set(xticks=range(len(models)), xticklabels=models, xlabel="backbone",
               title=f"{noise} ({users} test users)", ylabel=f"test {metric.upper()} (0-1, mean, 95% interval)")
    handles, labels_ = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels_, loc="lower center", ncol=min(len(labels_), 6), fontsize=8, title="training data")
    fig.suptitle(f"Test {metric.upper()} of each backbone by training data (intervals: seeds and users resampled)")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig


def results_summary(df: pd.DataFrame, noise: str, metric: str = "ndcg@10") -> str:
    """Sentences per backbone: each correction minus noisy and clean minus llm4dsr, with
    their paired intervals; a difference is a finding only when its interval excludes 0."""
    lines = []
    for model, g in df[df["model"] != "mostpop"].groupby("model", sort=False):  # the reference: reference_summary
        g = g.set_index("condition")
        if "noisy" not in g.index or f"{metric}_diff_noisy" not in g:
            continue
        users = int(g["test_users"].max()) if "test_users" in g else 0
        found, unclear = [], []
        for c, r in g.drop(index="noisy").iterrows():
            ci = [r[f"{metric}_diff_noisy_ci_low"], r[f"{metric}_diff_noisy_ci_high"]]
            text = f"{c} {interval_text(r[f'{metric}_diff_noisy'], ci, 4, sign=True)}"
            (found if excludes_zero(ci) else unclear).append(text)
        line = f"{model} on {noise} ({users} test users), {metric.upper()} minus noisy: "
        line += ("findings: " + "; ".join(found) + ". " if found else "no condition differs from noisy. ")
        if unclear:
            line += "Not distinguishable from noisy at this size: " + "; ".join(unclear) + "."
        if "llm4dsr" in g.index and f"{metric}_gap_clean" in g and pd.notna(g.at["llm4dsr", f"{metric}_gap_clean"]):
            r = g.loc["llm4dsr"]
            ci = [r[f"{metric}_gap_clean_ci_low"], r[f"{metric}_gap_clean_ci_high"]]
            line += (f" Clean minus llm4dsr: {interval_text(r[f'{metric}_gap_clean'], ci, 4, sign=True)}"
                     f"{' (a finding)' if excludes_zero(ci) else ''}.")
        lines.append(line)
    return "\n".join(f"- {line}" for line in lines) or f"No backbone results with a noisy reference on {noise}."


def sweep_points(sweep: pd.DataFrame, metric: str = "ndcg@10") -> pd.DataFrame:
    """model, threshold, mean, low, high of the llm4dsr-p{T} conditions of a sweep table's
    backbones (its mostpop rows are the reference, drawn as a band)."""
    part = sweep[sweep["condition"].str.fullmatch(names.SWEEP_CONDITION) & (sweep["model"] != "mostpop")].copy()
    part["threshold"] = part["condition"].str.extract(names.SWEEP_CONDITION, expand=False).astype(float)
    return part.rename(columns={f"{metric}_mean": "mean", f"{metric}_ci_low": "low", f"{metric}_ci_high": "high"})[
        ["model", "threshold", "mean", "low", "high"]].sort_values(["model", "threshold"])


SCALE_LABELS = {"unit_prob": "noise probability", "logprob": "log-score",  # config correct.threshold.scale
                "contrast": "score over the history's other items"}


def fig_threshold(sweep: pd.DataFrame | None, results: pd.DataFrame | None, noise: str,
                  metric: str = "ndcg@10", default: dict | None = None):
    """The metric against the percentile threshold (train and test alike), with its
    interval, and the noisy / clean / configured llm4dsr results as bands."""
    import matplotlib.pyplot as plt

    if sweep is None:
        return None
    points = sweep_points(sweep, metric)
    if points.empty:
        return None
    models = list(dict.fromkeys(points["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(6 * len(models), 4.5), squeeze=False)
    for ax, model in zip(axes[0], models):
        p = points[points["model"] == model]
        ax.errorbar(p["threshold"], p["mean"], yerr=_yerr(p["mean"], p["low"], p["high"]), marker="o", capsize=3,
                    color=color("llm4dsr"), label="llm4dsr, threshold swept")
        ref = results[results["model"] == model].set_index("condition") if results is not None else None
        pop = results[results["model"] == "mostpop"].set_index("condition") if results is not None else None
        if pop is not None and "noisy" in pop.index:  # the reference the backbone must beat
            mean, lo, hi = (pop.at["noisy", c] for c in (f"{metric}_mean", f"{metric}_ci_low", f"{metric}_ci_high"))
            ax.axhline(mean, color=color("mostpop"), ls=":", lw=1, label="most-popular list (noisy data)")
            ax.axhspan(lo, hi, color=color("mostpop"), alpha=0.08)
        for cond in ("noisy", "clean", "llm4dsr"):
            if ref is not None and cond in ref.index:
                name = cond if cond != "llm4dsr" or not default else \
                    f"llm4dsr, configured ({default['kind']} {default['train']:g}/{default['test']:g})"
                mean, lo, hi = (ref.at[cond, c] for c in (f"{metric}_mean", f"{metric}_ci_low", f"{metric}_ci_high"))
                ax.axhline(mean, color=color(cond), ls="--", lw=1, label=name)
                ax.axhspan(lo, hi, color=color(cond), alpha=0.08)
        scale = SCALE_LABELS[default["scale"]] if default else "the noise score"
        ax.set(title=f"{model} on {noise}", xlabel=f"correction threshold (percentile of {scale}, train and test)",
               ylabel=f"test {metric.upper()} (0-1, mean, 95% interval)")
        ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.suptitle(f"Effect of the correction threshold on test {metric.upper()}")
    fig.tight_layout()
    return fig


def fig_noise_rate(results: dict[str, pd.DataFrame], metric: str = "ndcg@10"):
    """Test metric against the uniform noise rate, one panel per backbone, one line per condition."""
    import matplotlib.pyplot as plt

    uniform = {n: df for n, df in results.items() if n.startswith("uniform-")}
    if len(uniform) < 2:
        return None
    df = pd.concat([d.assign(rate=noise_rate(n)) for n, d in uniform.items()]).sort_values("rate")
    models, conds = list(dict.fromkeys(df["model"])), list(dict.fromkeys(df["condition"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.5), squeeze=False, sharey=True)
    shift = 0.004 * (np.arange(len(conds)) - (len(conds) - 1) / 2)  # side by side, so no bar hides another
    for ax, model in zip(axes[0], models):
        for k, c in enumerate(conds):
            p = df[(df["model"] == model) & (df["condition"] == c)]
            ax.errorbar(p["rate"] + shift[k], p[f"{metric}_mean"], yerr=_yerr(*_bounds(p, metric)), marker="o",
                        ms=3, capsize=2, lw=1, color=color(c), label=c)
        ax.set(title=model, xlabel="injected noise rate (share of interactions replaced)",
               ylabel=f"test {metric.upper()} (0-1, mean, 95% interval)")
    handles, labels_ = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels_, loc="lower center", ncol=min(len(labels_), 6), fontsize=8, title="training data")
    fig.suptitle(f"Test {metric.upper()} against the uniform noise rate")
    fig.tight_layout(rect=(0, 0.14, 1, 1))
    return fig


# fine-tuning

def fig_loss(loss: pd.DataFrame | None, curve: pd.DataFrame | None = None, objective: str = "generate"):
    """LoRA training loss per step (moving mean), and the held-out detection learning curve
    (learning_curve.tsv) beside it when fine-tuning measured one."""
    import matplotlib.pyplot as plt

    if loss is None or loss.empty:
        return None
    panels = 2 if curve is not None and not curve.empty else 1
    fig, axes = plt.subplots(1, panels, figsize=(6.5 * panels, 4), squeeze=False)
    ax = axes[0, 0]
    ax.plot(loss["step"], loss["loss"], lw=0.8, alpha=0.5, label="per step")
    span = max(1, len(loss) // 20)
    ax.plot(loss["step"], loss["loss"].rolling(span, min_periods=1).mean(), lw=2, label=f"moving mean ({span} steps)")
    unit = "nats per example, over its history's titles" if objective == "candidates" else "nats per response token"
    ax.set(xlabel="LoRA step (one batch)", ylabel=f"training loss ({unit})",
           title=f"Training loss: {len(loss)} steps in {loss['seconds'].iloc[-1] / 60:.1f} min")
    ax.legend()
    if panels == 2:
        ax = axes[0, 1]
        series = [("roc_auc", f"self-supervised ROC-AUC ({int(curve['examples'].iloc[-1])} held-out examples)")]
        if "valid_roc_auc_within" in curve and curve["valid_roc_auc_within"].notna().any():
            series.append(("valid_roc_auc_within", f"injected noise, within-history ROC-AUC "
                                                   f"({int(curve['valid_units'].iloc[-1])} valid units)"))
        for metric, name in series:
            line, = ax.plot(curve["step"], curve[metric], marker="o", label=name)
            if f"{metric}_ci_low" in curve and curve[f"{metric}_ci_low"].notna().all():
                ax.fill_between(curve["step"], curve[f"{metric}_ci_low"].astype(float),
                                curve[f"{metric}_ci_high"].astype(float), color=line.get_color(), alpha=0.15)
        ax.plot(curve["step"], curve["top1"], marker="o", ls="--", label="self-supervised top-1")
        ax.axhline(0.5, color="k", ls=":", lw=1, label="chance ROC-AUC")
        ax.set(xlabel="LoRA step (one batch)", ylabel="held-out detection quality (0-1)", ylim=(0, 1),
               title="Whole-title detection while fine-tuning (95% intervals)")
        ax.legend(fontsize=8)
    fig.suptitle("LoRA fine-tuning")
    fig.tight_layout()
    return fig


def curve_summary(curve: pd.DataFrame) -> str:
    """The held-out learning curve's first and last point, with intervals when measured."""
    first, last = curve.iloc[0], curve.iloc[-1]

    def auc(row) -> str:
        ci = [row["roc_auc_ci_low"], row["roc_auc_ci_high"]] if "roc_auc_ci_low" in row else None
        return interval_text(row["roc_auc"], ci if ci and pd.notna(ci[0]) else None)

    text = (f"Held-out detection on {int(last['examples'])} self-supervised examples: ROC-AUC {auc(first)} "
            f"(top-1 {first['top1']:.3f}) before training, {auc(last)} (top-1 {last['top1']:.3f}) after "
            f"{int(last['step'])} steps ({int(last['examples_seen'])} examples seen); intervals resample the "
            "examples.")
    if "valid_roc_auc_within" in curve and pd.notna(last.get("valid_roc_auc_within")):
        def within(row) -> str:
            ci = [row["valid_roc_auc_within_ci_low"], row["valid_roc_auc_within_ci_high"]]
            return interval_text(row["valid_roc_auc_within"], ci if pd.notna(ci[0]) else None)
        text += (f" On the noise the study injects (within-history ROC-AUC on {int(last['valid_units'])} valid "
                 f"units of the main noise setting; chance 0.5): {within(first)} before training, {within(last)} "
                 "after; intervals resample users. This is the figure a recipe is chosen on.")
    return text


# where corrections land

def spread_wide(spreads: dict[str, pd.DataFrame], split: str) -> pd.DataFrame:
    """One split of llm4dsr.correct.spread tables, by condition: a row each for the items
    and the injected noise, then per condition its changes; per history-length bin the
    share of the split's total (count), and each condition's changes and precision (the
    share that replaced injected noise; on the injected noise row, the noise rate: the
    precision of a random pick)."""
    first = next(iter(spreads.values()), None)
    if first is None or not (first["split"] == split).any():
        return pd.DataFrame()

    def cells(t: pd.DataFrame, col: str) -> list[str]:
        return [f"{s:.0%} ({n})" if pd.notna(s) else f"- ({n})" for s, n in zip(t[f"{col}_share"], t[col])]

    base = first[first["split"] == split]
    bins = [f"{b} items" for b in base["length"]]
    rate = f"{base['noise'].sum() / base['items'].sum():.2f}" if base["items"].sum() else "-"
    rows = {"items": cells(base, "items") + [None, None], "injected noise": cells(base, "noise") + [None, rate]}
    for condition, t in spreads.items():
        t = t[t["split"] == split]
        hits = (t["precision"].fillna(0) * t["changes"]).sum()
        rows[condition] = cells(t, "changes") + [int(t["changes"].sum()),
                                                 f"{hits / t['changes'].sum():.2f}" if t["changes"].sum() else "-"]
    return pd.DataFrame(rows, index=[*bins, "changes", "precision"]).T.fillna("")


# examples

def pick_examples(changes: pd.DataFrame, n: int, seed: int) -> list[int]:
    """Up to ``n`` changed units, test first, half of them real noise where possible (seeded)."""
    rng = np.random.default_rng(seed)
    order = {"test": 0, "valid": 1, "train": 2}
    units = changes.groupby("unit").agg(split=("split", "first"), hit=("was_noise", "max")).reset_index()
    units = units.assign(rank=units["split"].map(order), r=rng.random(len(units))).sort_values(["rank", "r"])
    hits, misses = units[units["hit"] > 0], units[units["hit"] == 0]
    chosen = list(hits["unit"][: (n + 1) // 2]) + list(misses["unit"][: n // 2])
    chosen += [u for u in units["unit"] if u not in chosen][: n - len(chosen)]
    return sorted(chosen)


def example_rows(units: pd.DataFrame, scores: pd.DataFrame, changes: pd.DataFrame,
                 catalogue: pd.DataFrame, chosen: list[int]) -> pd.DataFrame:
    """One row per item of the chosen units: title, probability, noise flag, replacement title."""
    items = item_table(units[units["unit"].isin(chosen)], scores[scores["unit"].isin(chosen)])
    titles = dict(zip(catalogue["item"], catalogue["title"]))
    ch = changes[["unit", "pos", "new_item"]]
    items = items.merge(ch, on=["unit", "pos"], how="left")
    items["title"] = items["item"].map(titles)
    items["replacement"] = items["new_item"].map(lambda i: titles.get(int(i)) if pd.notna(i) else None)
    return items[["unit", "user", "split", "window", "idx", "pos", "title", "prob", "noise", "replacement"]]


def fig_examples(rows: pd.DataFrame, scorer: str):
    """Each example history as bars of the LLM's noise probability, flagged item annotated."""
    import matplotlib.pyplot as plt

    if rows is None or rows.empty:
        return None
    groups = list(rows.groupby("unit", sort=True))
    heights = [0.32 * len(g) + 1.2 for _, g in groups]
    fig, axes = plt.subplots(len(groups), 1, figsize=(10, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    for ax, (unit, g) in zip(axes[:, 0], groups):
        y = np.arange(len(g))[::-1]  # oldest item on top
        colors = np.where(g["noise"] == 1, "tab:red", "tab:gray")
        ax.barh(y, g["prob"], color=colors)
        ax.set_yticks(y, [t if len(t) <= 45 else t[:44] + "…" for t in g["title"]], fontsize=7)
        for yy, (_, r) in zip(y, g.iterrows()):
            if pd.notna(r["replacement"]):
                ax.barh(yy, r["prob"], fill=False, edgecolor="k", lw=1.5)
                ax.annotate(f"  flagged (p = {r['prob']:.2f}) → {r['replacement']}", (r["prob"], yy),
                            va="center", fontsize=7)
        first = g.iloc[0]
        where = "train block" if first["window"] == -1 else f"{first['split']} window {first['window']}"
        flagged = g[g["replacement"].notna()]
        verdict = ", ".join("noise" if x else "clean" for x in flagged["noise"])
        ax.set(xlim=(0, min(1.0, 1.6 * g["prob"].max() + 0.05)), xlabel=f"noise probability ({label(scorer)}, 0-1)",
               title=f"user {first['user']}, {where}: {len(flagged)} item(s) replaced, truly {verdict}")
    fig.suptitle("Example corrections (red bars: injected noise; outlined: the item replaced)")
    fig.tight_layout()
    return fig
