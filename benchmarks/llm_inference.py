"""Noise scoring with llama.cpp (Q4_1 + LoRA, merged Q8_0, merged Q4_K_M) against
transformers fp32, side by side on the same self-supervised units.

    .venv/bin/python benchmarks/llm_inference.py [--n 40] [--threads 2] [--results results/ml-latest-small]

Units: the held-out self-supervised units of the workflow (selfsup/units.parquet) when
it has --n of them, else new ones made by llm4dsr.units.self_supervised_units from
uniform-0.0/windows.parquet, else from windows the study's data stage makes from the
lenskit files. Each unit has exactly one replaced item, so ROC-AUC and top-1 say how
well a scorer finds it (chance: 0.5 and 1/length).

Model: the base SmolLM2-135M Q4_1 GGUF (a Llama: its merged weights are written
directly as GGUF), with the study's LoRA adapter (finetune/adapter) when it exists and
was trained on SmolLM2. Every engine gets the same weights: the adapter is
written as a LoRA GGUF for the Q4_1 engine, merged and written as f16 then quantized
with llama.cpp for Q8_0 and Q4_K_M, and merged in torch for fp32.

Each engine runs in its own process, so its peak RSS is its own. llama.cpp runs two
passes: first_token scores only, then full_title (which also yields first_token);
sequences/s is the full_title pass (the default scorer). transformers computes the
same full-title log-likelihood, reusing the prompt's KV cache for every title as
llama.cpp does; "r vs fp32" is the correlation of each engine's full-title
log-likelihoods with its. Timings are wall-clock: run it on an otherwise idle machine.
"""
from __future__ import annotations

import argparse
import json
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
from llm4dsr.finetune import objectives
from llm4dsr.scores import scores_frame
from llm4dsr.io import read_parquet, write_parquet
from llm4dsr.units import item_table, self_supervised_units

LLAMA_ENGINES = {"llama.cpp Q4_1": None, "llama.cpp Q8_0": "Q8_0", "llama.cpp Q4_K_M": "Q4_K_M"}
TORCH_ENGINE = "transformers fp32"


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


# ---------------------------------------------------------------- the units

def load_units(results: Path, n: int, seed: int, tmp: Path) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """(units, items, where they came from)."""
    items_path, selfsup = results / "data" / "items.parquet", results / "selfsup" / "units.parquet"
    windows_path = results / "uniform-0.0" / "windows.parquet"
    if items_path.exists() and selfsup.exists():
        units = read_parquet(selfsup)
        if len(units) >= n:
            return units.head(n), read_parquet(items_path), f"{selfsup} (held out from fine-tuning)"
    if items_path.exists() and windows_path.exists():
        items = read_parquet(items_path)
        return (self_supervised_units(read_parquet(windows_path), len(items), n, seed), items,
                f"self_supervised_units({windows_path})")
    from mlsmall import lenskit_windows

    windows, items = lenskit_windows(tmp / "data", seed)
    return self_supervised_units(windows, len(items), n, seed), items, "self_supervised_units(lenskit ml-latest-small)"


# ---------------------------------------------------------------- engines (each in its own process)

def prepare(work: Path, threads: int) -> dict:
    """The LoRA GGUF and the merged f16 -> Q8_0, Q4_K_M models, from the same adapter."""
    from peft import PeftModel

    from llm4dsr import export
    from llm4dsr.llm import load_torch, resolve

    t0 = time.perf_counter()
    base = resolve("smollm2-135m")
    model, _ = load_torch(base)
    if (work / "adapter").exists():
        peft_model = PeftModel.from_pretrained(model, str(work / "adapter"))
        export.write_lora_gguf(work / "adapter.gguf", peft_model, peft_model.peft_config["default"].lora_alpha)
        f16 = export.merged_f16(peft_model, base, work / "model-F16.gguf", work)
    else:
        f16 = export.write_llama_gguf(work / "model-F16.gguf", model.state_dict(), model.config, base.gguf_path, "F16")
    for q in ("Q8_0", "Q4_K_M"):
        export.quantize(f16, work / f"model-{q}.gguf", q, threads)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()}


def unit_titles(work: Path) -> list[list[str]]:
    units, items = read_parquet(work / "units.parquet"), read_parquet(work / "items.parquet")
    titles = dict(zip(items["item"].astype(int), items["title"]))
    return [[titles[int(i)] for i in unit] for unit in units["items"]]


def run_llama(work: Path, quant: str | None, threads: int) -> dict:
    from llm4dsr.llm import resolve
    from llm4dsr.score import LlamaScorer

    histories = unit_titles(work)
    if quant is None:
        model = resolve("smollm2-135m").gguf_path
        lora = work / "adapter.gguf" if (work / "adapter.gguf").exists() else None
    else:
        model, lora = work / f"model-{quant}.gguf", None
    t0 = time.perf_counter()
    scorer = LlamaScorer(model, lora, threads=threads)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for names in histories:
        scorer.score(names, full_title=False)
    first_s = time.perf_counter() - t0
    first, full = [], []
    t0 = time.perf_counter()
    for names in histories:
        f, g, _ = scorer.score(names, full_title=True)
        first.append(f.tolist())
        full.append(g.tolist())
    full_s = time.perf_counter() - t0
    return {"load_s": load_s, "first_s": first_s, "full_s": full_s, "first_token": first, "full_title": full,
            "file_mb": (Path(model).stat().st_size + (Path(lora).stat().st_size if lora else 0)) / 2**20,
            "peak_rss_mb": peak_rss_mb()}


def run_torch(work: Path, threads: int) -> dict:
    """Full-title log-likelihoods in fp32: the prompt once, then each distinct title
    continues its KV cache, which is cropped back to the prompt after each title."""
    import torch
    from peft import PeftModel

    from llm4dsr.llm import load_torch, resolve

    torch.set_num_threads(threads)
    histories = unit_titles(work)
    t0 = time.perf_counter()
    model, tok = load_torch(resolve("smollm2-135m"))
    if (work / "adapter").exists():
        model = PeftModel.from_pretrained(model, str(work / "adapter")).merge_and_unload()
    model.eval()
    load_s = time.perf_counter() - t0

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    first, full = [], []
    t0 = time.perf_counter()
    with torch.no_grad():
        for names in histories:
            ptoks = objectives.prompt_ids(tok, prompts.prompt(names))
            out = model(input_ids=torch.tensor([ptoks]), use_cache=True, logits_to_keep=1)
            cache, lp0 = out.past_key_values, torch.log_softmax(out.logits[0, -1].double(), -1)
            scores: dict[str, tuple[float, float]] = {}
            for name in dict.fromkeys(names):
                ct = ids(prompts.display_title(name) + prompts.END)
                total = lp0[ct[0]].item()
                if len(ct) > 1:
                    lp = torch.log_softmax(model(input_ids=torch.tensor([ct[:-1]]), past_key_values=cache,
                                                 use_cache=True).logits[0].double(), -1)
                    total += lp[torch.arange(len(ct) - 1), torch.tensor(ct[1:])].sum().item()
                    cache.crop(-(len(ct) - 1))  # back to the prompt (negative: tokens to drop)
                scores[name] = (lp0[ct[0]].item(), total)
            first.append([scores[t][0] for t in names])
            full.append([scores[t][1] for t in names])
    full_s = time.perf_counter() - t0
    return {"load_s": load_s, "first_s": None, "full_s": full_s, "first_token": first, "full_title": full,
            "file_mb": None, "peak_rss_mb": peak_rss_mb()}


def child(engine: str, work: Path, threads: int) -> None:
    if engine == "prepare":
        out = prepare(work, threads)
    elif engine == TORCH_ENGINE:
        out = run_torch(work, threads)
    else:
        out = run_llama(work, LLAMA_ENGINES[engine], threads)
    (work / "out.json").write_text(json.dumps(out))


def in_subprocess(engine: str, work: Path, threads: int) -> dict:
    res = subprocess.run([sys.executable, __file__, "--engine", engine, "--work", str(work), "--threads", str(threads)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        sys.exit(f"{engine} failed:\n{res.stderr[-3000:]}")
    return json.loads((work / "out.json").read_text())


# ---------------------------------------------------------------- the table

def detection(units: pd.DataFrame, logp: list[list[float]]) -> dict:
    """ROC-AUC and top-1 by the study's own metric code."""
    scores = scores_frame(units, [np.array(lp) for lp in logp])
    m = metrics.detection_metrics(item_table(units, scores), None)
    return {"auc": m["roc_auc"], "top1": m["top1"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=40, help="self-supervised units to score")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--results", type=Path, default=Path("results/ml-latest-small"))
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.engine:
        child(args.engine, args.work, args.threads)
        return

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        units, items, source = load_units(args.results, args.n, args.seed, work)
        units = units.reset_index(drop=True)
        write_parquet(units, work / "units.parquet")
        write_parquet(items[["item", "title"]], work / "items.parquet")
        adapter = args.results / "finetune" / "adapter"
        from llm4dsr.llm import resolve, trained_on

        tuned = trained_on(adapter, resolve("smollm2-135m"))  # the workflow's adapter, if the default is SmolLM2
        if tuned:  # a copy: the workflow may rewrite it while we run
            shutil.copytree(adapter, work / "adapter")
        prep = in_subprocess("prepare", work, args.threads)
        runs = {e: in_subprocess(e, work, args.threads) for e in [*LLAMA_ENGINES, TORCH_ENGINE]}

    n = len(units)
    ref = np.concatenate([np.array(x) for x in runs[TORCH_ENGINE]["full_title"]])
    print(f"units: {n} from {source}; mean history {units['items'].map(len).mean():.1f} items; threads {args.threads}")
    print("adapter:", f"{adapter} (LoRA GGUF on the Q4_1 base, merged into the others)" if tuned
          else "none (base model)")
    print(f"prepare (load, {'merge, ' if tuned else ''}f16 GGUF, quantize Q8_0 + Q4_K_M): {prep['seconds']:.1f} s, "
          f"peak RSS {prep['peak_rss_mb']:.0f} MB")
    head = (f"{'engine':20} {'file MB':>7} {'load s':>6} {'seq/s':>6} {'full s/u':>8} {'first s/u':>9} "
            f"{'full/first':>10} {'RSS MB':>6} {'AUC full':>8} {'top1 full':>9} {'AUC first':>9} {'top1 first':>10} "
            f"{'r vs fp32':>9}")
    print(head)
    print("-" * len(head))
    for engine, r in runs.items():
        full, first = detection(units, r["full_title"]), detection(units, r["first_token"])
        corr = np.corrcoef(np.concatenate([np.array(x) for x in r["full_title"]]), ref)[0, 1]
        fs = "-" if r["first_s"] is None else f"{r['first_s'] / n:.3f}"
        ratio = "-" if r["first_s"] is None else f"{r['full_s'] / r['first_s']:.2f}"
        mb = "-" if r["file_mb"] is None else f"{r['file_mb']:.0f}"
        print(f"{engine:20} {mb:>7} {r['load_s']:>6.1f} {n / r['full_s']:>6.2f} {r['full_s'] / n:>8.3f} {fs:>9} "
              f"{ratio:>10} {r['peak_rss_mb']:>6.0f} {full['auc']:>8.3f} {full['top1']:>9.3f} {first['auc']:>9.3f} "
              f"{first['top1']:>10.3f} {corr:>9.4f}")


if __name__ == "__main__":
    main()
