"""Which scale should correction thresholds read? A diagnostic on a finished run.

For each noise setting with injected noise and each detector of its scores/, on the VALID
split only (a model choice never looks at test), for each `correct.threshold.scale`
(unit_prob, logprob, contrast):

- pooled ROC-AUC on that scale beside the mean within-unit ROC-AUC (the same for every
  scale: all three rank a unit's items alike), so a pooled figure far below the
  within-unit one says the scale mixes "which item" with "how long a history";
- the items the config's percentile threshold and max_per_sequence choose
  (llm4dsr.correct.select; the LLM condition's restriction to positions with a suggestion
  is left out): how many, their precision (the share that is injected noise), their share
  per history-length bin beside the bin's share of items and of noise, and the total
  variation distance between the changes' and the noise's spread over the bins (0: the
  changes spread like the noise). Precision is to be read against the split's noise rate
  (the precision of a random pick).

Point values with counts, no intervals: it compares scales on one run, it is not a finding.

    .venv/bin/python benchmarks/correction_scale.py [--results results] [--dataset ml-latest-small]
        [--config config.yaml]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
from sklearn.metrics import roc_auc_score

from llm4dsr import config, names
from llm4dsr.correct import select, spread
from llm4dsr.io import read_parquet
from llm4dsr.metrics import unit_roc_auc
from llm4dsr.scores import SCALES
from llm4dsr.units import item_table

SPLIT = "valid"


def measure(units: pd.DataFrame, scores: pd.DataFrame, correct_cfg: dict, name: str) -> tuple[dict, list[dict]]:
    """(ROC-AUC row with the items' and noise's shares per length bin, one row per scale: the
    chosen items, their precision and their share per length bin) of one detector on the valid split."""
    valid = units[units["split"] == SPLIT]
    items = item_table(valid, scores[scores["unit"].isin(valid["unit"])], name=name)
    y = items["noise"].to_numpy()
    within = unit_roc_auc(items)
    auc = {"units": items["unit"].nunique(), "items": len(items), "noise_items": int(y.sum()), "noise_rate": y.mean(),
           "within": within.mean(), "within_units": len(within),
           **{scale: roc_auc_score(y, items[col]) for scale, col in SCALES.items()}}
    rows = []
    for scale in SCALES:
        threshold = {**correct_cfg["threshold"], "scale": scale}
        chosen = select(items, threshold, correct_cfg["max_per_sequence"])
        t = spread(valid[valid["unit"].isin(items["unit"])], chosen.rename(columns={"noise": "was_noise"}))
        rows.append({"scale": scale, "changes": len(chosen),
                     "precision": chosen["noise"].mean() if len(chosen) else float("nan"),
                     "tv_noise": 0.5 * (t["changes_share"] - t["noise_share"]).abs().sum() if len(chosen)
                     else float("nan"),
                     **{f"changes {b}": x for b, x in zip(t["length"], t["changes_share"])}})
    auc["shares"] = {f"{col.split('_')[0]} {b}": x for col in ("items_share", "noise_share")
                     for b, x in zip(t["length"], t[col])}  # the same for every scale
    return auc, rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results")
    ap.add_argument("--dataset", default="ml-latest-small")
    ap.add_argument("--config", default="config.yaml", help="the run's config: its correct section")
    args = ap.parse_args()
    correct_cfg = config.load(args.config)["correct"]
    if correct_cfg["threshold"]["kind"] != "percentile":
        raise SystemExit(f"{args.config}: correct.threshold.kind: percentile needed to compare scales, "
                         f"not {correct_cfg['threshold']['kind']}")
    base = Path(args.results) / args.dataset
    noises = sorted(p.parent.name for p in base.glob("*/units.parquet") if names.noise_rate(p.parent.name) > 0)
    aucs, spreads = [], []
    for noise in noises:
        units = read_parquet(base / noise / "units.parquet")
        for path in sorted((base / noise / "scores").glob("*.parquet")):
            auc, rows = measure(units, read_parquet(path), correct_cfg, str(path))
            aucs.append({"noise": noise, "detector": path.stem, **auc})
            spreads += [{"noise": noise, "detector": path.stem, **r} for r in rows]
    auc, sp = pd.DataFrame(aucs), pd.DataFrame(spreads)
    shares = pd.DataFrame(list(auc.pop("shares")), index=auc["noise"]).groupby(level=0).first()
    th, cap = correct_cfg["threshold"], correct_cfg["max_per_sequence"]
    print(f"{base}, {SPLIT} split; threshold: percentile {th['test']} of the split, at most {cap['test']} per unit\n")
    print("ROC-AUC: within = mean over units holding noise and clean items of each unit's own (the same on "
          "every scale); the scales' columns pooled over the split's items\n")
    print(auc.round(3).to_markdown(index=False))
    print("\nShare of the split's items and injected noise per history length (items of the unit):\n")
    print(shares.round(3).to_markdown())
    print("\nChosen items per scale: how many, precision (share that is noise), tv_noise (total variation "
          "distance between their spread and the noise's: 0 = spread like the noise), share per length bin:\n")
    print(sp.round(3).to_markdown(index=False))
    sp = sp.merge(auc[["noise", "detector", "noise_rate"]], on=["noise", "detector"])
    summary = sp.assign(lift=sp["precision"] - sp["noise_rate"]).groupby("scale", sort=False).agg(
        changes=("changes", "sum"), precision_minus_noise_rate=("lift", "mean"), tv_noise=("tv_noise", "mean"))
    summary["abs(pooled - within) auc"] = [(auc[s] - auc["within"]).abs().mean() for s in summary.index]
    print("\nMean over settings and detectors (unweighted; a detector that chose nothing left out):\n")
    print(summary.round(3).to_markdown())


if __name__ == "__main__":
    main()
