"""Figures, tables and sentences of the report notebook (notebooks/report.ipynb).

Everything here reads workflow outputs (docs/outputs.md) and nothing else. Each
``fig_*`` function returns a matplotlib Figure with a title, labelled axes and units,
or None when its inputs are absent; the notebook then prints a note instead.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Iterable

import numpy as np
import pandas as pd

from llm4dsr.names import LABELS, SPLITS, noise_rate
from llm4dsr.units import item_table

METRIC_LABELS = {"roc_auc": "ROC-AUC", "pr_auc": "PR-AUC", "top1": "top-1"}


def label(name: str) -> str:
    return LABELS.get(name, name)


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(metric, metric.upper())


def injected(settings: Iterable[str]) -> list[str]:
    """The settings with injected noise (rate 0.0 has no noise mask to score against)."""
    return [s for s in settings if noise_rate(s) > 0]


def _color(name: str, names: list[str]) -> str:
    """Detectors keep one colour across figures; other series take theirs from ``names``."""
    import matplotlib.pyplot as plt

    order = list(LABELS) if name in LABELS else names
    return plt.get_cmap("tab10")(order.index(name) % 10)


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
    names = list(scores)
    tables = {d: item_table(units, s, name=f"scores/{d}.parquet") for d, s in scores.items()}
    fig, axes = plt.subplots(2, len(SPLITS), figsize=(4.2 * len(SPLITS), 8), squeeze=False)
    for j, split in enumerate(SPLITS):
        roc, pr = axes[0, j], axes[1, j]
        for d, items in tables.items():
            c = curves(items[items["split"] == split])
            if c is None:
                continue
            roc.plot(c["fpr"], c["tpr"], color=_color(d, names), label=f"{label(d)} ({c['roc_auc']:.3f})")
            pr.plot(c["recall"], c["precision"], color=_color(d, names), label=f"{label(d)} ({c['pr_auc']:.3f})")
            base = c["base"]
        if not roc.lines:
            roc.text(0.5, 0.5, "no noise items in this split", ha="center", transform=roc.transAxes)
        else:
            roc.plot([0, 1], [0, 1], "k:", lw=1, label="chance (0.5)")
            pr.axhline(base, color="k", ls=":", lw=1, label=f"chance ({base:.3f})")
        roc.set(title=f"ROC, {split} split", xlabel="false-positive rate (share of clean items flagged)",
                ylabel="true-positive rate (share of noise items flagged)", xlim=(0, 1), ylim=(0, 1.01))
        pr.set(title=f"precision-recall, {split} split", xlabel="recall (share of noise items flagged)",
               ylabel="precision (share of flagged items that are noise)", xlim=(0, 1), ylim=(0, 1.01))
        for ax in (roc, pr):
            if ax.lines:
                ax.legend(fontsize=7, title="detector (AUC)", title_fontsize=7)
    fig.suptitle(f"Noise detection on {noise}: every item of every unit, pooled per split")
    fig.tight_layout()
    return fig


def chance_top1(units: pd.DataFrame, split: str = "test") -> float:
    """Top-1 of a uniformly random pick: mean share of noise items in the units holding noise."""
    part = units[units["split"] == split]
    share = part["noise"].map(lambda n: sum(n) / len(n))
    share = share[share > 0]
    return float(share.mean()) if len(share) else math.nan


def detection_table(detections: dict[str, dict], detectors: list[str], split: str = "test") -> pd.DataFrame:
    """Long table from detection.json files: noise, detector (in ``detectors`` order), ROC-AUC,
    PR-AUC, top-1, ECE and counts."""
    rows = []
    for noise, report in detections.items():
        for det in (d for d in detectors if d in report):
            m = report[det].get(split, {})
            rows.append({"noise": noise, "detector": det, **{k: m.get(k) for k in METRIC_LABELS},
                         "ece": m.get("ece"), "units": m.get("units"), "noise_items": m.get("noise_items")})
    return pd.DataFrame(rows, columns=["noise", "detector", *METRIC_LABELS, "ece", "units", "noise_items"])


def detection_wide(table: pd.DataFrame) -> pd.DataFrame:
    """Detector x (noise setting, metric), for display."""
    wide = table.pivot(index="detector", columns="noise", values=list(METRIC_LABELS)).dropna(axis=1, how="all")
    wide = wide.swaplevel(axis=1)
    noises = [n for n in dict.fromkeys(table["noise"]) if n in wide.columns.get_level_values(0)]
    wide = wide[noises].reindex(list(dict.fromkeys(table["detector"])))
    wide.index = [label(d) for d in wide.index]
    wide.columns = pd.MultiIndex.from_tuples([(n, metric_label(m)) for n, m in wide.columns])
    return wide.astype(float).round(3)


def fig_detection_bars(table: pd.DataFrame, chance: dict[str, float], split: str = "test"):
    """ROC-AUC and top-1 per detector, grouped by noise setting, with chance levels."""
    import matplotlib.pyplot as plt

    table = table.dropna(subset=["roc_auc"])
    if table.empty:
        return None
    noises, names = list(dict.fromkeys(table["noise"])), list(dict.fromkeys(table["detector"]))
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    width = 0.8 / len(names)
    for ax, metric in zip(axes, ("roc_auc", "top1")):
        for k, d in enumerate(names):
            vals = [table[(table["noise"] == n) & (table["detector"] == d)][metric] for n in noises]
            vals = [float(v.iloc[0]) if len(v) and pd.notna(v.iloc[0]) else np.nan for v in vals]
            ax.bar(np.arange(len(noises)) + (k - (len(names) - 1) / 2) * width, vals, width,
                   color=_color(d, names), label=label(d))
        for i, n in enumerate(noises):
            level = 0.5 if metric == "roc_auc" else chance.get(n, np.nan)
            ax.hlines(level, i - 0.45, i + 0.45, colors="k", linestyles=":", label="chance" if i == 0 else None)
        ax.set(xticks=range(len(noises)), xticklabels=noises, xlabel="noise setting (model-rate)",
               ylabel=f"{metric_label(metric)} ({split} split, 0-1)", ylim=(0, 1),
               title=f"{metric_label(metric)} of each detector")
    handles, names_ = axes[0].get_legend_handles_labels()
    fig.legend(handles, names_, loc="lower center", ncol=len(names_), fontsize=8)
    fig.suptitle(f"Noise detection quality, {split} split")
    fig.tight_layout(rect=(0, 0.07, 1, 1))
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
            ax.plot(cal["mean_prob"], cal["noise_rate"], "-", color=_color(d, detectors), lw=1)
            ax.scatter(cal["mean_prob"], cal["noise_rate"], s=8 + 60 * np.sqrt(cal["count"] / cal["count"].max()),
                       color=_color(d, detectors), label=f"{label(d)} (ECE {ece:.3f})")
        ax.plot([0, 1], [0, 1], "k:", lw=1, label="perfect calibration")
        ax.set(title=noise, xlabel="mean predicted noise probability in bin (0-1)",
               ylabel="observed share of noise items in bin (0-1)", xlim=(0, 1), ylim=(0, 1))
        ax.legend(fontsize=7)
    fig.suptitle("Reliability of the noise probabilities (10 equal-width bins, all splits; marker area ~ items)")
    fig.tight_layout()
    return fig


def detection_summary(table: pd.DataFrame, noise: str, llm: str, split: str = "test") -> str:
    """A neutral sentence comparing the LLM scorer with the best simple detector on ``noise``."""
    part = table[(table["noise"] == noise)].dropna(subset=["roc_auc"]).set_index("detector")
    if llm not in part.index:
        return f"No {label(llm)} scores on {noise}."
    ranked = part["roc_auc"].sort_values(ascending=False)
    order = ", ".join(f"{label(d)} {v:.3f}" for d, v in ranked.items())
    text = f"On {noise} ({split} split), ROC-AUC from best to worst: {order}."
    simple = part.drop(index=[d for d in part.index if d.startswith("llm_") or d.startswith("combined")])
    if len(simple):
        best = simple["roc_auc"].idxmax()
        gap = part.at[llm, "roc_auc"] - simple.at[best, "roc_auc"]
        side = "above" if gap > 0 else "below"
        text += (f" {label(llm)} is {abs(gap):.3f} {side} the best simple detector, {label(best)}"
                 f" (top-1 {part.at[llm, 'top1']:.3f} against {simple.at[best, 'top1']:.3f}).")
    return text


# backbones

def results_display(results: pd.DataFrame, metrics: Iterable[str] = ("hr@10", "ndcg@10")) -> pd.DataFrame:
    """results.csv as model x condition with "mean ± std" cells."""
    out = results[["model", "condition", "seeds"]].copy()
    for m in metrics:
        std = results[f"{m}_std"].map(lambda s: "" if pd.isna(s) else f" ± {s:.4f}")
        out[m.upper()] = results[f"{m}_mean"].map(lambda v: f"{v:.4f}") + std
    return out.set_index(["model", "condition"])


def fig_metric_bars(results: dict[str, pd.DataFrame], metric: str = "ndcg@10"):
    """Grouped bars (mean ± std over seeds) per backbone, one panel per noise setting."""
    import matplotlib.pyplot as plt

    if not results:
        return None
    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 4.5), squeeze=False, sharey=True)
    for ax, (noise, df) in zip(axes[0], results.items()):
        models, conds = list(dict.fromkeys(df["model"])), list(dict.fromkeys(df["condition"]))
        width = 0.8 / len(conds)
        for k, c in enumerate(conds):
            part = df[df["condition"] == c].set_index("model").reindex(models)
            ax.bar(np.arange(len(models)) + (k - (len(conds) - 1) / 2) * width, part[f"{metric}_mean"], width,
                   yerr=part[f"{metric}_std"].fillna(0), capsize=2, color=_color(c, conds), label=c)
        ax.set(xticks=range(len(models)), xticklabels=models, xlabel="backbone", title=noise,
               ylabel=f"test {metric.upper()} (0-1, mean ± std over seeds)")
    axes[0, -1].legend(fontsize=7, title="training data")
    fig.suptitle(f"Test {metric.upper()} of each backbone by training data")
    fig.tight_layout()
    return fig


def results_summary(df: pd.DataFrame, noise: str, metric: str = "ndcg@10") -> str:
    """Neutral sentences: llm4dsr against noisy and against the best other non-oracle condition."""
    lines = []
    for model, g in df.groupby("model", sort=False):
        g = g.set_index("condition")
        if not {"llm4dsr", "noisy"} <= set(g.index):
            continue
        m, s = g[f"{metric}_mean"], g[f"{metric}_std"].fillna(0)
        diff = m["llm4dsr"] - m["noisy"]
        within = abs(diff) <= max(s["llm4dsr"], s["noisy"])
        text = (f"{model} on {noise}: llm4dsr {m['llm4dsr']:.4f} ± {s['llm4dsr']:.4f} against noisy "
                f"{m['noisy']:.4f} ± {s['noisy']:.4f} ({100 * diff / m['noisy']:+.1f}%"
                f"{', within one standard deviation over seeds' if within else ''})")
        others = m.drop(index=[c for c in ("clean", "noisy", "llm4dsr") if c in m.index])
        if len(others) and others.max() > m["llm4dsr"]:
            text += f"; {others.idxmax()} reaches {others.max():.4f}, above llm4dsr"
        if "clean" in m.index:
            text += f"; the clean oracle reaches {m['clean']:.4f}"
        lines.append(text + ".")
    return "\n".join(f"- {line}" for line in lines) or f"No llm4dsr and noisy results on {noise}."


def sweep_points(sweep: pd.DataFrame, metric: str = "ndcg@10") -> pd.DataFrame:
    """model, threshold, mean, std of the llm4dsr-p{T} conditions of a sweep table."""
    part = sweep[sweep["condition"].str.fullmatch(r"llm4dsr-p[0-9.]+")].copy()
    part["threshold"] = part["condition"].str.slice(len("llm4dsr-p")).astype(float)
    return part.rename(columns={f"{metric}_mean": "mean", f"{metric}_std": "std"})[
        ["model", "threshold", "mean", "std"]].sort_values(["model", "threshold"])


def fig_threshold(sweep: pd.DataFrame | None, results: pd.DataFrame | None, noise: str,
                  metric: str = "ndcg@10", default: dict | None = None):
    """NDCG@10 against the percentile threshold (train and test alike), with reference lines."""
    import matplotlib.pyplot as plt

    if sweep is None:
        return None
    points = sweep_points(sweep, metric)
    if points.empty:
        return None
    models = list(dict.fromkeys(points["model"]))
    fig, axes = plt.subplots(1, len(models), figsize=(5.5 * len(models), 4.5), squeeze=False)
    refs = {"noisy": "k", "clean": "tab:green", "llm4dsr": "tab:red"}
    for ax, model in zip(axes[0], models):
        p = points[points["model"] == model]
        ax.errorbar(p["threshold"], p["mean"], yerr=p["std"].fillna(0), marker="o", capsize=3,
                    label="llm4dsr, threshold swept")
        ref = results[results["model"] == model].set_index("condition") if results is not None else None
        for cond, color in refs.items():
            if ref is not None and cond in ref.index:
                name = cond if cond != "llm4dsr" or not default else \
                    f"llm4dsr, configured ({default['kind']} {default['train']:g}/{default['test']:g})"
                ax.axhline(ref.at[cond, f"{metric}_mean"], color=color, ls="--", lw=1, label=name)
        ax.set(title=f"{model} on {noise}", xlabel="correction threshold (percentile of noise probability, "
               "train and test)", ylabel=f"test {metric.upper()} (0-1, mean ± std over seeds)")
        ax.legend(fontsize=7)
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
    for ax, model in zip(axes[0], models):
        for c in conds:
            p = df[(df["model"] == model) & (df["condition"] == c)]
            ax.errorbar(p["rate"], p[f"{metric}_mean"], yerr=p[f"{metric}_std"].fillna(0), marker="o",
                        capsize=2, color=_color(c, conds), label=c)
        ax.set(title=model, xlabel="injected noise rate (share of interactions replaced)",
               ylabel=f"test {metric.upper()} (0-1, mean ± std over seeds)")
    axes[0, -1].legend(fontsize=7, title="training data")
    fig.suptitle(f"Test {metric.upper()} against the uniform noise rate")
    fig.tight_layout()
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
        for metric in ("roc_auc", "top1"):
            ax.plot(curve["step"], curve[metric], marker="o", label=metric_label(metric))
        ax.axhline(0.5, color="k", ls=":", lw=1, label="chance ROC-AUC")
        ax.set(xlabel="LoRA step (one batch)", ylabel="held-out detection quality (0-1)", ylim=(0, 1),
               title=f"Whole-title detection on {int(curve['examples'].iloc[-1])} held-out self-supervised examples")
        ax.legend()
    fig.suptitle("LoRA fine-tuning")
    fig.tight_layout()
    return fig


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
