"""Item embedding stage: every catalogue title embedded once by the GGUF model the score
stage reads (the base GGUF with the LoRA adapter, or the merged model), through
llama.cpp in embedding mode (the mean of the last hidden states over the title's
tokens). The ``llm_embedding`` detector reads them: the LLM's knowledge used a second
way, independently of its answer to the scoring prompt (IADSR, Wu et al. 2025, pairs LLM
embeddings with collaborative signals in this spirit).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import prompts
from .io import Llm4dsrError, read_catalogue, read_parquet, write_parquet

log = logging.getLogger(__name__)

TEXTS_TOKENS = 8192  # tokens of one batched pass: several titles per pass


class TitleEmbedder:
    """Mean-pooled llama.cpp embeddings of short texts, several texts per pass."""

    def __init__(self, model_path: str | Path, lora_path: str | Path | None, threads: int, per_text: int = 256):
        from .llamacpp import module
        from .llm import check_gguf

        check_gguf(model_path)
        if lora_path:
            check_gguf(lora_path)
        llama_cpp = module()
        self.per_text = max(256, per_text)  # each text's own context holds any title or answer
        texts_per_pass = max(1, TEXTS_TOKENS // self.per_text)
        # the given threads for batches too (llama.cpp's default, every core, spins on its
        # barriers when the cores are shared: 50x slower), and every layer on the GPU
        self.llm = llama_cpp.Llama(model_path=str(model_path), lora_path=str(lora_path) if lora_path else None,
                                   embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_MEAN,
                                   n_ctx=self.per_text * texts_per_pass, n_batch=1024, n_ubatch=1024,
                                   n_seq_max=texts_per_pass, n_threads=threads, n_threads_batch=threads,
                                   n_gpu_layers=-1, verbose=False)

    def __call__(self, texts: list[str]) -> np.ndarray:
        """[len(texts), dim] float32, one row per text (an empty text still needs a token)."""
        shown = [prompts.display_title(t) or "?" for t in texts]
        return np.asarray(self.llm.embed(shown), dtype=np.float32)


def run(items_path, llm_cfg: dict, out_path, *, lora=None, model=None, threads: int = 1) -> dict:
    """The workflow step (rule embed_items): write ``out_path`` (item, embedding) for every
    catalogue item, in item order."""
    from .llm import scoring_gguf

    titles = read_catalogue(items_path).titles
    model = scoring_gguf(llm_cfg, model)
    start, cpu = time.perf_counter(), time.process_time()
    embedder = TitleEmbedder(model, lora, threads)
    ids = sorted(titles)
    vectors = np.concatenate([embedder([titles[i] for i in ids[k:k + 256]]) for k in range(0, len(ids), 256)])
    write_parquet(pd.DataFrame({"item": np.asarray(ids, dtype=np.int64), "embedding": list(vectors)}), out_path)
    stats = {"items": len(ids), "dim": int(vectors.shape[1]), "seconds": round(time.perf_counter() - start, 2),
             "cpu_seconds": round(time.process_time() - cpu, 2)}
    log.info("embedded %d titles (dim %d) in %.1f s (%.1f CPU-s)", stats["items"], stats["dim"], stats["seconds"],
             stats["cpu_seconds"])
    return stats


def read_embeddings(path, n_items: int) -> np.ndarray:
    """[n_items + 1, dim] unit-length rows by item id (row 0 unused) from ``path``."""
    df = read_parquet(path, ["item", "embedding"])
    ids = df["item"].to_numpy()
    if not np.array_equal(np.sort(ids), np.arange(1, n_items + 1)):
        raise Llm4dsrError(f"{path}: embeddings of items 1..{n_items} expected, each once (rerun rule embed_items)")
    try:
        vecs = np.stack(df["embedding"].to_numpy()).astype(np.float32)
    except ValueError:
        raise Llm4dsrError(f"{path}: embeddings of different lengths (rerun rule embed_items)") from None
    if vecs.ndim != 2 or not np.isfinite(vecs).all():
        raise Llm4dsrError(f"{path}: embeddings are not finite vectors (rerun rule embed_items)")
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    out = np.zeros((n_items + 1, vecs.shape[1]), dtype=np.float32)
    out[ids] = vecs / np.where(norms > 0, norms, 1.0)
    return out
