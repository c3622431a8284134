"""LoRA fine-tuning throughput and peak memory of the default base model.

    .venv/bin/python benchmarks/finetune_throughput.py [--steps 5] [--batch-size 8] [--threads 2]
        [--target-modules q_proj v_proj] [--model gemma3-270m] [--objective candidates]
        [--autocast none bf16]

Each --autocast value runs in its own process (so that each peak RSS is its own) on the
same examples, and the table has a column per value (fp32 against bf16, side by side).

Runs the study's own training loop (llm4dsr.finetune.trainer.train: the --objective's loss,
AdamW, checkpoint at the end) on self-supervised examples in the study's prompt format, made
from full-length ml-latest-small windows (10 history titles + the target, one replaced).
Step 1 is a warm-up and is left out of the rates. Peak RSS is the process's high-water
mark (resource.getrusage), read before the model is loaded, after it, and at the end.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from llm4dsr.finetune import examples as ft_examples, objectives, trainer
from llm4dsr.llm import load_torch, resolve
from mlsmall import lenskit_windows


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def measure(args, autocast: str, examples: list[dict]) -> list[tuple[str, str]]:
    rss_before = peak_rss_mb()
    t0 = time.perf_counter()
    model, tok = load_torch(resolve(args.model))
    load_s = time.perf_counter() - t0
    rss_load = peak_rss_mb()
    prompt_tokens = [start for _, start in objectives.tokenize(examples, tok, args.cutoff)]
    lora = {"r": args.r, "alpha": 2 * args.r, "dropout": 0.05, "target_modules": args.target_modules}
    with tempfile.TemporaryDirectory() as tmp:
        res = trainer.train(model, tok, examples, Path(tmp) / "ft", lora=lora, steps=args.steps,
                            batch_size=args.batch_size, lr=1e-4, cutoff=args.cutoff, seed=args.seed,
                            checkpoint_every=args.steps, threads=args.threads, progress=False,
                            objective=args.objective, autocast=autocast)
        rows = [line.split("\t") for line in (Path(tmp) / "ft" / "loss.tsv").read_text().splitlines()[1:]]
    trainable = sum(p.numel() for p in res["model"].parameters() if p.requires_grad)
    cum = [float(r[3]) for r in rows]
    step_s = [b - a for a, b in zip([0.0] + cum, cum)]
    tokens = [int(r[2]) for r in rows]
    steady_s, steady_tok = sum(step_s[1:]), sum(tokens[1:])
    device = "cuda" if torch.cuda.is_available() else "cpu"
    table = [
        ("model", args.model),
        ("objective", args.objective),
        ("autocast", autocast),
        ("device / threads", f"{device} / {args.threads}"),
        ("LoRA", f"r={args.r} on {','.join(args.target_modules)}; {trainable:,} trainable"),
        ("batch x steps", f"{args.batch_size} x {args.steps} (step 1 = warm-up)"),
        ("tokens per example (mean)", f"{sum(tokens) / (args.batch_size * args.steps):.1f} "
                                      f"(prompt {sum(prompt_tokens) / len(prompt_tokens):.1f})"),
        ("model load s", f"{load_s:.1f}"),
        ("warm-up step s", f"{step_s[0]:.2f}"),
        ("s / step", f"{steady_s / (args.steps - 1):.2f}"),
        ("tokens / s", f"{steady_tok / steady_s:.1f}"),
        ("examples / CPU-minute", f"{60 * args.batch_size * (args.steps - 1) / steady_s / args.threads:.1f}"),
        ("loss first -> last", f"{res['first_loss']:.3f} -> {res['last_loss']:.3f}"),
        ("peak RSS MB: before / +model / end", f"{rss_before:.0f} / {rss_load:.0f} / {peak_rss_mb():.0f}"),
    ]
    if device == "cuda":
        table.append(("peak CUDA MB", f"{torch.cuda.max_memory_allocated() / 2**20:.0f}"))
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m", help="llm.base_model (offline name, HF id or path)")
    ap.add_argument("--objective", default="candidates", choices=["candidates", "generate"])
    ap.add_argument("--autocast", nargs="+", default=["none", "bf16"], choices=["none", "bf16", "auto"])
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--target-modules", nargs="+", default=["q_proj", "v_proj"])
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--cutoff", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--one", choices=["none", "bf16", "auto"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.steps < 2:
        ap.error("--steps must be >= 2 (step 1 is a warm-up)")
    if args.one:
        with tempfile.TemporaryDirectory() as tmp:
            windows, items = lenskit_windows(Path(tmp) / "data", args.seed)
        full = windows[windows["history_clean"].map(len) == 10]  # the longest prompts the study trains on
        titles = dict(zip(items["item"].astype(int), items["title"]))
        examples = ft_examples.make_examples(full, titles, args.steps * args.batch_size, args.seed)
        print(json.dumps(measure(args, args.one, examples)))
        return

    tables = [json.loads(subprocess.run([sys.executable, __file__, *sys.argv[1:], "--one", mode], check=True,
                                        capture_output=True, text=True).stdout.splitlines()[-1])
              for mode in args.autocast]
    width = max(len(k) for k, _ in tables[0])
    cols = [max(len(v) for _, v in t) for t in tables]
    for i, (k, _) in enumerate(tables[0]):
        print(f"{k:<{width}}  " + "  ".join(f"{t[i][1]:<{c}}" for t, c in zip(tables, cols)))


if __name__ == "__main__":
    main()
