"""Training throughput and peak memory of each backbone on synthetic data the size
of ml-latest-small (9,066 items, ~80k train windows of 10 history items).

    .venv/bin/python benchmarks/backbone_throughput.py [--threads 2] [--batches 40]

Each model runs in its own process so that its peak RSS is its own. Sequences/s is
measured over --batches training batches (forward, full-softmax loss, backward,
Adam step) after two warm-up batches; the epoch time extrapolates it to 80k windows.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import torch

from llm4dsr.backbones import MODELS, build

N_ITEMS, MAX_LEN, TRAIN_WINDOWS = 9066, 10, 80_000


def measure(model_name: str, batches: int, batch_size: int, threads: int) -> dict:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = build(model_name, N_ITEMS, {}, MAX_LEN).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = torch.randint(1, N_ITEMS + 1, (batch_size, MAX_LEN), device=device)
    history[: batch_size // 4, : MAX_LEN // 2] = 0  # some short, left-padded histories
    target = torch.randint(1, N_ITEMS + 1, (batch_size,), device=device)

    def step() -> None:
        loss = model.loss(history, target)
        opt.zero_grad()
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(batches):
        step()
    if device == "cuda":
        torch.cuda.synchronize()
    seq_s = batches * batch_size / (time.perf_counter() - start)
    peak = (torch.cuda.max_memory_allocated() if device == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
    return {"model": model_name, "device": device, "threads": threads, "sequences_per_s": round(seq_s),
            "epoch_s": round(TRAIN_WINDOWS / seq_s, 1), "peak_mb": round(peak / 2**20),
            "params": sum(p.numel() for p in model.parameters())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batches", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--one", choices=MODELS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one, args.batches, args.batch_size, args.threads)))
        return
    print(f"{'model':8} {'device':6} {'threads':>7} {'seq/s':>7} {'epoch s (80k)':>13} {'peak MB':>8} {'params':>8}")
    for name in MODELS:
        out = subprocess.run([sys.executable, __file__, "--one", name, "--threads", str(args.threads),
                              "--batches", str(args.batches), "--batch-size", str(args.batch_size)],
                             check=True, capture_output=True, text=True).stdout
        r = json.loads(out)
        print(f"{r['model']:8} {r['device']:6} {r['threads']:>7} {r['sequences_per_s']:>7} "
              f"{r['epoch_s']:>13} {r['peak_mb']:>8} {r['params']:>8}")


if __name__ == "__main__":
    main()
