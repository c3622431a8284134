"""A small synthetic results tree holding every file the report notebook reads.

The files are made by the package's own writers where one exists (units, detection
metrics, results tables), so their formats are the documented ones (docs/outputs.md).
"""
from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
from denoise_synth import make_log

from llm4dsr.backbones.results import aggregate
from llm4dsr.correct import CHANGE_COLUMNS, select
from llm4dsr.metrics import detection_report
from llm4dsr.units import item_table, make_units

BOOT = {"resamples": 200, "level": 0.95}  # config intervals (fewer replicates: tests)

DETECTORS = {"llm_trie": 1.0, "llm_first_token": 0.6, "popularity": 1.5, "cooccurrence": 0.8, "llm_embedding": 0.7,
             "combined": 2.0, "combined_collab": 1.8, "combined_no_embedding": 1.9}
THRESHOLD = {"kind": "percentile", "scale": "unit_prob", "train": 60, "test": 90}
HALF = 20  # items per community in denoise_synth: 2 * HALF items


def scores(units: pd.DataFrame, signal: float, rng: np.random.Generator) -> pd.DataFrame:
    """Per-item log-scores that rank noise higher by ``signal`` standard deviations."""
    rows = []
    for u, noise in zip(units["unit"], units["noise"]):
        logp = signal * np.asarray(noise) + rng.normal(size=len(noise))
        probs = np.exp(logp - logp.max())
        rows.append((u, (probs / probs.sum()).tolist(), logp.tolist()))
    return pd.DataFrame(rows, columns=["unit", "probs", "logp"])


def suggestions(items: pd.DataFrame, n_items: int, top_k: int = 3) -> pd.DataFrame:
    """suggestions.parquet of rule score: the next item id for each unit's top-k suspects."""
    top = items.sort_values(["unit", "prob"], ascending=[True, False]).groupby("unit").head(top_k)
    item = top["item"] % n_items + 1
    return pd.DataFrame({"unit": top["unit"], "index": top["idx"], "pos": top["pos"], "rank": 0, "item": item,
                         "title": [f"Movie number {i}" for i in item]}).reset_index(drop=True)


def backbone_run(path: Path, model: str, condition: str, seed: int, value: float,
                 test_windows: pd.DataFrame) -> None:
    """A backbone run's JSON and the ranks of the ``test_windows`` (those of windows.parquet,
    so that real runs of the same setting share them), hitting the top 10 more often as
    ``value`` rises."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(zlib.crc32(f"{model}-{condition}-{seed}".encode()))
    n = len(test_windows)
    hit = rng.random(n) < min(max(value * 3, 0.01), 0.99)
    ranks = np.where(hit, rng.integers(1, 11, n), rng.integers(11, 40, n))
    test = {f"{m}@{k}": float((ranks <= k).mean()) if m == "hr" else
            float(np.where(ranks <= k, 1 / np.log2(ranks + 1), 0).mean()) for m in ("hr", "ndcg") for k in (5, 10, 20)}
    path.write_text(json.dumps({"model": model, "condition": condition, "seed": seed, "test": test,
                                "valid": test, "best_epoch": 3, "train_seconds": 1.0}))
    pd.DataFrame({"window": test_windows["window"].to_numpy(), "user": test_windows["user"].to_numpy(),
                  "rank": ranks}).to_parquet(
        path.with_suffix(".ranks.parquet"))


def results_table(base: Path, conditions: list[str], models: list[str], rate: float, out: str) -> None:
    """Backbone runs (quality falls with the noise rate) aggregated into {out}.csv / .md.
    A run that exists already (the sweep's `noisy`) is reused, as the workflow does."""
    rng = np.random.default_rng(len(out))
    windows = pd.read_parquet(base / "windows.parquet")
    test = windows[windows["split"] == "test"]
    paths = []
    for model in models:
        for i, cond in enumerate(conditions):
            for seed in (0, 1):
                p = base / "backbone" / model / cond / f"seed{seed}.json"
                value = 0.1 - rate * 0.2 + 0.005 * i + 0.003 * rng.normal()
                if not p.exists():
                    backbone_run(p, model, cond, seed, value, test)
                paths.append(p)
    # every condition's windows are the setting's own here: the mostpop rows all alike
    aggregate(paths, base / f"{out}.csv", base / f"{out}.md", BOOT, 0,
              windows={c: base / "windows.parquet" for c in conditions}, catalogue=base.parent / "data" / "items.parquet")


def build(root: Path, dataset: str = "synth", noises: tuple[str, ...] = ("uniform-0.0", "uniform-0.1", "popularity-0.1"),
          main: str = "uniform-0.1") -> Path:
    """Write results/{dataset}/... under ``root``; returns the dataset folder."""
    rng = np.random.default_rng(0)
    top = root / dataset
    (top / "data").mkdir(parents=True)
    n_items = 2 * HALF
    pd.DataFrame({"item": np.arange(1, n_items + 1), "title": [f"Movie number {i} ({1950 + i})" for i in
                  range(1, n_items + 1)], "raw_id": [str(i) for i in range(1, n_items + 1)],
                  "count": rng.integers(1, 50, n_items)}).to_parquet(top / "data" / "items.parquet")
    (top / "data" / "stats.json").write_text(json.dumps({"users": 40, "items": n_items, "interactions": 800}))
    for noise in noises:
        base = top / noise
        rate = float(noise.rsplit("-", 1)[1])
        seq, windows = make_log(rate=rate, seed=1)
        units = make_units(seq, windows, "history", 5)
        (base / "scores").mkdir(parents=True)
        for name, df in (("sequences", seq), ("windows", windows), ("units", units)):
            df.to_parquet(base / f"{name}.parquet")
        tables = {d: scores(units, s, rng) for d, s in DETECTORS.items()}
        for d, t in tables.items():
            t.to_parquet(base / "scores" / f"{d}.parquet")
        (base / "detection.json").write_text(json.dumps(detection_report(units, tables, THRESHOLD, BOOT, 0)))
        results_table(base, ["clean", "noisy", "llm4dsr", "popularity"], ["sasrec", "gru4rec"], rate, "results")
        if noise == main:
            results_table(base, ["noisy", "llm4dsr-p0", "llm4dsr-p50", "llm4dsr-p90"], ["sasrec"], rate, "sweep")
            chosen = select(item_table(units, tables["llm_trie"]), THRESHOLD, {"train": 2, "test": 1})
            changes = chosen.assign(old_item=chosen["item"], new_item=(chosen["item"] % n_items) + 1,
                                    was_noise=chosen["noise"])
            (base / "correct" / "llm4dsr").mkdir(parents=True)
            changes[CHANGE_COLUMNS].to_parquet(base / "correct" / "llm4dsr" / "changes.parquet")
            suggestions(item_table(units, tables["llm_trie"]), n_items).to_parquet(base / "suggestions.parquet")
    (top / "finetune" / "uniform-0.0").mkdir(parents=True)  # the default denoiser: finetune.noise
    steps = np.arange(1, 31)
    pd.DataFrame({"step": steps, "loss": 2 / np.sqrt(steps) + 0.05 * rng.random(30), "tokens": 1200,
                  "seconds": steps * 9.0}).to_csv(top / "finetune" / "uniform-0.0" / "loss.tsv", sep="\t", index=False)
    pd.DataFrame({"step": [0, 15, 30], "examples_seen": [0, 120, 240], "top1": [0.1, 0.2, 0.3],
                  "roc_auc": [0.5, 0.6, 0.7], "roc_auc_ci_low": [0.4, 0.5, 0.6], "roc_auc_ci_high": [0.6, 0.7, 0.8],
                  "examples": 100, "valid_roc_auc_within": [0.52, 0.5, 0.48],
                  "valid_roc_auc_within_ci_low": [0.47, 0.45, 0.43], "valid_roc_auc_within_ci_high": [0.57, 0.55, 0.53],
                  "valid_units": 150}).to_csv(top / "finetune" / "uniform-0.0" / "learning_curve.tsv",
                                                                          sep="\t", index=False)
    return top
