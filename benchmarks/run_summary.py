"""Write docs/results.md: the measured figures of a finished workflow run, every one with
its 95% interval (dataset statistics, rule wall times, the LoRA learning curve, detection
quality and paired differences per noise setting, within histories first, where the
corrections land over history lengths, backbone metrics and paired differences, and their
reference levels: most-popular and random), and the benchmark scripts' outputs found
under results/.

    .venv/bin/python benchmarks/run_summary.py [--results results] [--dataset ml-latest-small] [--out docs/results.md]
        [--commit SHA] [--note "how the run was made"] [--noise SETTING]
"""
from __future__ import annotations

import argparse
import glob
import json
import subprocess
from pathlib import Path

import pandas as pd

from llm4dsr import config, names
from llm4dsr.backbones.reference import MODEL as MOSTPOP, random_level
from llm4dsr.correct import spread
from llm4dsr.figures import excludes_zero, interval_text, label, spread_wide
from llm4dsr.io import read_parquet, write_text


def rule_times(root: Path, dataset: str) -> pd.DataFrame:
    rows = []
    for path in glob.glob(str(root / "benchmarks" / "**" / "*.tsv"), recursive=True):
        if f"/{dataset}" not in path:
            continue
        rule = Path(path).relative_to(root / "benchmarks").parts[0]
        b = pd.read_csv(path, sep="\t")
        rows.append({"rule": rule, "jobs": 1, "wall_s": float(b["s"].iloc[0]), "cpu_s": float(b["cpu_time"].iloc[0]),
                     "max_rss_mb": float(b["max_rss"].iloc[0])})
    if not rows:
        return pd.DataFrame()
    df = pd.DataFrame(rows)
    return df.groupby("rule").agg(jobs=("jobs", "sum"), wall_s=("wall_s", "sum"), cpu_s=("cpu_s", "sum"),
                                  max_rss_mb=("max_rss_mb", "max"))


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
    return ("## Recipe search\n\n`benchmarks/recipe_search.py`: ROC-AUC on held-out self-supervised units from "
            "train windows, one item replaced by a uniformly or a popularity-drawn item; LLM = the full-title score, "
            "LLM - prior = minus the title's likelihood after a content-free history; wall_s = the whole run, "
            "evaluations included. (Point values of one run each.)\n\n" + t.round(3).to_markdown(index=False)
            + f"\n\nSimple detectors on the same units: {simple}.\n")


def detection_section(base: Path, noises: list[str]) -> str:
    """Per split, ROC-AUC within histories (the headline: length-invariant) and pooled, each
    with its interval; then the paired differences of both on the test split."""
    out = []
    for split in ("test", "train"):
        for metric, title in (("roc_auc_within", "Mean ROC-AUC within a history (units holding noise and clean "
                                                 "items; the headline)"),
                              ("roc_auc", "ROC-AUC pooled over all items (also ranks by history length)")):
            rows, users = {}, {}
            for n in noises:
                det = json.loads((base / n / "detection.json").read_text())
                for name, by_split in det.items():
                    m = by_split.get(split) if name != "paired" else None
                    if m and m.get(metric) is not None:  # None: nothing injected (rate 0.0)
                        rows.setdefault(label(name), {})[n] = interval_text(m[metric], m[f"{metric}_ci"])
                        users[n] = m["users"]
            if rows:
                t = pd.DataFrame(rows).T
                t.columns = [f"{n} ({users[n]} users)" for n in t.columns]
                out.append(f"**{title}, {split} split** (95% interval, users resampled):\n\n{t.to_markdown()}\n")
    for metric, title in (("roc_auc_within", "within-history ROC-AUC"), ("roc_auc", "pooled ROC-AUC")):
        pairs = {}
        for n in noises:
            det = json.loads((base / n / "detection.json").read_text())
            for pair, by_split in det.get("paired", {}).items():
                d = by_split["test"].get(metric)
                if d and d["diff"] is not None:
                    cell = interval_text(d["diff"], d["ci"], sign=True)
                    a, b = pair.split(" - ")
                    pairs.setdefault(f"{label(a)} minus {label(b)}", {})[n] = \
                        f"**{cell}**" if excludes_zero(d["ci"]) else cell
        if pairs:
            out.append(f"**Paired {title} differences, test split** (the same users resampled for both; **bold**: "
                       "the interval excludes 0, a finding; otherwise the study cannot tell the two apart):\n\n"
                       + pd.DataFrame(pairs).T.to_markdown() + "\n")
    return "## Noise detection\n\n" + "\n".join(out)


def corrections_section(base: Path, noise: str) -> str:
    """Per split, how each correction condition's changes spread over history lengths beside
    the items and the injected noise (llm4dsr.correct.spread)."""
    changes = {c: base / noise / "correct" / c / "changes.parquet" for c in names.CORRECTIONS}
    changes = {c: p for c, p in changes.items() if p.exists()}
    if not changes or not (base / noise / "units.parquet").exists():
        return ""
    units = read_parquet(base / noise / "units.parquet")
    spreads = {c: spread(units, read_parquet(p)) for c, p in changes.items()}
    out = [f"## Where corrections land\n\n{noise}: per history length (the items of a unit: a valid or test "
           "window's history, a train block), each bin's share of the split's items, of its injected noise and of "
           "each correction condition's changes (count); precision = the share of the changes that replaced "
           "injected noise (on the injected-noise row: the noise rate, the precision of a random pick). A rule "
           "that follows suspicion spreads its changes like the noise; one that follows history length piles "
           "them into one bin. Counts of one run, no intervals; the published denoisers' per-window deletions "
           "and insertions are left out.\n"]
    for split in ("test", "valid", "train"):
        t = spread_wide(spreads, split)
        if not t.empty:
            out.append(f"**{split} split:**\n\n{t.to_markdown(disable_numparse=True)}\n")
    return "\n".join(out)


def backbone_section(base: Path, noises: list[str], metric: str = "ndcg@10", n_items: int | None = None) -> str:
    """Per noise setting, one row per condition and per backbone three cells: the metric, the
    condition minus `noisy` and `clean` minus the condition, each paired on the same windows
    and seeds. The published denoisers' own recommenders (one condition each) follow in a line."""
    out = [f"## Backbones\n\nTest {metric.upper()}: mean over seeds and test windows [95% interval; seeds and users "
           "resampled]; each condition minus `noisy`, and `clean` minus each condition, on the same windows and "
           "seeds (**bold**: the interval excludes 0).\n"]

    def cell(x, key: str, sign: bool) -> str:
        if pd.isna(x.get(key)):
            return ""
        ci = [x[f"{key}_ci_low"], x[f"{key}_ci_high"]]
        text = interval_text(x[key], ci, 4, sign=sign)
        return f"**{text}**" if sign and excludes_zero(ci) else text

    for n in noises:
        path = base / n / "results.csv"
        if not path.exists():
            continue
        r = pd.read_csv(path).rename(columns={f"{metric}_mean": metric})
        pop = r[r["model"] == MOSTPOP].set_index("condition")
        r = r[r["model"] != MOSTPOP]
        shared = r.groupby("model")["condition"].transform("nunique") > 1  # backbones trained on every condition
        t = pd.DataFrame(index=pd.Index(r.loc[shared, "condition"].unique(), name="condition"))
        for model, g in r[shared].groupby("model", sort=False):
            g = g.set_index("condition")
            t[model] = [cell(g.loc[c], metric, False) for c in t.index]
            t[f"{model}: minus noisy"] = [cell(g.loc[c], f"{metric}_diff_noisy", True) for c in t.index]
            t[f"{model}: clean minus"] = [cell(g.loc[c], f"{metric}_gap_clean", True) for c in t.index]
        own = "; ".join(f"{x['model']} {cell(x, metric, False)}" for _, x in r[~shared].iterrows())
        users = int(r["test_users"].max())
        out.append(f"**{n}** ({int(r['seeds'].max())} seeds, {int(r['n_test'].max())} test windows, {users} users):\n\n"
                   + t.to_markdown() + "\n" + (f"\nThe published denoisers' own recommenders: {own}.\n" if own else ""))
        if len(pop):  # the reference levels: does each backbone beat a most-popular list of the same data?
            ref = pd.DataFrame(index=pd.Index(pop.index, name="condition"))
            ref[MOSTPOP] = [cell(pop.loc[c], metric, False) for c in ref.index]
            for model, g in r[shared].groupby("model", sort=False):
                g = g.set_index("condition")
                ref[f"{model} minus {MOSTPOP}"] = [cell(g.loc[c], f"{metric}_diff_{MOSTPOP}", True)
                                                   if c in g.index else "" for c in ref.index]
            level = random_level(n_items, [metric])[metric] if n_items else None
            out.append(f"Reference levels on {n}: `{MOSTPOP}` (items ranked by their count among the condition's "
                       "train-window targets) and each backbone minus it on the same condition and windows"
                       + (f"; a random ranking of the {n_items} items scores {metric.upper()} {level:.4f}" if level
                          else "") + ":\n\n" + ref.to_markdown() + "\n")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results")
    ap.add_argument("--dataset", default="ml-latest-small")
    ap.add_argument("--out", default="docs/results.md")
    ap.add_argument("--commit", default="", help="the commit the run was made at (default: HEAD)")
    ap.add_argument("--note", default="", help="how the run was made (command, machine, wall time)")
    ap.add_argument("--noise", default=None,
                    help="the noise setting of 'Where corrections land' (default: config.yaml's report.noise)")
    args = ap.parse_args()
    root, ds = Path(args.results), args.dataset
    base = root / ds
    commit = args.commit or subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                           text=True).stdout.strip()
    parts = [f"# Measured results\n\nWritten by `benchmarks/run_summary.py` from the outputs of a workflow run "
             f"(`{root}/{ds}`, code at commit {commit or 'unknown'}). Every figure carries its 95% interval; a "
             "difference is called a finding only where its interval excludes 0.\n"]
    if args.note:
        parts.append(f"*This run:* {args.note}\n")
    stats = json.loads((base / "data" / "stats.json").read_text())
    windows, kept, users = (stats[k] for k in ("windows", "eval_windows_kept", "eval_users_kept"))
    parts.append(f"## Data\n\n{ds}: {stats['users']} users, {stats['items']} items, {stats['interactions']} "
                 f"interactions; windows train/valid/test {windows['train']}/{windows['valid']}/{windows['test']}; "
                 f"kept for evaluation: {kept['valid']} valid windows ({users['valid']} users) and {kept['test']} "
                 f"test windows ({users['test']} users).\n")
    times = rule_times(root, ds)
    if not times.empty:
        parts.append("## Rule times\n\nSum over jobs (seconds of wall time and of CPU time), from "
                     "`results/benchmarks/`:\n\n" + times.round(1).to_markdown() + "\n")
    for curve_path in sorted(base.glob("finetune/*/learning_curve.tsv")):  # one per denoiser ({train_noise})
        parts.append(f"## LoRA learning curve ({curve_path.parent.name})\n\nThe denoiser fine-tuned on "
                     f"{curve_path.parent.name}'s windows, at each curve point: `roc_auc` on held-out self-supervised "
                     "examples (examples resampled) and, where measured, `valid_roc_auc_within`: the within-history "
                     "ROC-AUC on valid units of the main noise setting, the noise the study injects (users "
                     "resampled; chance 0.5); 95% intervals:\n\n"
                     + pd.read_csv(curve_path, sep="\t").round(3).to_markdown(index=False) + "\n")
    noises = sorted(p.parent.name for p in base.glob("*/detection.json"))
    parts.append(detection_section(base, noises))
    parts.append(corrections_section(base, args.noise or config.load("config.yaml")["report"]["noise"]))
    parts.append(backbone_section(base, noises, n_items=stats["items"]))
    recipes = sorted((root / "recipe_search").glob("*.tsv"))
    if recipes:
        parts.append(recipe_table(pd.concat([pd.read_csv(p, sep="\t") for p in recipes])))
    for name, title in (("llm_inference", "LLM inference benchmark"), ("score_stage", "Score stage before and after")):
        bench = root / "benchmarks" / f"{name}.json"
        if bench.exists():
            parts.append(f"## {title}\n\n`benchmarks/{name}.py` (`results/benchmarks/{name}.json`):\n\n```json\n"
                         + bench.read_text().strip() + "\n```\n")
    write_text("\n".join(parts), args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
