"""Evaluation metrics of the study, one section per kind."""
from __future__ import annotations

import logging
import math
from typing import Iterable

import numpy as np
import pandas as pd
import torch

log = logging.getLogger(__name__)

# ranking metrics
# Full ranking: the target's rank among all items. Ties count in the target's favour
# (rank = 1 + items scored strictly higher), so a model that scores every item alike
# would look perfect: the backbones' scores are continuous, and padding is -inf.


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """1-based rank of each row's target item: 1 + items with a strictly higher score."""
    scores = torch.as_tensor(scores)
    targets = torch.as_tensor(targets, device=scores.device).long()
    target_scores = scores.gather(1, targets[:, None])
    return 1 + (scores > target_scores).sum(dim=1)


def metrics_from_ranks(ranks: torch.Tensor, ks: Iterable[int]) -> dict[str, float]:
    """Mean HR@K and NDCG@K (one relevant item: NDCG = 1 / log2(rank + 1) when rank <= K)."""
    ranks = torch.as_tensor(ranks).double().cpu()
    gains = 1.0 / torch.log2(ranks + 1)
    out: dict[str, float] = {}
    for k in sorted(set(ks)):
        hit = ranks <= k
        out[f"hr@{k}"] = hit.double().mean().item() if len(ranks) else math.nan
        out[f"ndcg@{k}"] = torch.where(hit, gains, 0.0).mean().item() if len(ranks) else math.nan
    return out


def hit_ndcg_at_k(scores: torch.Tensor, targets: torch.Tensor, ks: Iterable[int]) -> dict[str, float]:
    """HR@K and NDCG@K of ``scores`` [B, n] against ``targets`` [B] (item indices)."""
    return metrics_from_ranks(target_ranks(scores, targets), ks)


# detection metrics
# One code path scores every noise detector, LLM and baselines alike, against the
# noise mask of its units. Undefined values (one class only, nothing flagged) are None.

CALIBRATION_BINS = 10


def detection_report(units: pd.DataFrame, scores: dict[str, pd.DataFrame], threshold: dict) -> dict:
    """Per detector and split: ROC-AUC, PR-AUC, top-1, precision/recall at the correction
    threshold (``config.correct.threshold``) and a calibration table."""
    from llm4dsr.names import SPLITS
    from llm4dsr.scores import split_thresholds
    from llm4dsr.units import item_table

    report: dict = {}
    for name, table in sorted(scores.items()):
        items = item_table(units, table, name=f"scores/{name}.parquet")
        cuts = split_thresholds(items, threshold)
        report[name] = {}
        for split in SPLITS:
            part = items[items["split"] == split]
            out = detection_metrics(part, cuts.get(split))
            out["units_unscored"] = int((units["split"] == split).sum()) - out["units"]
            report[name][split] = out
    return report


def run_detection(units_path, score_paths: list, detectors: list[str], threshold: dict, out_path) -> dict:
    """The workflow step of rule detection_metrics: detection.json for every detector."""
    from llm4dsr.io import read_parquet, write_json
    from llm4dsr.scores import read_scores

    report = detection_report(read_parquet(units_path), read_scores(score_paths, detectors), threshold)
    for name, splits in report.items():
        log.info("%s: %s", name, {s: (m["roc_auc"], m["top1"]) for s, m in splits.items()})
    write_json(report, out_path)
    return report


def detection_metrics(items: pd.DataFrame, threshold: float | None) -> dict:
    """Metrics of one detector on one split; ``items`` has unit, noise, prob (one row per item)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, p = items["noise"].to_numpy(), items["prob"].to_numpy()
    both = 0 < y.sum() < len(y)
    out = {"units": int(items["unit"].nunique()), "items": len(y), "noise_items": int(y.sum()),
           "roc_auc": float(roc_auc_score(y, p)) if both else None,
           "pr_auc": float(average_precision_score(y, p)) if both else None,
           **_top1(items), "threshold": threshold, **_at_threshold(y, p, threshold),
           "calibration": _calibration(y, p)}
    out["ece"] = (sum(b["count"] * abs(b["mean_prob"] - b["noise_rate"]) for b in out["calibration"] if b["count"])
                  / len(y)) if len(y) else None
    return out


def _top1(items: pd.DataFrame) -> dict:
    """Share of units holding noise whose most suspicious item is noise; a tie among k
    items counts as a random pick (noise items among them / k), so ties earn no credit."""
    top = items[items["prob"] == items.groupby("unit")["prob"].transform("max")]
    per_unit = top.groupby("unit")["noise"].mean()
    has_noise = items.groupby("unit")["noise"].max() > 0
    hit = per_unit[has_noise[has_noise].index]
    return {"top1": float(hit.mean()) if len(hit) else None, "top1_units": len(hit)}


def _at_threshold(y: np.ndarray, p: np.ndarray, threshold: float | None) -> dict:
    if threshold is None:
        return {"flagged": 0, "precision": None, "recall": None}
    flagged = p > threshold
    tp = int((flagged & (y == 1)).sum())
    return {"flagged": int(flagged.sum()),
            "precision": tp / int(flagged.sum()) if flagged.any() else None,
            "recall": tp / int(y.sum()) if y.sum() else None}


def _calibration(y: np.ndarray, p: np.ndarray) -> list[dict]:
    """Equal-width bins of predicted probability: count, mean prediction, observed noise rate."""
    bins = np.minimum((p * CALIBRATION_BINS).astype(int), CALIBRATION_BINS - 1)
    table = []
    for b in range(CALIBRATION_BINS):
        m = bins == b
        table.append({"lo": b / CALIBRATION_BINS, "hi": (b + 1) / CALIBRATION_BINS, "count": int(m.sum()),
                      "mean_prob": float(p[m].mean()) if m.any() else None,
                      "noise_rate": float(y[m].mean()) if m.any() else None})
    return table
