"""Recipe search: held-out detection quality of one fine-tuning recipe against LoRA steps,
beside the simple detectors on the very same units.

    .venv/bin/python benchmarks/recipe_search.py --name NAME [--model smollm2-135m] [--steps 60]
        [--eval-every 20] [--lr 1e-3] [--batch-size 8] [--replace-with uniform]
        [--target-modules q_proj v_proj] [--r 8] [--threads 2] [--n 100]
        [--results results/ml-latest-small] [--out results/recipe_search]

It reads the workflow's data and ``uniform-0.0`` noise outputs of a dataset (make them
with ``snakemake results/ml-latest-small/uniform-0.0/windows.parquet``). Held-out sets:
``--n`` self-supervised units with a uniformly drawn replacement and ``--n`` with a
popularity-drawn one (llm4dsr.units.self_supervised_units, from train windows only; their
windows never become fine-tuning examples). Before training and every ``--eval-every``
steps it prints and writes one row per held-out set:

* ``llm``: the full-title scorer (what the workflow's scorer reads), in torch;
* ``llm_pmi``: the same minus each title's log-likelihood after a content-free history
  ("N/A"): how much the history, not the title's own text, makes a title the answer;
* ``popularity`` and ``cooccurrence``: the workflow's detectors, fitted on the train period.

Model choice is made on these train-window units only; no valid or test window is read.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from llm4dsr import detectors, metrics, prompts
from llm4dsr.finetune import examples as ft_examples, objectives, trainer
from llm4dsr.scores import scores_frame
from llm4dsr.io import Llm4dsrError, read_parquet, write_text
from llm4dsr.llm import load_torch, resolve
from llm4dsr.units import item_table, self_supervised_units

NULL_HISTORY = ["N/A"]


def detection(units: pd.DataFrame, logp: list[np.ndarray]) -> dict:
    """ROC-AUC and top-1, by the study's own normalisation and metric code."""
    m = metrics.detection_metrics(item_table(units, scores_frame(units, logp)), None)
    return {"roc_auc": round(m["roc_auc"], 4), "top1": round(m["top1"], 4)}


def title_logliks(peft_model, tok, prompt: str, titles: list[str], pad: int, per_call: int = 64) -> dict[str, float]:
    """Full-title log-likelihood of every title after one prompt (one packed pass per chunk)."""
    out = {}
    for s in range(0, len(titles), per_call):
        chunk = list(dict.fromkeys(titles[s:s + per_call]))
        packed = objectives.tokenize_candidates([{"prompt": prompt, "candidates": chunk, "noise_index": 0}], tok, 10 ** 6)
        sums = objectives.branch_logliks(peft_model, packed, [0], pad)[0][0]
        out.update(zip(chunk, sums.tolist()))
    return out


def llm_scores(peft_model, tok, units: pd.DataFrame, titles: dict[int, str], pad: int,
               batch: int = 8) -> list[np.ndarray]:
    """Per unit, the full-title log-likelihood of each of its items after its prompt."""
    names = [[titles[int(i)] for i in items] for items in units["items"]]
    packed = objectives.tokenize_candidates(
        [{"prompt": prompts.prompt(n), "candidates": n, "noise_index": 0} for n in names], tok, 10 ** 6)
    out = []
    for n, sums in zip(names, objectives.candidate_logliks(peft_model, packed, pad, batch)):
        value = dict(zip(dict.fromkeys(n), sums))  # branches are the distinct titles
        out.append(np.array([value[t] for t in n]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--name", required=True, help="row label and output file name")
    ap.add_argument("--model", default="smollm2-135m", help="llm.base_model (offline name, HF id or path)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--eval-every", type=int, default=20)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--objective", default="candidates", choices=["candidates", "generate"])
    ap.add_argument("--replace-with", default="uniform", choices=["uniform", "popularity"])
    ap.add_argument("--target-modules", nargs="+", default=["q_proj", "v_proj"])
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--n", type=int, default=100, help="held-out units per replacement model")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--results", default="results/ml-latest-small", help="a dataset's workflow results")
    ap.add_argument("--out", default="results/recipe_search")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    res = Path(args.results)
    try:
        windows = read_parquet(res / "uniform-0.0" / "windows.parquet")
        sequences = read_parquet(res / "uniform-0.0" / "sequences.parquet")
        items = read_parquet(res / "data" / "items.parquet", ["item", "title", "count"])
    except Llm4dsrError as exc:
        sys.exit(f"{exc} (run: snakemake {res}/uniform-0.0/windows.parquet)")
    titles = dict(zip(items["item"].astype(int), items["title"]))
    n_items = int(items["item"].max())
    counts = np.zeros(n_items + 1)
    counts[items["item"].to_numpy()] = items["count"].to_numpy()

    held = {"uniform": self_supervised_units(windows, n_items, args.n, args.seed + 11),
            "popularity": self_supervised_units(windows, n_items, args.n, args.seed + 12, counts)}
    pool = windows
    for units in held.values():
        pool = pool[~ft_examples.heldout_mask(pool, units)]
    fitted = {name: detectors.make_detector(name).fit(sequences, n_items) for name in ("popularity", "cooccurrence")}
    baselines = {(m, name): detection(u, det.score(u)) for m, u in held.items() for name, det in fitted.items()}

    model, tok = load_torch(resolve(args.model))
    pad = tok.pad_token_id
    rows = []

    def evaluate(step: int, peft_model) -> dict:
        t0 = time.time()
        peft_model.eval()
        with torch.no_grad():
            prior = title_logliks(peft_model, tok, prompts.prompt(NULL_HISTORY), list(titles.values()), pad)
            for m, units in held.items():
                raw = llm_scores(peft_model, tok, units, titles, pad)
                pmi = [lp - np.array([prior[titles[int(i)]] for i in its]) for lp, its in zip(raw, units["items"])]
                for scorer, logp in (("llm", raw), ("llm_pmi", pmi)):
                    rows.append({"recipe": args.name, "step": step, "noise": m, "scorer": scorer, **detection(units, logp)})
                for name in fitted:
                    rows.append({"recipe": args.name, "step": step, "noise": m, "scorer": name, **baselines[(m, name)]})
        peft_model.train()
        for r in rows[-8:]:
            print(json.dumps(r), flush=True)
        print(f"# eval at step {step}: {time.time() - t0:.0f} s", flush=True)
        return {}

    examples = ft_examples.make_examples(pool, titles, args.steps * args.batch_size, args.seed, args.replace_with, counts)
    lora = {"r": args.r, "alpha": 2 * args.r, "dropout": 0.05, "target_modules": args.target_modules}
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        result = trainer.train(model, tok, examples, tmp, lora=lora, steps=args.steps, batch_size=args.batch_size,
                                lr=args.lr, seed=args.seed, checkpoint_every=args.steps, threads=args.threads,
                                objective=args.objective, eval_every=args.eval_every, on_eval=evaluate,
                                progress=False)
    seconds = time.time() - t0
    table = pd.DataFrame(rows)
    table["train_loss_last"] = result["last_loss"]
    table["wall_s"] = round(seconds)
    out = Path(args.out) / f"{args.name}.tsv"
    write_text(table.to_csv(sep="\t", index=False), out)
    print(f"# {args.name}: {args.steps} steps in {seconds:.0f} s (evaluations included) -> {out}")


if __name__ == "__main__":
    main()
