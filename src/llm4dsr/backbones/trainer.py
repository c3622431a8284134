"""Train and evaluate a backbone recommender on one condition's windows.

Protocol (DESIGN.md section 1, item 9): train on ``split == 'train'`` windows with the
configured objective (objectives.py); after every epoch score the ``valid`` windows and
keep the weights with the best ``select_metric`` (NDCG@10, or the reference's NDCG@20);
stop after ``patience`` epochs without improvement. Only then are the ``test`` windows
read, once, and scored with the selected weights. (The reference code selects and
early-stops on the test split; this one never lets test data near training.)

``test_selection_diagnostic`` (opt-in) is the one exception, and changes nothing above:
the test windows are then also scored after every epoch, only to report, beside the
result, how much selecting on test would have inflated it (a diagnostic gap, never a
result). Which weights are selected, and the test metrics reported, are the same.

Evaluation is a full ranking over all items 1..n_items: no sampled negatives, and
items already in the history are NOT removed from the ranking -- the standard choice
for sliding-window datasets, where a target may legitimately repeat a history item.
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, NamedTuple

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from ..io import Llm4dsrError, read_catalogue, read_json, read_parquet, write_json, write_parquet
from ..metrics import metrics_from_ranks, target_ranks
from . import SequentialRecommender, build
from .objectives import OBJECTIVES

log = logging.getLogger(__name__)

EVAL_BATCH = 1024


class Windows(NamedTuple):
    history: torch.Tensor  # [N, max_len] item ids, left-padded with 0
    target: torch.Tensor   # [N]


@dataclass
class Fit:
    model: SequentialRecommender  # holds the selected (best-validation) weights
    best_epoch: int
    epochs_run: int
    valid: dict[str, float]
    train_seconds: float
    sequences_per_s: float
    test_per_epoch: list[dict[str, float]] | None = None  # the diagnostic only (test_selection_diagnostic)


def load_split(path: str | Path, split: str) -> pd.DataFrame:
    """The windows of one split from a windows.parquet (docs/outputs.md)."""
    df = read_parquet(path, columns=["window", "user", "split", "history", "target"])
    return df[df["split"] == split].reset_index(drop=True)


def to_tensors(windows: pd.DataFrame, n_items: int, max_len: int, source: str | Path = "windows") -> Windows:
    """Left-pad each history to ``max_len`` (keeping its newest items) and check item ids."""
    hist = np.zeros((len(windows), max_len), dtype=np.int64)
    for i, h in enumerate(windows["history"]):
        h = np.asarray(h, dtype=np.int64)[-max_len:]
        if len(h):
            hist[i, max_len - len(h):] = h
    target = windows["target"].to_numpy(dtype=np.int64, copy=True)
    bad = (hist < 0) | (hist > n_items)
    if bad.any() or ((target < 1) | (target > n_items)).any():
        raise Llm4dsrError(f"{source}: item ids outside 1..{n_items} (n_items from items.parquet)")
    return Windows(torch.from_numpy(hist), torch.from_numpy(target))


@torch.no_grad()
def ranks(model: SequentialRecommender, data: Windows) -> torch.Tensor:
    """Each target's 1-based rank under a full ranking over all items."""
    model.eval()
    device = next(model.parameters()).device
    return torch.cat([target_ranks(model(h.to(device)), t.to(device)).cpu()
                      for h, t in zip(data.history.split(EVAL_BATCH), data.target.split(EVAL_BATCH))])


def evaluate(model: SequentialRecommender, data: Windows, ks: Iterable[int]) -> dict[str, float]:
    """HR@K and NDCG@K of the targets under a full ranking over all items."""
    return metrics_from_ranks(ranks(model, data), ks)


def ranks_path(json_path: str | Path) -> Path:
    """Where a run's per-window test ranks lie: seed{s}.json -> seed{s}.ranks.parquet."""
    return Path(json_path).with_suffix(".ranks.parquet")


def eval_ks(cfg: Mapping[str, Any]) -> list[int]:
    """The K of every metric computed: the reported ``ks`` and the selection metric's."""
    return sorted(set(cfg["ks"]) | {int(cfg["select_metric"].split("@")[1])})


def fit(model_name: str, n_items: int, train: Windows, valid: Windows, cfg: Mapping[str, Any],
        seed: int, max_len: int = 10, device: str | None = None, diagnostic_test: Windows | None = None) -> Fit:
    """Train on ``train``; select and early-stop on ``valid``'s ``select_metric``.

    The selected weights are those of the first epoch with the best valid select_metric.
    ``cfg`` is the config's `backbone` section. Sees no test data, unless
    ``diagnostic_test`` is given (test_selection_diagnostic): its metrics after every
    epoch are then recorded in ``Fit.test_per_epoch`` and used for nothing else.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(seed)
    order = torch.Generator().manual_seed(seed)
    model = build(model_name, n_items, cfg, max_len).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=cfg["lr"])
    objective = OBJECTIVES[cfg["objective"]]
    select = cfg["select_metric"]
    ks = eval_ks(cfg)
    test_per_epoch = [] if diagnostic_test is not None else None
    best, best_epoch, best_state, best_valid = -math.inf, 0, None, {}
    step_seconds, start = 0.0, time.perf_counter()
    n = len(train.target)
    epochs = tqdm(range(1, cfg["max_epochs"] + 1), desc=model_name, disable=None)
    for epoch in epochs:
        model.train()
        t0, total = time.perf_counter(), 0.0
        for idx in torch.randperm(n, generator=order).split(cfg["batch_size"]):
            loss = objective(model, train.history[idx].to(device), train.target[idx].to(device))
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(idx)
        step_seconds += time.perf_counter() - t0
        metrics = evaluate(model, valid, ks)
        if metrics[select] > best:
            best, best_epoch, best_valid = metrics[select], epoch, metrics
            best_state = copy.deepcopy(model.state_dict())
        if test_per_epoch is not None:  # the diagnostic: recorded, never read by selection
            test_per_epoch.append(evaluate(model, diagnostic_test, ks))
        log.info("epoch %d: train loss %.4f, valid %s %.4f (best %.4f at epoch %d)",
                 epoch, total / n, select, metrics[select], best, best_epoch)
        epochs.set_postfix(loss=f"{total / n:.3f}", valid=f"{metrics[select]:.4f}")
        if epoch - best_epoch >= cfg["patience"]:
            break
    model.load_state_dict(best_state)
    return Fit(model, best_epoch, epoch, best_valid, time.perf_counter() - start, n * epoch / step_seconds,
               test_per_epoch)


def test_selection_gap(fit_result: Fit, reported: Mapping[str, float], select: str) -> dict[str, Any]:
    """The diagnostic of test_selection_diagnostic: the epoch a selection on the test
    split's ``select`` would have picked (first best), its test metrics, and their gap
    to the reported (validation-selected) ones. Not a result: what the flaw would add."""
    per_epoch = fit_result.test_per_epoch
    epoch = 1 + max(range(len(per_epoch)), key=lambda i: (per_epoch[i][select], -i))
    chosen = per_epoch[epoch - 1]
    return {"note": "diagnostic, not a result: the same run selected on the test split",
            "select_metric": select, "epoch": epoch, "valid_selected_epoch": fit_result.best_epoch,
            "test": {k: chosen[k] for k in reported}, "gap": {k: chosen[k] - reported[k] for k in reported},
            "test_per_epoch": [m[select] for m in per_epoch]}


def run(windows_path: str | Path, items_path: str | Path, out_path: str | Path, model_name: str,
        cfg: Mapping[str, Any], seed: int, max_len: int = 10, threads: int | None = None,
        meta: Mapping[str, Any] | None = None, device: str | None = None) -> dict[str, Any]:
    """One backbone run: fit on train/valid, then read and score the test windows once.

    Writes ``out_path`` (JSON): test and valid metrics, best epoch, epochs run, train
    seconds, sequences/s, plus ``meta`` (dataset, noise, condition); and beside it the
    rank of every test window's target (:func:`ranks_path`), which the results table
    resamples for its intervals. With ``cfg["test_selection_diagnostic"]``, also the
    diagnostic gap of a selection on test.
    """
    if threads:
        torch.set_num_threads(threads)
    n_items = read_catalogue(items_path).n_items
    train = to_tensors(load_split(windows_path, "train"), n_items, max_len, windows_path)
    valid = to_tensors(load_split(windows_path, "valid"), n_items, max_len, windows_path)
    if not len(train.target) or not len(valid.target):
        raise Llm4dsrError(f"{windows_path}: needs train and valid windows")
    log.info("%s: %d train, %d valid windows, %d items", windows_path, len(train.target), len(valid.target), n_items)
    diagnostic = None
    if cfg["test_selection_diagnostic"]:  # opt-in: test metrics per epoch, for the diagnostic gap only
        diagnostic = to_tensors(load_split(windows_path, "test"), n_items, max_len, windows_path)
    result = fit(model_name, n_items, train, valid, cfg, seed, max_len, device, diagnostic_test=diagnostic)
    # The test split is read only now, after model selection is final.
    test_windows = load_split(windows_path, "test")
    test = to_tensors(test_windows, n_items, max_len, windows_path)
    if not len(test.target):
        raise Llm4dsrError(f"{windows_path}: no test windows")
    test_ranks = ranks(result.model, test)
    out = {**(meta or {}), "model": model_name, "seed": seed, "n_items": n_items,
           "n_train": len(train.target), "n_valid": len(valid.target), "n_test": len(test.target),
           "test_users": int(test_windows["user"].nunique()),
           "test": metrics_from_ranks(test_ranks, cfg["ks"]),
           "valid": result.valid, "select_metric": cfg["select_metric"], "objective": cfg["objective"],
           "best_epoch": result.best_epoch, "epochs_run": result.epochs_run,
           "train_seconds": round(result.train_seconds, 3),
           "sequences_per_s": round(result.sequences_per_s, 1),
           "device": str(next(result.model.parameters()).device)}
    if result.test_per_epoch is not None:
        out["test_selection_diagnostic"] = test_selection_gap(result, out["test"], cfg["select_metric"])
    log.info("test: %s", ", ".join(f"{k} {v:.4f}" for k, v in out["test"].items()))
    write_parquet(pd.DataFrame({"window": test_windows["window"].to_numpy(np.int64),
                                "user": test_windows["user"].to_numpy(np.int64),
                                "rank": test_ranks.numpy().astype(np.int64)}), ranks_path(out_path))
    write_json(out, out_path)
    return out


def run_seeds(windows_path: str | Path, items_path: str | Path, out_paths: list, model_name: str,
              cfg: Mapping[str, Any], seeds: list[int], max_len: int = 10, threads: int | None = None,
              meta: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """:func:`run` for every seed in one process (the tiny models train in seconds; the
    interpreter and torch would otherwise start once per seed)."""
    return [run(windows_path, items_path, out, model_name, cfg, seed, max_len, threads, meta)
            for out, seed in zip(out_paths, seeds, strict=True)]


# What a backbone sees of a windows file: same_windows() compares only these.
_TRAINED_ON = ["window", "user", "split", "history", "target"]


def same_windows(a: str | Path, b: str | Path) -> bool:
    """Whether two windows files give a backbone the same windows (ids, splits, items)."""
    x, y = (read_parquet(p, columns=_TRAINED_ON)[_TRAINED_ON] for p in (a, b))
    return len(x) == len(y) and all(
        x[c].map(lambda v: tuple(v) if isinstance(v, np.ndarray) else v).equals(
            y[c].map(lambda v: tuple(v) if isinstance(v, np.ndarray) else v)) for c in _TRAINED_ON)


def copy_seeds(source_runs: list, source_windows: str | Path, windows_path: str | Path, out_paths: list,
               meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The runs of another job that trained on the very same windows, as this job's runs:
    training is seeded and deterministic, so a second training would repeat them exactly
    (clean in every noise setting, noisy at rate 0). Each copy names its source
    (``same_windows_as``) and carries this job's ``meta``; different windows stop the run."""
    if not same_windows(source_windows, windows_path):
        raise Llm4dsrError(f"{windows_path}: windows differ from {source_windows}, whose backbone runs it was to reuse")
    outs = []
    for src, out in zip(source_runs, out_paths, strict=True):
        run_ = {**read_json(src), **meta, "same_windows_as": str(src)}
        write_parquet(read_parquet(ranks_path(src)), ranks_path(out))
        write_json(run_, out)
        outs.append(run_)
    log.info("%d runs copied from %s (same windows)", len(outs), Path(source_runs[0]).parent)
    return outs
