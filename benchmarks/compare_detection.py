"""Compare two LLM denoisers' noise detection on the same units, paired by user.

Used to choose the quick preset's denoiser (README, "Which denoiser the quick study
uses"): the single model fine-tuned on uniform-0.0 windows against the one fine-tuned on
the scored setting's own observed windows (finetune.per_setting). For each split it
prints both ROC-AUCs (over the items of the units, against the injected-noise mask), their
difference, each with a 95% interval from the study's user-level bootstrap
(llm4dsr.intervals: users are the unit of independence; the difference is paired, the
same resampled users for both).

    python benchmarks/compare_detection.py --units results/D/uniform-0.1/units.parquet \\
        --a single=PATH/llm_full_title.parquet --b per_setting=PATH/llm_full_title.parquet
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from llm4dsr import intervals
from llm4dsr.io import read_parquet
from llm4dsr.units import item_table


def compare(units: pd.DataFrame, a: pd.DataFrame, b: pd.DataFrame, resamples: int = 1000, level: float = 0.95,
            seed: int = 0) -> pd.DataFrame:
    """Per split: both ROC-AUCs on the items both score, their difference (b - a) and its
    paired interval (the same resampled users for both: llm4dsr.intervals)."""
    ta, tb = item_table(units, a), item_table(units, b)
    both = ta.merge(tb[["unit", "idx", "prob"]], on=["unit", "idx"], suffixes=("_a", "_b"))
    rows = []
    for split in ("train", "valid", "test"):
        part = both[both["split"] == split]
        if part.empty or not 0 < part["noise"].sum() < len(part):
            continue
        y = part["noise"].to_numpy()
        w = intervals.user_weights(part["user"].to_numpy(), resamples, seed, f"compare-{split}")
        ones = np.ones((1, len(y)))
        auc_a, auc_b = (float(intervals.roc_auc(y, part[c].to_numpy(), ones)[0]) for c in ("prob_a", "prob_b"))
        reps = {c: intervals.roc_auc(y, part[c].to_numpy(), w) for c in ("prob_a", "prob_b")}
        ci = intervals.interval(reps["prob_b"] - reps["prob_a"], level) or [np.nan, np.nan]
        ci_a = intervals.interval(reps["prob_a"], level) or [np.nan, np.nan]
        ci_b = intervals.interval(reps["prob_b"], level) or [np.nan, np.nan]
        rows.append({"split": split, "units": part["unit"].nunique(), "users": part["user"].nunique(),
                     "items": len(y), "noise_items": int(y.sum()), "roc_auc_a": auc_a,
                     "a_ci": f"[{ci_a[0]:.3f}, {ci_a[1]:.3f}]", "roc_auc_b": auc_b,
                     "b_ci": f"[{ci_b[0]:.3f}, {ci_b[1]:.3f}]", "diff_b_minus_a": auc_b - auc_a,
                     "diff_ci": f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", required=True, help="units.parquet the two score tables score")
    ap.add_argument("--a", required=True, help="NAME=scores.parquet (the reference denoiser)")
    ap.add_argument("--b", required=True, help="NAME=scores.parquet (the one compared with it)")
    ap.add_argument("--resamples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    (name_a, path_a), (name_b, path_b) = (x.split("=", 1) for x in (args.a, args.b))
    table = compare(read_parquet(args.units), read_parquet(path_a), read_parquet(path_b), args.resamples,
                    seed=args.seed)
    table = table.rename(columns={"roc_auc_a": f"roc_auc_{name_a}", "a_ci": f"{name_a}_ci",
                                  "roc_auc_b": f"roc_auc_{name_b}", "b_ci": f"{name_b}_ci",
                                  "diff_b_minus_a": f"{name_b}_minus_{name_a}"})
    print(table.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
