"""The score stage as it was (full_title scores, top-k suggestions for every unit) and as
it is (config score.method + score.compare, suggestions for no more suspects than
correction can change), on the same units and the same fine-tuned model; then the
held-out detection of the three LLM scores, with user-bootstrap intervals.

    .venv/bin/python benchmarks/score_stage.py [--config config.yaml] [--noise uniform-0.1]
        [--n 120] [--threads 1] [--out results/benchmarks/score_stage.json]

It reads a finished run of --config (its units, catalogue, exported adapter and
held-out self-supervised units). --n units of --noise are sampled (seeded) from every
split in proportion; each configuration scores them in its own fresh llama.cpp model,
with the workflow's code (llm4dsr.score.run). Timings are wall-clock: run it on an
otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from llm4dsr import config, metrics, names, score
from llm4dsr.io import read_parquet, write_json, write_parquet
from llm4dsr.scores import read_scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="config.yaml")
    ap.add_argument("--noise", default="uniform-0.1")
    ap.add_argument("--n", type=int, default=120, help="units of --noise scored by each configuration")
    ap.add_argument("--threads", type=int, default=1, help="llama.cpp threads (the workflow's llm.threads)")
    ap.add_argument("--out", type=Path, default=Path("results/benchmarks/score_stage.json"))
    args = ap.parse_args()
    cfg = config.load(args.config)
    dataset = next(iter(cfg["datasets"]))
    res = Path("results") / dataset
    train_noise = cfg["finetune"]["noise"] if not cfg["finetune"]["per_setting"] else args.noise
    lora = res / "export" / train_noise / "adapter.gguf"
    units = read_parquet(res / args.noise / "units.parquet")
    units = units.sample(n=min(args.n, len(units)), random_state=cfg["seed"]).sort_values("unit")
    common = dict(lora=lora if lora.exists() else None, suggest_cfg=cfg["suggest"], threads=args.threads,
                  seed=cfg["seed"], prompt_style=cfg["prompt"]["style"])
    setups = {
        "before (full_title, top_k for every unit)": dict(methods=("full_title", "first_token"), max_per_sequence=None),
        "after (config.yaml)": dict(methods=tuple(names.scored_methods(cfg["score"])),
                                    max_per_sequence=cfg["correct"]["max_per_sequence"]),
    }
    report = {"units": len(units), "noise": args.noise, "threads": args.threads, "lora": str(common["lora"]),
              "stage": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        write_parquet(units, tmp / "units.parquet")
        for name, setup in setups.items():
            out = tmp / name.split()[0]
            stats = score.run(tmp / "units.parquet", res / "data" / "items.parquet", cfg["llm"], **common, **setup,
                              out_scores=[out / f"{m}.parquet" for m in setup["methods"]],
                              out_suggestions=out / "suggestions.parquet", out_stats=out / "stats.json")
            report["stage"][name] = {k: stats[k] for k in ("methods", "s_per_unit", "suggestions", "seconds_suggest",
                                                           "tokens_evaluated")}
        before, after = (report["stage"][k]["s_per_unit"] for k in setups)
        report["after_over_before"] = round(after / before, 3)

        # held-out detection: every LLM score on the held-out self-supervised units
        held = res / "selfsup" / train_noise / "units.parquet"
        methods = list(names.LLM_METHODS)
        paths = [tmp / "held" / f"{m}.parquet" for m in methods]
        score.run(held, res / "data" / "items.parquet", cfg["llm"], lora=common["lora"], methods=methods,
                  out_scores=paths, out_stats=tmp / "held" / "stats.json", threads=args.threads, seed=cfg["seed"],
                  prompt_style=cfg["prompt"]["style"])
        tables = read_scores(paths, [names.llm_score(m) for m in methods])
        det = metrics.detection_report(read_parquet(held), tables, cfg["correct"]["threshold"], cfg["intervals"],
                                       cfg["seed"])
    split = next(s for s in names.SPLITS if det[names.llm_score(methods[0])][s]["units"])
    report["heldout"] = {"units": det[names.llm_score(methods[0])][split]["units"], "split": split,
                         "roc_auc": {d: [det[d][split]["roc_auc"], det[d][split]["roc_auc_ci"]] for d in tables},
                         "paired_roc_auc": {p: [v[split]["roc_auc"]["diff"], v[split]["roc_auc"]["ci"]]
                                            for p, v in det["paired"].items()}}
    write_json(report, args.out)
    print(json.dumps(report, indent=1, default=lambda x: float(x) if isinstance(x, np.floating) else str(x)))


if __name__ == "__main__":
    main()
