"""Compare two LLM denoisers' noise detection on the same units, paired by user.

Used to choose the quick preset's denoiser (README, "Which denoiser the quick study
uses"): the single model fine-tuned on uniform-0.0 windows against the one fine-tuned on
the scored setting's own observed windows (finetune.per_setting). For each split it
prints both ROC-AUCs (over the items of the units, against the injected-noise mask), their
difference, and a 95% interval of the difference from a user-level bootstrap (users are
the unit of independence: every unit of a drawn user is kept, with its multiplicity).

    python benchmarks/compare_detection.py --units results/D/uniform-0.1/units.parquet \\
        --a single=PATH/llm_full_title.parquet --b per_setting=PATH/llm_full_title.parquet
"""
from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from llm4dsr.io import read_parquet
from llm4dsr.units import item_table


def _auc(y: np.ndarray, p: np.ndarray, w: np.ndarray | None = None) -> float:
    return float(roc_auc_score(y, p, sample_weight=w)) if 0 < y.sum() < len(y) else float("nan")


def compare(units: pd.DataFrame, a: pd.DataFrame, b: pd.DataFrame, n_boot: int = 2000, seed: int = 0) -> pd.DataFrame:
    ta, tb = item_table(units, a), item_table(units, b)
    both = ta.merge(tb[["unit", "idx", "prob"]], on=["unit", "idx"], suffixes=("_a", "_b"))
    rows = []
    rng = np.random.default_rng(seed)
    for split in ("train", "valid", "test"):
        part = both[both["split"] == split]
        if part.empty:
            continue
        y, pa, pb = part["noise"].to_numpy(), part["prob_a"].to_numpy(), part["prob_b"].to_numpy()
        users = part["user"].to_numpy()
        uniq, inverse = np.unique(users, return_inverse=True)
        diffs = []
        for _ in range(n_boot):  # user-level bootstrap: weights = how often each user is drawn
            counts = np.bincount(rng.integers(len(uniq), size=len(uniq)), minlength=len(uniq))
            w = counts[inverse].astype(float)
            keep = w > 0
            diffs.append(_auc(y[keep], pb[keep], w[keep]) - _auc(y[keep], pa[keep], w[keep]))
        lo, hi = np.nanpercentile(diffs, [2.5, 97.5])
        rows.append({"split": split, "units": part["unit"].nunique(), "users": len(uniq), "items": len(y),
                     "noise_items": int(y.sum()), "roc_auc_a": _auc(y, pa), "roc_auc_b": _auc(y, pb),
                     "diff_b_minus_a": _auc(y, pb) - _auc(y, pa), "ci95_lo": lo, "ci95_hi": hi})
    return pd.DataFrame(rows)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--units", required=True, help="units.parquet the two score tables score")
    ap.add_argument("--a", required=True, help="NAME=scores.parquet (the reference denoiser)")
    ap.add_argument("--b", required=True, help="NAME=scores.parquet (the one compared with it)")
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    (name_a, path_a), (name_b, path_b) = (x.split("=", 1) for x in (args.a, args.b))
    table = compare(read_parquet(args.units), read_parquet(path_a), read_parquet(path_b), args.boot, args.seed)
    table = table.rename(columns={"roc_auc_a": f"roc_auc_{name_a}", "roc_auc_b": f"roc_auc_{name_b}",
                                  "diff_b_minus_a": f"{name_b}_minus_{name_a}"})
    print(table.round(4).to_string(index=False))


if __name__ == "__main__":
    main()
