"""Noise scoring engines side by side: llama.cpp (base GGUF + LoRA GGUF, the study's
adapter route, per llama.cpp build) against transformers fp32, on the same units, for
each LLM score (first_token, trie, full_title).

    .venv/bin/python benchmarks/llm_inference.py [--model gemma3-270m] [--n 40] [--threads 2]
        [--results results/ml-latest-small] [--build NAME=SITE_DIR ...] [--out results/benchmarks/llm_inference.json]

Units: the workflow's held-out self-supervised units (results/<dataset>/selfsup/<noise>/
units.parquet: one item of a train window replaced, never trained on), the first --n.
Model: the offline base model --model with the workflow's LoRA adapter
(finetune/<noise>/adapter, as GGUF in export/<noise>/adapter.gguf) when it was trained
on that model, else the base model alone. transformers runs the same adapter merged in
fp32; it computes every score as llama.cpp does (the prompt once, its KV cache reused
for every continuation).

Builds: the llama-cpp-python installed in this environment, and each --build NAME=DIR,
a folder where another build of it was installed (pip install --target DIR): for
instance the portable AVX2 build against the one with run-time CPU variants (setup.sh).
Each build runs with the CPU variant llm4dsr.llamacpp proves for it, or, with --kernels,
once per named variant (haswell is the AVX2 level, x64 the plain one).

Each engine runs in its own process (its peak RSS is its own) and times each score in
its own pass over the units, after one warm-up unit. ROC-AUC and top-1 come from the
study's metric code; "r vs fp32" is the correlation of the engine's log-scores with
transformers'. tokens/s is the prompt tokens evaluated per second of the first_token
pass, against the compute bound of one matmul-peak core per thread (2 x non-embedding
parameters FLOPs per token, plus the output layer once per unit). Timings are
wall-clock: run it on an otherwise idle machine. The JSON (--out) holds, per engine,
units_per_s (default score) and per score s_per_unit, roc_auc, top1 and r_vs_fp32, and
two summary fields: speedup_vs_torch (best llama.cpp engine over transformers on the
default score) and tie_free_over_first_token (that engine's trie over first_token cost).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from llm4dsr import metrics, prompts
from llm4dsr.io import read_parquet, write_json, write_parquet
from llm4dsr.scores import scores_frame
from llm4dsr.units import item_table

TORCH_ENGINE = "transformers fp32"
SCORES = ("first_token", "trie", "full_title")
DEFAULT_SCORE = "trie"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def unit_titles(work: Path) -> list[list[str]]:
    units, items = read_parquet(work / "units.parquet"), read_parquet(work / "items.parquet")
    titles = dict(zip(items["item"].astype(int), items["title"]))
    return [[titles[int(i)] for i in unit] for unit in units["items"]]


# ---------------------------------------------------------------- engines (each in its own process)

def run_llama(work: Path, model: str, threads: int) -> dict:
    from llm4dsr import llamacpp
    from llm4dsr.llm import resolve
    from llm4dsr.score import LlamaScorer

    histories = unit_titles(work)
    gguf = resolve(model).gguf_path
    lora = work / "adapter.gguf" if (work / "adapter.gguf").exists() else None
    t0 = time.perf_counter()
    scorer = LlamaScorer(gguf, lora, threads=threads, n_ctx=2048)
    out = {"load_s": time.perf_counter() - t0, "system_info": llamacpp.system_info(),
           "cpu_kernels": llamacpp.USED.line() if llamacpp.USED else "linked into the build"}
    for method in SCORES:
        scorer.score(histories[0], (method,))  # warm-up
        tokens, t0 = scorer.tokens_evaluated, time.perf_counter()
        out[method] = [scorer.score(h, (method,))[method].tolist() for h in histories]
        out[f"{method}_s"] = time.perf_counter() - t0
        out[f"{method}_tokens"] = scorer.tokens_evaluated - tokens
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def run_torch(work: Path, model_name: str, threads: int) -> dict:
    """The same three scores in fp32 torch: the prompt once, then every continuation
    (a title, a trie prefix) from its KV cache, cropped back to the prompt after each."""
    import torch
    from peft import PeftModel

    from llm4dsr.finetune import objectives
    from llm4dsr.llm import load_torch, resolve

    torch.set_num_threads(threads)
    histories = unit_titles(work)
    t0 = time.perf_counter()
    model, tok = load_torch(resolve(model_name))
    if (work / "adapter").exists():
        model = PeftModel.from_pretrained(model, str(work / "adapter")).merge_and_unload()
    model.eval()
    out = {"load_s": time.perf_counter() - t0}

    def title_ids(name: str) -> list[int]:
        return tok(prompts.display_title(name) + prompts.END, add_special_tokens=False)["input_ids"]

    def continue_from(cache, toks: list[int]) -> torch.Tensor:
        """Log-probabilities after each of ``toks`` appended to the cached prompt."""
        logits = model(input_ids=torch.tensor([toks]), past_key_values=cache, use_cache=True).logits[0]
        cache.crop(-len(toks))  # back to the prompt (negative: tokens to drop)
        return torch.log_softmax(logits.double(), -1)

    def score(names_: list[str], method: str) -> list[float]:
        ptoks = objectives.prompt_ids(tok, prompts.prompt(names_))
        res = model(input_ids=torch.tensor([ptoks]), use_cache=True, logits_to_keep=1)
        cache, lp0 = res.past_key_values, torch.log_softmax(res.logits[0, -1].double(), -1)
        seqs = {n: title_ids(n) for n in names_}
        if method == "first_token":
            return [lp0[seqs[n][0]].item() for n in names_]
        if method == "full_title":
            got = {}
            for n, ct in seqs.items():
                total = lp0[ct[0]].item()
                if len(ct) > 1:
                    lp = continue_from(cache, ct[:-1])
                    total += lp[torch.arange(len(ct) - 1), torch.tensor(ct[1:])].sum().item()
                got[n] = total
            return [got[n] for n in names_]
        got, at = {}, {(): lp0}  # trie: the distribution renormalised over the titles' next tokens where they branch
        for n, ct in seqs.items():
            total = 0.0
            for j in range(len(ct)):
                nexts = sorted({s[j] for s in seqs.values() if len(s) > j and s[:j] == ct[:j]})
                if len(nexts) > 1:
                    prefix = tuple(ct[:j])
                    if prefix not in at:  # each branching node once, as llama.cpp asks it
                        at[prefix] = continue_from(cache, ct[:j])[-1]
                    total += (at[prefix][ct[j]] - torch.logsumexp(at[prefix][nexts], 0)).item()
            got[n] = total
        return [got[n] for n in names_]

    with torch.no_grad():
        for method in SCORES:
            score(histories[0], method)  # warm-up
            t0 = time.perf_counter()
            out[method] = [score(h, method) for h in histories]
            out[f"{method}_s"] = time.perf_counter() - t0
    out["peak_rss_mb"] = peak_rss_mb()
    return out


def child(args) -> None:
    if args.site:
        sys.path.insert(0, args.site)  # this build's llama_cpp first
    out = run_torch(args.work, args.model, args.threads) if args.engine == TORCH_ENGINE else \
        run_llama(args.work, args.model, args.threads)
    (args.work / "out.json").write_text(json.dumps(out))


def in_subprocess(engine: str, work: Path, args, site: str | None = None, kernels: str | None = None) -> dict:
    cmd = [sys.executable, __file__, "--engine", engine, "--work", str(work), "--threads", str(args.threads),
           "--model", args.model] + (["--site", site] if site else [])
    env = dict(os.environ, LLM4DSR_CPU_KERNELS=kernels) if kernels else None  # llm4dsr.llamacpp reads it
    res = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        sys.exit(f"{engine} failed:\n{res.stderr[-3000:]}")
    return json.loads((work / "out.json").read_text())


# ---------------------------------------------------------------- compute bound

def matmul_peak_gflops(threads: int = 1) -> float:
    """fp32 GFLOP/s of a 1024^3 matrix product in torch on ``threads`` threads (best of 5)."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2 * 1024 ** 3 / best / 1e9


def model_flops(gguf: Path) -> tuple[float, float]:
    """(FLOPs per token of the transformer body, FLOPs of one output-layer row set) from
    the GGUF's tensor shapes: 2 x parameters, embeddings excluded from the body."""
    from gguf import GGUFReader

    body, vocab_dim = 0, 0
    for t in GGUFReader(str(gguf)).tensors:
        n = int(np.prod([int(x) for x in t.shape]))
        if t.name == "token_embd.weight":
            vocab_dim = n
        elif t.name != "output.weight":
            body += n
    return 2.0 * body, 2.0 * vocab_dim  # tied output layer: the embedding matrix again


# ---------------------------------------------------------------- the table

def detection(units: pd.DataFrame, logp: list[list[float]]) -> dict:
    """ROC-AUC and top-1 by the study's own metric code."""
    scores = scores_frame(units, [np.array(lp) for lp in logp])
    m = metrics.detection_metrics(item_table(units, scores), None)
    return {"roc_auc": m["roc_auc"], "top1": m["top1"]}


def load_units(results: Path, n: int) -> tuple[pd.DataFrame, pd.DataFrame, Path]:
    found = sorted(results.glob("selfsup/*/units.parquet"))
    if not found:
        sys.exit(f"{results}: no selfsup/<noise>/units.parquet; run the workflow first (snakemake --cores 2)")
    units = read_parquet(found[0]).head(n).reset_index(drop=True)
    return units, read_parquet(results / "data" / "items.parquet"), found[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="gemma3-270m", help="offline base model (llm.base_model): gemma3-270m | smollm2-135m")
    ap.add_argument("--n", type=int, default=40, help="held-out self-supervised units to score")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--results", type=Path, default=Path("results/ml-latest-small"))
    ap.add_argument("--build", action="append", default=[], metavar="NAME=DIR",
                    help="another llama-cpp-python build, installed with pip install --target DIR")
    ap.add_argument("--kernels", metavar="VARIANT[,VARIANT...]",
                    help="run each build once per named CPU variant (LLM4DSR_CPU_KERNELS, e.g. zen4,haswell,x64) "
                         "instead of once with the probed choice")
    ap.add_argument("--no-torch", action="store_true", help="llama.cpp engines only")
    ap.add_argument("--out", type=Path, default=Path("results/benchmarks/llm_inference.json"))
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--site", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine:
        child(args)
        return

    from llm4dsr.llm import resolve, trained_on

    units, items, source = load_units(args.results, args.n)
    train_noise = source.parent.name
    adapter = args.results / "finetune" / train_noise / "adapter"
    adapter_gguf = args.results / "export" / train_noise / "adapter.gguf"
    tuned = trained_on(adapter, resolve(args.model)) and adapter_gguf.exists()
    builds = {"this environment": None, **dict(b.split("=", 1) for b in args.build)}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_parquet(units, work / "units.parquet")
        write_parquet(items[["item", "title"]], work / "items.parquet")
        if tuned:  # copies: the workflow may rewrite them while we run
            shutil.copytree(adapter, work / "adapter")
            shutil.copy(adapter_gguf, work / "adapter.gguf")
        runs = {f"llama.cpp ({name}{', ' + k if k else ''})": in_subprocess("llama", work, args, site, k)
                for name, site in builds.items() for k in (args.kernels.split(",") if args.kernels else [None])}
        if not args.no_torch:
            runs[TORCH_ENGINE] = in_subprocess(TORCH_ENGINE, work, args)

    n = len(units)
    body, head = model_flops(resolve(args.model).gguf_path)
    peak = matmul_peak_gflops(1)
    report = {"model": args.model, "adapter": str(adapter) if tuned else None, "units": n, "units_from": str(source),
              "threads": args.threads, "matmul_peak_gflops_1_thread": round(peak, 1),
              "flops_per_token_body": body, "flops_output_layer": head, "engines": {}}
    ref = runs.get(TORCH_ENGINE)
    for engine, r in runs.items():
        row = {"load_s": round(r["load_s"], 2), "peak_rss_mb": round(r["peak_rss_mb"]),
               "units_per_s": round(n / r[f"{DEFAULT_SCORE}_s"], 3), "scores": {}}
        for m in SCORES:
            flat = np.concatenate([np.array(x) for x in r[m]])
            row["scores"][m] = {"s_per_unit": round(r[f"{m}_s"] / n, 4), **detection(units, r[m]),
                                "r_vs_fp32": None if ref is None else round(float(np.corrcoef(
                                    flat, np.concatenate([np.array(x) for x in ref[m]]))[0, 1]), 5)}
        if "first_token_tokens" in r:
            tps = r["first_token_tokens"] / r["first_token_s"]
            bound = peak * 1e9 * args.threads / (body + head * n / max(r["first_token_tokens"], 1))
            row.update(system_info=r["system_info"], cpu_kernels=r["cpu_kernels"], prompt_tokens_per_s=round(tps, 1),
                       compute_bound_tokens_per_s=round(bound, 1), fraction_of_bound=round(tps / bound, 3))
        report["engines"][engine] = row
    llama = {e: v for e, v in report["engines"].items() if e != TORCH_ENGINE}
    best = max(llama, key=lambda e: llama[e]["units_per_s"])
    report["best_llama_engine"] = best
    report["tie_free_over_first_token"] = round(llama[best]["scores"]["trie"]["s_per_unit"]
                                                / llama[best]["scores"]["first_token"]["s_per_unit"], 3)
    if ref is not None:
        report["speedup_vs_torch"] = round(llama[best]["units_per_s"] / report["engines"][TORCH_ENGINE]["units_per_s"], 2)
    write_json(report, args.out)

    print(f"units: {n} from {source}; model {args.model}; adapter {'yes' if tuned else 'none (base model)'}; "
          f"threads {args.threads}; one core's fp32 matmul peak {peak:.1f} GFLOP/s")
    head_row = f"{'engine':40} {'load s':>6} {'RSS MB':>6} {'units/s':>7}" + "".join(
        f" {m + ' s/u':>16} {'AUC':>6} {'top1':>5} {'r fp32':>7}" for m in SCORES)
    print(head_row)
    print("-" * len(head_row))
    for engine, row in report["engines"].items():
        line = f"{engine:40} {row['load_s']:>6.1f} {row['peak_rss_mb']:>6} {row['units_per_s']:>7.2f}"
        for m in SCORES:
            s = row["scores"][m]
            r = "-" if s["r_vs_fp32"] is None else f"{s['r_vs_fp32']:.4f}"
            line += f" {s['s_per_unit']:>16.3f} {s['roc_auc']:>6.3f} {s['top1']:>5.2f} {r:>7}"
        print(line)
    for engine, row in llama.items():
        print(f"{engine}: {row['prompt_tokens_per_s']} prompt tokens/s = {row['fraction_of_bound']:.0%} of the "
              f"compute bound ({row['compute_bound_tokens_per_s']}); {row['cpu_kernels']}; {row['system_info']}")
    print(f"best llama.cpp engine: {best}; trie / first_token cost {report['tie_free_over_first_token']}"
          + (f"; speedup vs transformers fp32 on {DEFAULT_SCORE}: {report['speedup_vs_torch']}x" if ref else ""))
    print(f"written: {args.out}")


if __name__ == "__main__":
    main()
