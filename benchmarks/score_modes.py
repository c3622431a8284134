"""Per-window (the paper) against per-history scoring of the train period: cost and
detection quality, side by side on the same users.

    .venv/bin/python benchmarks/score_modes.py [--users 20] [--noise uniform-0.1] [--threads 2] [--model smollm2-135m]

One user's sliding windows overlap, so the paper's per-window mode scores each
interaction up to 11 times; the history mode scores each one once, in consecutive
blocks of ``--block`` items. Both use the workflow's fine-tuned model (the adapter in
results/<dataset>/export/ when it was trained on ``--model``, else the base model) and its units code, and
are scored by the study's detection metrics (pooled over the unit's items).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from llm4dsr import metrics, names, units
from llm4dsr.io import read_parquet
from llm4dsr.llm import resolve, trained_on
from llm4dsr.score import LlamaScorer, score_units


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results/ml-latest-small")
    ap.add_argument("--noise", default="uniform-0.1")
    ap.add_argument("--users", type=int, default=20, help="users sampled (seeded) for the comparison")
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--train-noise", default="uniform-0.0", help="the setting the workflow's adapter was fine-tuned on")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="smollm2-135m", help="an offline GGUF base model (llm.base_model)")
    args = ap.parse_args()
    res = Path(args.results)
    seq = read_parquet(res / args.noise / "sequences.parquet")
    win = read_parquet(res / args.noise / "windows.parquet")
    items = read_parquet(res / "data" / "items.parquet")
    titles = dict(zip(items["item"].astype(int), items["title"]))
    users = np.random.default_rng(0).choice(seq["user"].unique(), size=args.users, replace=False)
    seq, win = seq[seq["user"].isin(users)], win[win["user"].isin(users)]
    base = resolve(args.model)
    adapter = res / "export" / args.train_noise / "adapter.gguf"
    tuned = adapter.exists() and trained_on(res / "finetune" / args.train_noise / "adapter", base)  # if on this model
    scorer = LlamaScorer(base.gguf_path, adapter if tuned else None, threads=args.threads)
    print(f"model: {args.model}{' + ' + str(adapter) if tuned else ' (base, no adapter)'}; "
          f"{args.users} users, {args.noise}, {args.threads} threads")
    print(f"{'mode':8} {'units':>6} {'items scored':>13} {'seconds':>8} {'s/interaction':>14} "
          f"{'AUC trie':>9} {'AUC first':>10} {'top1 trie':>10}")
    interactions = int(seq["split"].isin(names.TRAIN_PERIOD).sum())
    for mode in ("window", "history"):
        u = units.make_units(seq, win, mode, args.block)
        u = u[u["split"] == "train"].reset_index(drop=True)
        t0 = time.time()
        tables, _, _ = score_units(scorer, u, titles, ("trie", "first_token"), progress=False)
        full, first = tables["trie"], tables["first_token"]
        secs = time.time() - t0
        m_full = metrics.detection_metrics(units.item_table(u, full), None)
        m_first = metrics.detection_metrics(units.item_table(u, first), None)
        print(f"{mode:8} {len(u):6d} {int(u['items'].map(len).sum()):13d} {secs:8.1f} {secs / interactions:14.3f} "
              f"{m_full['roc_auc']:9.3f} {m_first['roc_auc']:10.3f} {m_full['top1']:10.3f}")
    print(f"({interactions} train-period interactions; s/interaction = seconds / interactions to correct)")


if __name__ == "__main__":
    main()
