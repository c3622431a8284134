"""Print, as Markdown, the measured figures of a finished workflow run (for the README):
dataset statistics, rule wall times, the LoRA learning curve, detection quality of every
detector per noise setting, and NDCG@10 per backbone and condition.

    .venv/bin/python benchmarks/run_summary.py [--results results] [--dataset ml-latest-small]
"""
from __future__ import annotations

import argparse
import glob
import json
from pathlib import Path

import pandas as pd


def rule_times(root: Path, dataset: str) -> pd.DataFrame:
    rows = []
    for path in glob.glob(str(root / "benchmarks" / "**" / "*.tsv"), recursive=True):
        if f"/{dataset}" not in path:
            continue
        rule = Path(path).relative_to(root / "benchmarks").parts[0]
        b = pd.read_csv(path, sep="\t")
        rows.append({"rule": rule, "jobs": 1, "wall_s": float(b["s"].iloc[0]), "max_rss_mb": float(b["max_rss"].iloc[0])})
    df = pd.DataFrame(rows)
    return df.groupby("rule").agg(jobs=("jobs", "sum"), wall_s=("wall_s", "sum"), max_rss_mb=("max_rss_mb", "max"))


def recipe_table(rows: pd.DataFrame) -> str:
    """benchmarks/recipe_search.py outputs: held-out ROC-AUC per recipe and step, per
    replacement model, and the simple detectors on the same units (the same for every recipe)."""
    llm = rows[rows["scorer"].str.startswith("llm")]
    t = llm.pivot_table(index=["recipe", "step"], columns=["noise", "scorer"], values="roc_auc")
    t.columns = [f"{noise}: {'LLM' if scorer == 'llm' else 'LLM - prior'}" for noise, scorer in t.columns]
    t = t[sorted(t.columns, key=lambda c: (not c.startswith("uniform"), c))].reset_index()
    t.insert(2, "wall_s", t["recipe"].map(llm.groupby("recipe")["wall_s"].first()))
    base = rows[~rows["scorer"].str.startswith("llm")].groupby(["noise", "scorer"])["roc_auc"].first()
    simple = "; ".join(f"{noise} replacements: " + ", ".join(f"{d} {v:.3f}" for d, v in base[noise].items())
                       for noise in sorted(base.index.levels[0], reverse=True))
    return ("**Recipe search** (`benchmarks/recipe_search.py`): ROC-AUC on held-out self-supervised units from "
            "train windows, one item replaced by a uniformly or a popularity-drawn item; LLM = the full-title score, "
            "LLM - prior = minus the title's likelihood after a content-free history; wall_s = the whole run, "
            "evaluations included.\n\n" + t.round(3).to_markdown(index=False)
            + f"\n\nSimple detectors on the same units: {simple}.")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--dataset", default="ml-latest-small")
    args = ap.parse_args()
    root, ds = Path(args.results), args.dataset
    base = root / ds
    stats = json.loads((base / "data" / "stats.json").read_text())
    print(f"**Data** ({ds}): {stats['users']} users, {stats['items']} items, {stats['interactions']} interactions; "
          f"windows train/valid/test {stats['windows']['train']}/{stats['windows']['valid']}/{stats['windows']['test']}"
          f" (valid and test sampled to {stats['eval_windows_kept']['valid']} each).\n")
    print("**Rule wall times** (sum over jobs, seconds; from `results/benchmarks/`):\n")
    print(rule_times(root, ds).round(1).to_markdown() + "\n")
    curve = pd.read_csv(base / "finetune" / "learning_curve.tsv", sep="\t")
    print("**Learning curve** (held-out self-supervised examples, full-title scores):\n")
    print(curve.round(3).to_markdown(index=False) + "\n")
    recipes = sorted((root / "recipe_search").glob("*.tsv"))
    if recipes:
        print(recipe_table(pd.concat([pd.read_csv(p, sep="\t") for p in recipes])) + "\n")
    noises = sorted(p.parent.name for p in base.glob("*/detection.json"))
    for split in ("train", "test"):
        rows = []
        for n in noises:
            det = json.loads((base / n / "detection.json").read_text())
            for name, by_split in det.items():
                m = by_split.get(split)
                if m and m["roc_auc"] is not None:  # None: nothing injected (rate 0.0)
                    rows.append({"noise": n, "detector": name, "ROC-AUC": m["roc_auc"], "PR-AUC": m["pr_auc"],
                                 "top-1": m["top1"]})
        if rows:
            t = pd.DataFrame(rows).pivot(index="detector", columns="noise", values=["ROC-AUC", "top-1"])
            t.columns = [f"{metric} {noise}" for metric, noise in t.columns]
            print(f"**Detection, {split} units** (ROC-AUC and top-1 per noise setting):\n")
            print(t.round(3).to_markdown() + "\n")
    for n in noises:
        path = base / n / "results.csv"
        if not path.exists():
            continue
        r = pd.read_csv(path)
        r["NDCG@10"] = r.apply(lambda x: f"{x['ndcg@10_mean']:.4f} ± {x['ndcg@10_std']:.4f}", axis=1)
        t = r.pivot(index="condition", columns="model", values="NDCG@10")
        print(f"**Test NDCG@10, {n}** (mean ± std over {int(r['seeds'].max())} seeds):\n")
        print(t.to_markdown() + "\n")


if __name__ == "__main__":
    main()
