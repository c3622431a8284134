"""Uncertainty estimation with llama.cpp (the paper's second contribution).

The model reads a history and the response prefix ``Noise Items: "``; its next-token
distribution says how likely each history item is to be the noise item.

* ``first_token`` (the paper): log-probability of each title's first token. Titles that
  share a first token ("Star Wars ...") share a score.
* ``full_title`` (default): log-likelihood of each title's whole token sequence, closing
  quote included, computed by evaluating the prompt once and reusing its KV cache for
  every candidate.

Both are normalised over the unit's items (softmax over the log-scores). One pass over
the units writes both scores, and the suggestions for the top-k suspected items (the
suggestion prompt extends the scoring prompt, so its KV cache is reused too).
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from . import prompts
from .io import Llm4dsrError, write_parquet
from .llm import check_gguf
from .scores import scores_frame

log = logging.getLogger(__name__)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    m = logits.max()
    return logits - m - np.log(np.exp(logits - m).sum())


class LlamaScorer:
    """A llama.cpp model (optionally with a LoRA adapter) that scores and decodes titles."""

    def __init__(self, model_path: str | Path, lora_path: str | Path | None = None, threads: int = 2,
                 n_ctx: int = 1024, seed: int = 0, prompt_style: str = "study"):
        from llama_cpp import Llama

        check_gguf(model_path)
        if lora_path:
            check_gguf(lora_path)
        self.llm = Llama(model_path=str(model_path), lora_path=str(lora_path) if lora_path else None,
                         n_ctx=n_ctx, n_threads=threads, n_threads_batch=threads, logits_all=True,
                         n_gpu_layers=-1,  # every layer on the GPU when llama.cpp was built with one
                         seed=seed, verbose=False)
        self.n_ctx = n_ctx
        self.prompt_style = prompt_style  # config prompt.style, for the scoring and suggestion prompts
        self._has_logits = np.zeros(n_ctx, dtype=bool)  # positions whose llm.scores row is current
        self._title_tokens: dict[str, list[int]] = {}
        self.tokens_evaluated = 0

    def tokenize(self, text: str) -> list[int]:
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def prompt_tokens(self, text: str) -> list[int]:
        """Tokens of a prompt: BOS first when the model's vocabulary asks for one."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=True, special=False)

    def title_tokens(self, title: str) -> list[int]:
        """Tokens of a title as the model writes it in an answer: display form + closing quote."""
        if title not in self._title_tokens:
            self._title_tokens[title] = self.tokenize(prompts.display_title(title) + prompts.END)
        return self._title_tokens[title]

    def eval_tokens(self, tokens: list[int], logits_from: int | None = None) -> None:
        """Make ``tokens`` the model's context, evaluating only what differs from the cached prefix.

        The output layer (a vocabulary-sized product per token) is computed for the last
        token only, or, with ``logits_from``, for every position from there on (a title's
        continuation, whose every token is scored).
        """
        if len(tokens) >= self.n_ctx:
            raise Llm4dsrError(f"prompt of {len(tokens)} tokens exceeds the context of {self.n_ctx}")
        cached = self.llm.input_ids[: self.llm.n_tokens]
        n = min(len(cached), len(tokens) - 1)  # re-evaluate at least one token to get fresh logits
        common = 0
        while common < n and cached[common] == tokens[common]:
            common += 1
        if logits_from is not None and common > logits_from:  # cached positions without logits: redo them
            missing = np.flatnonzero(~self._has_logits[logits_from:common])
            if len(missing):
                common = logits_from + int(missing[0])
        self.llm.n_tokens = common
        self._decode(tokens[common:], all_logits=logits_from is not None)
        self.tokens_evaluated += len(tokens) - common

    def _decode(self, tokens: list[int], all_logits: bool) -> None:
        """llama-cpp-python's ``Llama.eval`` (0.3.x), except that the batch asks for the
        logits of every token only when ``all_logits``, else of its last token only."""
        llm = self.llm
        llm._ctx.kv_cache_seq_rm(-1, llm.n_tokens, -1)
        for i in range(0, len(tokens), llm.n_batch):
            batch = tokens[i:i + llm.n_batch]
            n_past, n = llm.n_tokens, len(batch)
            llm._batch.set_batch(batch=batch, n_past=n_past, logits_all=all_logits)
            llm._ctx.decode(llm._batch)
            llm.input_ids[n_past:n_past + n] = batch
            rows = n if all_logits else 1
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(rows * llm.n_vocab(),))
            llm.scores[n_past + n - rows:n_past + n, :].reshape(-1)[:] = logits
            self._has_logits[n_past:n_past + n] = all_logits
            self._has_logits[n_past + n - 1] = True
            llm.n_tokens += n

    def last_logprobs(self) -> np.ndarray:
        return _log_softmax(self.llm.scores[self.llm.n_tokens - 1].astype(np.float64))

    def score(self, titles: list[str], full_title: bool = True) -> tuple[np.ndarray, np.ndarray, list[int]]:
        """(first-token log-scores, full-title log-scores or None, prompt tokens) for one history."""
        ptoks = self.prompt_tokens(prompts.prompt(titles, self.prompt_style))
        self.eval_tokens(ptoks)
        lp0 = self.last_logprobs()
        first = np.array([lp0[self.title_tokens(t)[0]] for t in titles])
        if not full_title:
            return first, None, ptoks
        cache: dict[str, float] = {}
        for t in titles:
            if t in cache:
                continue
            ct = self.title_tokens(t)
            total = lp0[ct[0]]
            if len(ct) > 1:
                self.eval_tokens(ptoks + ct[:-1], logits_from=len(ptoks))
                base = len(ptoks)
                for j in range(1, len(ct)):
                    total += _log_softmax(self.llm.scores[base + j - 1].astype(np.float64))[ct[j]]
            cache[t] = float(total)
        return first, np.array([cache[t] for t in titles]), ptoks


def score_units(scorer: LlamaScorer, units: pd.DataFrame, titles: dict[int, str], top_k: int,
                suggest_method: str, decoder=None, progress: bool = True) -> tuple[pd.DataFrame, pd.DataFrame,
                                                                                     pd.DataFrame, dict]:
    """Score every unit with both scorers, and suggest replacements for the top-k items.

    Returns (first_token scores, full_title scores, suggestions, stats). ``decoder`` is a
    :class:`llm4dsr.suggest.Suggester` (None: no suggestions).
    """
    from tqdm import tqdm

    kept, first_lp, full_lp, sugg = [], [], [], []
    skipped = 0
    t0 = time.time()
    for unit, items in tqdm(zip(units["unit"], units["items"]), total=len(units), desc="score",
                            disable=not progress, mininterval=10):
        items = [int(i) for i in items]
        if not items:
            skipped += 1
            continue
        names = [titles[i] for i in items]
        first, full, _ = scorer.score(names, full_title=True)
        kept.append(int(unit))
        first_lp.append(first)
        full_lp.append(full)
        if decoder is not None:
            order = np.argsort(-(full if suggest_method == "full_title" else first), kind="stable")[:top_k]
            for rank, k in enumerate(order):
                item, title = decoder.suggest(names, int(k), exclude=set(items))
                sugg.append({"unit": int(unit), "index": int(k), "rank": rank, "item": item, "title": title})
    secs = time.time() - t0
    stats = {"units": len(kept), "skipped_empty": skipped, "seconds": round(secs, 2),
             "units_per_s": round(len(kept) / max(secs, 1e-9), 3),
             "tokens_evaluated": scorer.tokens_evaluated}
    log.info("scored %d units in %.1f s (%.2f units/s, %d tokens evaluated, %d empty skipped)", stats["units"], secs,
             stats["units_per_s"], scorer.tokens_evaluated, skipped)
    kept_units = pd.DataFrame({"unit": kept})
    return (scores_frame(kept_units, first_lp), scores_frame(kept_units, full_lp),
            pd.DataFrame(sugg, columns=["unit", "index", "rank", "item", "title"]), stats)


def run(units_path, items_path, llm_cfg: dict, *, lora=None, model=None, suggest_cfg: dict | None = None,
        method: str = "full_title", out_first, out_full, out_suggestions=None, out_stats, threads: int = 2,
        seed: int = 0, prompt_style: str = "study") -> dict:
    """The workflow step: score (and, if ``out_suggestions``, suggest for) every unit."""
    from .context import score_context
    from .io import read_catalogue, read_parquet, write_json
    from .llm import resolve
    from .suggest import Suggester

    units = read_parquet(units_path, ["unit", "items", "positions"])
    titles = read_catalogue(items_path).titles
    if model is None:
        base = resolve(llm_cfg["base_model"], llm_cfg["gguf_file"])
        if base.gguf_path is None:
            raise Llm4dsrError("export.route=adapter needs a GGUF base model (llm.base_model)")
        model = base.gguf_path
    n_ctx = score_context(model, units["items"], titles, suggest_cfg if out_suggestions else None,
                          prompt_style)
    scorer = LlamaScorer(model, lora, threads=threads, seed=seed, n_ctx=n_ctx, prompt_style=prompt_style)
    decoder = None
    if out_suggestions:
        decoder = Suggester(scorer, titles, suggest_cfg["decoding"], suggest_cfg["max_tokens"])
    top_k = suggest_cfg["top_k"] if out_suggestions else 0
    first, full, sugg, stats = score_units(scorer, units, titles, top_k, method, decoder)
    write_parquet(first, out_first)
    write_parquet(full, out_full)
    if out_suggestions:
        pos = dict(zip(units["unit"], units["positions"]))
        sugg.insert(2, "pos", [int(pos[u][k]) for u, k in zip(sugg["unit"], sugg["index"])])
        write_parquet(sugg, out_suggestions)
        stats["greedy_unparsed"] = decoder.unparsed
    stats.update(model=str(model), lora=str(lora) if lora else None, n_ctx=n_ctx)
    write_json(stats, out_stats)
    return stats
