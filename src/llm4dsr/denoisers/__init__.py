"""The denoise stage: published denoisers for sequential recommendation behind one
interface (base.Denoiser), and the workflow step that fits one (rule denoise).

* ``hsd``: HSD (Zhang et al., CIKM 2022): user- and sequence-level inconsistency signals
  drop noisy items from the histories;
* ``steam``: STEAM (Lin et al., WWW 2023): an item-wise corrector (keep / delete / insert)
  trained jointly with a masked-item recommender by self-supervised corruption.

Each is fitted on one noise setting's windows, scores the items of units.parquet as a
detector does, corrects every window's history (never a target) and evaluates its own
recommender. A denoiser is registered by its name in llm4dsr.names.DENOISERS; its module
denoisers/<name>.py defines ``build()`` (llm4dsr.registry) and its hyperparameters are the
schema's ``denoise.<name>`` section.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd

from ..backbones.trainer import ranks_path
from ..io import Llm4dsrError, read_catalogue, read_parquet, write_json, write_parquet
from ..metrics import metrics_from_ranks
from ..scores import scores_frame
from .. import registry
from .base import CHANGES, Denoiser, apply_edits

log = logging.getLogger(__name__)

def make_denoiser(name: str) -> Denoiser:
    """An unfitted denoiser ``name``: its module denoisers/<name>.py defines ``build()``."""
    return registry.get("denoiser", name)()


def change_counts(changes: pd.DataFrame) -> dict[str, dict[str, dict[str, int]]]:
    """split -> op -> {"items": n, "noise": deleted items that were noise}."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for (split, op), g in changes.groupby(["split", "op"]):
        out.setdefault(split, {})[op] = {"items": len(g), "noise": int(g["was_noise"].sum())}
    return out


def run(name: str, windows_path: str | Path, units_path: str | Path, catalogue_path: str | Path,
        cfg: Mapping[str, Any], seed: int, ks: Iterable[int], out_windows: str | Path, out_changes: str | Path,
        out_scores: str | Path, out_json: str | Path, threads: int = 1,
        meta: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The workflow step: fit denoiser ``name`` (``cfg`` = config ``denoise.<name>``) on the
    train windows with its epoch chosen on valid, then write

    * ``out_windows`` / ``out_changes``: the corrected windows and the changes (the
      condition ``name`` of the backbones; formats in denoisers/base.py, docs/outputs.md);
    * ``out_scores``: the per-item noise scores of ``units_path`` (scores/{name}.parquet:
      ``logp`` the log-probability of noise, ``probs`` its exponential);
    * ``out_json``: its own recommender's test and valid metrics (full ranking, the backbones'
      format, so the results table takes it as model ``name``, condition ``name``), the test
      split read only now, after the fit; the training cost; the number of changes; and beside
      it (trainer.ranks_path) the rank of every test window's target, for the intervals.
    """
    windows = read_parquet(windows_path)
    units = read_parquet(units_path, ["unit", "user", "split", "items"])
    n_items = read_catalogue(catalogue_path).n_items
    start = time.perf_counter()
    model = make_denoiser(name).fit(windows, n_items, cfg, seed, threads)
    fit_seconds = time.perf_counter() - start
    t0 = time.perf_counter()
    logp = model.item_scores(units)
    write_parquet(scores_frame(units, logp, [np.exp(x) for x in logp]), out_scores)
    score_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    corrected, changes = model.correct(windows)
    write_parquet(corrected, out_windows)
    write_parquet(changes, out_changes)
    correct_seconds = time.perf_counter() - t0
    ks = sorted(set(ks))
    split_sizes = windows["split"].value_counts()
    test = model.rows(windows, "test")
    test_ranks = model.ranks(windows, "test")  # read once, after model selection
    out = {**(meta or {}), "model": name, "condition": name, "seed": seed, "n_items": n_items,
           **{f"n_{s}": int(split_sizes.get(s, 0)) for s in ("train", "valid", "test")},
           "valid": model.evaluate(windows, "valid", ks),
           "test": metrics_from_ranks(test_ranks, ks),
           "best_epoch": model.stats["best_epoch"], "epochs_run": model.stats["epochs_run"],
           "train_seconds": round(fit_seconds, 3), "score_seconds": round(score_seconds, 3),
           "correct_seconds": round(correct_seconds, 3), "changes": change_counts(changes),
           "config": dict(cfg)}
    log.info("%s: best epoch %d of %d, %.1f s; changes %s; test %s", name, out["best_epoch"], out["epochs_run"],
             fit_seconds, out["changes"], ", ".join(f"{k} {v:.4f}" for k, v in out["test"].items()))
    write_json(out, out_json)
    write_parquet(pd.DataFrame({"window": test["window"].to_numpy(dtype=np.int64),
                                "user": test["user"].to_numpy(dtype=np.int64),
                                "rank": test_ranks.numpy().astype(np.int64)}), ranks_path(out_json))
    return out


__all__ = ["CHANGES", "Denoiser", "apply_edits", "change_counts", "make_denoiser", "run"]
