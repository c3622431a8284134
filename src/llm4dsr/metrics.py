"""Evaluation metrics of the study, one section per kind."""
from __future__ import annotations

import logging
import math
from typing import Iterable

import numpy as np
import pandas as pd
import torch

from llm4dsr import intervals, names

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


def paired_comparisons(detectors: list[str]) -> list[tuple[str, str]]:
    """The differences detection.json gives with a paired interval: each LLM score minus
    each simple detector, each published denoiser and the other LLM scores; each detector
    that reads the LLM another way (its title embeddings) minus each LLM score and each
    simple detector; and the combination with the LLM minus the one without it (what the
    LLM adds)."""
    llm = sorted((d for d in detectors if d in names.LLM_SCORES), key=names.LLM_SCORES.index)  # trie first
    other_llm = [d for d in detectors if d in names.LLM_DETECTORS]
    simple = [d for d in detectors if (d in names.DETECTORS and d not in other_llm) or d in names.DENOISERS]
    pairs = [(a, b) for a in llm for b in simple] + [(a, b) for i, a in enumerate(llm) for b in llm[i + 1:]]
    pairs += [(a, b) for a in other_llm for b in [*llm, *simple]]
    for other in ("combined_collab", "combined_no_embedding"):  # what the LLM adds; what its embeddings add
        if {"combined", other} <= set(detectors):
            pairs.append(("combined", other))
    return pairs


def detection_report(units: pd.DataFrame, scores: dict[str, pd.DataFrame], threshold: dict,
                     intervals_cfg: dict, seed: int) -> dict:
    """Per detector and split: ROC-AUC (pooled over the split's items, and the mean of each
    unit's own, ``roc_auc_within``), PR-AUC, top-1 with their intervals (users resampled),
    precision/recall at the correction threshold (``config.correct.threshold``) and a
    calibration table; and, under ``paired``, the difference of each pair of
    :func:`paired_comparisons` with its paired interval."""
    from llm4dsr.scores import split_thresholds, threshold_column
    from llm4dsr.units import item_table

    resamples, level = intervals_cfg["resamples"], intervals_cfg["level"]
    everything = item_table(units)
    weights = {}  # split -> (row index of (unit, idx), [B, rows] user multiplicities)
    for split in names.SPLITS:
        part = everything[everything["split"] == split]
        index = pd.Series(np.arange(len(part)), index=pd.MultiIndex.from_arrays([part["unit"], part["idx"]]))
        weights[split] = (index, intervals.user_weights(part["user"].to_numpy(), resamples, seed, f"detection-{split}"))

    def rows(split: str, items: pd.DataFrame) -> np.ndarray:
        return weights[split][0].loc[list(zip(items["unit"], items["idx"]))].to_numpy()

    report: dict = {}
    tables = {}
    for name, table in sorted(scores.items()):
        items = item_table(units, table, name=f"scores/{name}.parquet")
        tables[name] = items
        cuts = split_thresholds(items, threshold)
        report[name] = {}
        for split in names.SPLITS:
            part = items[items["split"] == split]
            out = detection_metrics(part, cuts.get(split), threshold_column(threshold))
            out["units_unscored"] = int((units["split"] == split).sum()) - out["units"]
            out["users"] = int(part["user"].nunique())
            reps = _replicates(part, weights[split][1][:, rows(split, part)])
            for metric, values in reps.items():
                out[f"{metric}_ci"] = intervals.interval(values, level) if out[metric] is not None else None
            report[name][split] = out
    report["paired"] = {}
    for a, b in paired_comparisons(list(tables)):
        report["paired"][f"{a} - {b}"] = {}
        for split in names.SPLITS:
            pa, pb = (tables[d][tables[d]["split"] == split] for d in (a, b))
            both = pa.merge(pb[["unit", "idx"]], on=["unit", "idx"])  # the items both scored
            pb = pb.merge(both[["unit", "idx"]], on=["unit", "idx"])
            w = weights[split][1][:, rows(split, both)]
            ra, rb = _replicates(both, w), _replicates(pb, w)
            ma, mb = detection_metrics(both, None), detection_metrics(pb, None)
            report["paired"][f"{a} - {b}"][split] = {
                metric: {"diff": None if ma[metric] is None or mb[metric] is None else ma[metric] - mb[metric],
                         "ci": None if ma[metric] is None or mb[metric] is None
                         else intervals.interval(ra[metric] - rb[metric], level)}
                for metric in ra}
    return report


REPLICATED = ("roc_auc", "pr_auc", "top1", "roc_auc_within")  # the metrics with an interval


def _replicates(items: pd.DataFrame, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Bootstrap replicates of ROC-AUC, PR-AUC, top-1 and within-unit ROC-AUC of ``items``
    (item_table rows, sorted by unit and idx) under ``weights`` [B, rows] (users resampled)."""
    if items.empty:
        return {m: np.full(len(weights), np.nan) for m in REPLICATED}
    y, p = items["noise"].to_numpy(), items["prob"].to_numpy()
    hits = _unit_hits(items)
    first_row = np.flatnonzero(np.r_[True, items["unit"].to_numpy()[1:] != items["unit"].to_numpy()[:-1]])
    unit_weights = weights[:, first_row]  # a unit's items share its user's weight
    has_noise = items["unit"].iloc[first_row].isin(hits.index).to_numpy()
    hit = items["unit"].iloc[first_row].map(hits).to_numpy(dtype=float)
    # a unit's ROC-AUC is fixed by its own items; a replicate only reweights the units
    # by their user's multiplicity, so the interval resamples users, not units
    within = items["unit"].iloc[first_row].map(unit_roc_auc(items)).to_numpy(dtype=float)
    mixed = np.isfinite(within)
    return {"roc_auc": intervals.roc_auc(y, p, weights),
            "pr_auc": intervals.average_precision(y, p, weights),
            "top1": intervals.weighted_mean(hit[has_noise], unit_weights[:, has_noise]),
            "roc_auc_within": intervals.weighted_mean(within[mixed], unit_weights[:, mixed])}


def run_detection(units_path, score_paths: list, detectors: list[str], threshold: dict, intervals_cfg: dict,
                  seed: int, out_path) -> dict:
    """The workflow step of rule detection_metrics: detection.json for every detector."""
    from llm4dsr.io import read_parquet, write_json
    from llm4dsr.scores import read_scores

    report = detection_report(read_parquet(units_path), read_scores(score_paths, detectors), threshold,
                              intervals_cfg, seed)
    for name, splits in report.items():
        if name != "paired":
            log.info("%s: %s", name, {s: (m["roc_auc"], m["roc_auc_ci"], m["users"]) for s, m in splits.items()})
    write_json(report, out_path)
    return report


def detection_metrics(items: pd.DataFrame, threshold: float | None, column: str = "prob") -> dict:
    """Metrics of one detector on one split; ``items`` has unit, noise, prob (one row per item).
    Precision and recall at ``threshold`` compare it with ``column`` (prob, or logp on the
    log-score scale); every other metric reads prob."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, p = items["noise"].to_numpy(), items["prob"].to_numpy()
    both = 0 < y.sum() < len(y)
    out = {"units": int(items["unit"].nunique()), "items": len(y), "noise_items": int(y.sum()),
           "roc_auc": float(roc_auc_score(y, p)) if both else None,
           "pr_auc": float(average_precision_score(y, p)) if both else None,
           **_within(items), **_top1(items), "threshold": threshold, **_at_threshold(y, items[column].to_numpy(), threshold),
           "calibration": _calibration(y, p)}
    out["ece"] = (sum(b["count"] * abs(b["mean_prob"] - b["noise_rate"]) for b in out["calibration"] if b["count"])
                  / len(y)) if len(y) else None
    return out


def unit_roc_auc(items: pd.DataFrame) -> pd.Series:
    """ROC-AUC of each unit holding both noise and clean items, over its own items (ties
    count one half), indexed by unit. Within one history the detector only has to say
    which item is noise; a pooled ROC-AUC also compares items across histories, so a
    probability normalised over the unit (1/n for an item of an n-item history) ranks
    by history length as much as by suspicion (DESIGN.md section 9)."""
    unit, y = items["unit"].to_numpy(), items["noise"].to_numpy(dtype=float)
    rank = items.groupby("unit")["prob"].rank(method="average").to_numpy()  # average ranks: ties count one half
    g = pd.DataFrame({"unit": unit, "y": y, "ry": rank * y}).groupby("unit")
    pos, n, rank_sum = g["y"].sum(), g.size(), g["ry"].sum()
    neg = n - pos
    mixed = (pos > 0) & (neg > 0)
    # Mann-Whitney: the pairs a noise item wins = its rank sum less the pairs among noise items
    return ((rank_sum - pos * (pos + 1) / 2) / (pos * neg))[mixed]


def _within(items: pd.DataFrame) -> dict:
    """Mean over units holding noise and clean items of each unit's ROC-AUC (unweighted: each
    history counts once, whatever its length), and how many units it averages."""
    auc = unit_roc_auc(items)
    return {"roc_auc_within": float(auc.mean()) if len(auc) else None, "roc_auc_within_units": len(auc)}


def _unit_hits(items: pd.DataFrame) -> pd.Series:
    """Per unit holding noise: 1 if its most suspicious item is noise; a tie among k items
    counts as a random pick (noise items among them / k), so ties earn no credit."""
    top = items[items["prob"] == items.groupby("unit")["prob"].transform("max")]
    per_unit = top.groupby("unit")["noise"].mean()
    has_noise = items.groupby("unit")["noise"].max() > 0
    return per_unit[has_noise[has_noise].index]


def _top1(items: pd.DataFrame) -> dict:
    """Share of units holding noise whose most suspicious item is noise (ties: a random pick)."""
    hit = _unit_hits(items)
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
