"""Does a data regime contain the effect the study measures? (DESIGN.md section 9)

For each candidate dataset setting (offline sources only), the study's own data, window
and noise stages build the clean and the noisy windows; a backbone trains on each (the
config's backbone section, validation-selected) and a most-popular list is scored on
the same test windows. Printed per candidate, every figure with its 95% interval (test
users resampled, paired where two figures share the windows):

  - the size of the data and the LLM's work it implies (history items the LLM must score
    per noise setting: train interactions + valid and test history items);
  - clean test NDCG@10 of the backbone and of most-popular, and backbone - mostpop;
  - clean - noisy NDCG@10 at the noise setting given (default uniform-0.2);
  - `valid_clean`: the clean backbone's validation NDCG@10 (seeds averaged), the only
    figure a choice between hyperparameter variants may use (the test figures above
    report what the chosen variant gives).

    .venv/bin/python benchmarks/data_regime.py [--model sasrec] [--seeds 0 1] [--noise uniform-0.2]
        [--only NAME ...] [--threads 2] [--set KEY=VALUE ...] [--workdir results/benchmarks/data_regime]

A candidate is "contains the effect" when both paired intervals exclude 0.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from llm4dsr import config, data, noise
from llm4dsr.backbones import reference, trainer
from llm4dsr.backbones.results import per_window
from llm4dsr.intervals import interval, user_weights, weighted_mean
from llm4dsr.io import read_parquet

# name -> the dataset entry (config datasets.<name>); every source here works offline
CANDIDATES = {
    "mlsmall-k3-h15-u300": {"source": "ml-latest-small", "kcore": 3, "max_items_per_user": 15, "max_users": 300},
    "mlsmall-k5-h15": {"source": "ml-latest-small", "kcore": 5, "max_items_per_user": 15, "max_users": None},
    "mlsmall-k5-h20-u400": {"source": "ml-latest-small", "kcore": 5, "max_items_per_user": 20, "max_users": 400},
    "mlsmall-k5-h20": {"source": "ml-latest-small", "kcore": 5, "max_items_per_user": 20, "max_users": None},
    "mlsmall-k5-h30": {"source": "ml-latest-small", "kcore": 5, "max_items_per_user": 30, "max_users": None},
    "ml100k-k5-h15": {"source": "ml-100k", "kcore": 5, "max_items_per_user": 15, "max_users": None},
    "ml100k-k5-h20": {"source": "ml-100k", "kcore": 5, "max_items_per_user": 20, "max_users": None},
    "ml100k-k5-h30": {"source": "ml-100k", "kcore": 5, "max_items_per_user": 30, "max_users": None},
    "ml100k-k5-all": {"source": "ml-100k", "kcore": 5, "max_items_per_user": None, "max_users": None},
}


def ndcg(ranks_file: Path) -> tuple[np.ndarray, np.ndarray]:
    r = read_parquet(ranks_file).sort_values("window", kind="stable")
    return r["user"].to_numpy(), per_window(r["rank"].to_numpy(), "ndcg@10")


def measure(name: str, entry: dict, args, cfg: dict) -> dict:
    work = Path(args.workdir) / name
    window = {**cfg["window"], "min_test_users": 1}
    stats = data.run(config.dataset(entry), window, cfg["seed"], work / "data", name=name)
    backbone = {**config.backbone_of(cfg["backbone"], args.model),
                **{k: config._number(v) for k, v in (kv.split("=", 1) for kv in args.set)}}
    out = {"candidate": name, "set": args.set, "users": stats["users"], "items": stats["items"],
           "interactions": stats["interactions"], "train_windows": stats["windows"]["train"],
           "test_users": stats["eval_users_kept"]["test"]}
    per = {}
    for setting in ("uniform-0.0", args.noise):
        noise.run(work / "data" / "interactions.parquet", work / "data" / "items.parquet", setting, window,
                  cfg["seed"], work / setting)
        windows = read_parquet(work / setting / "windows.parquet")
        if setting == "uniform-0.0":  # the LLM's work per setting: every train interaction + eval histories
            evals = windows[windows["split"] != "train"]
            out["llm_items"] = int(stats["interactions"] + evals["history"].map(len).sum())
            _, pop = reference.mostpop(windows, stats["items"], ["ndcg@10"])
            per["mostpop"] = pop["ndcg@10"]
        runs = []
        t0 = time.perf_counter()
        for seed in args.seeds:
            path = work / setting / f"{args.model}-{seed}.json"
            r = trainer.run(work / setting / "windows.parquet", work / "data" / "items.parquet", path,
                            args.model, backbone, seed, cfg["window"]["max_history"], args.threads)
            users, v = ndcg(trainer.ranks_path(path))
            runs.append(v)
            out.setdefault(f"epochs_{setting}", []).append(r["best_epoch"])
            out.setdefault(f"valid_{setting}", []).append(r["valid"]["ndcg@10"])
        out[f"train_s_{setting}"] = round(time.perf_counter() - t0, 1)
        per["clean" if setting == "uniform-0.0" else "noisy"] = np.mean(runs, axis=0)
    w = user_weights(users, cfg["intervals"]["resamples"], cfg["seed"], f"regime-{name}")
    level = cfg["intervals"]["level"]

    def cell(v: np.ndarray) -> list:
        return [round(float(v.mean()), 4), *[round(x, 4) for x in interval(weighted_mean(v, w), level)]]
    out["clean"], out["mostpop"], out["noisy"] = cell(per["clean"]), cell(per["mostpop"]), cell(per["noisy"])
    out["clean-mostpop"] = cell(per["clean"] - per["mostpop"])
    out["clean-noisy"] = cell(per["clean"] - per["noisy"])
    # the figure that may choose between variants: validation NDCG@10, seeds averaged
    out["valid_clean"] = round(float(np.mean(out.pop("valid_uniform-0.0"))), 4)
    out["effect"] = out["clean-mostpop"][1] > 0 and out["clean-noisy"][1] > 0
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument("--model", default="sasrec")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--noise", default="uniform-0.2")
    ap.add_argument("--only", nargs="+", choices=sorted(CANDIDATES))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override backbone keys (lr=3e-3)")
    ap.add_argument("--workdir", default="results/benchmarks/data_regime")
    args = ap.parse_args()
    cfg = config.load(args.config)
    for name in args.only or CANDIDATES:
        print(json.dumps(measure(name, CANDIDATES[name], args, cfg)), flush=True)


if __name__ == "__main__":
    main()
