"""Uncertainty estimation with llama.cpp (the paper's second contribution).

The model reads a history and the response prefix ``Noise Items: "``; its next-token
distribution says how likely each history item is to be the noise item.

* ``first_token`` (the paper): log-probability of each title's first token. Titles that
  share a first token ("Star Wars ...") share a score.
* ``trie`` (default): log-probability that decoding restricted to the history's own
  titles writes each title. Tie-free, at first-token cost: the model is asked again
  only where titles share a prefix, and there only for the branching position.
* ``full_title``: log-likelihood of each title's whole token sequence, closing quote
  included (every title token pays the vocabulary-sized output layer: about 3x
  first-token cost with Gemma's 262k-row vocabulary).

Scores are normalised over the unit's items (softmax over the log-scores). One pass over
the units scores every configured method from one prompt evaluation (the KV cache is
reused), then suggests replacements for the unit's most suspected items, no more than
correction can change (the suggestion prompt extends the scoring prompt, so its KV cache
is reused too).
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
from .scores import cap, scores_frame

log = logging.getLogger(__name__)


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    m = logits.max()
    return logits - m - np.log(np.exp(logits - m).sum())


class LlamaScorer:
    """A llama.cpp model (optionally with a LoRA adapter) that scores and decodes titles."""

    def __init__(self, model_path: str | Path, lora_path: str | Path | None = None, threads: int = 2,
                 n_ctx: int = 1024, seed: int = 0, prompt_style: str = "study"):
        from .llamacpp import module

        Llama = module().Llama
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

    def score(self, titles: list[str], methods=("trie",)) -> dict[str, np.ndarray]:
        """Log-scores of one history's titles by each of ``methods`` (names.LLM_METHODS).

        The prompt is evaluated once; first_token reads its last logits, the others
        continue from its KV cache.
        """
        ptoks = self.prompt_tokens(prompts.prompt(titles, self.prompt_style))
        self.eval_tokens(ptoks)
        lp0 = self.last_logprobs()
        out = {"first_token": np.array([lp0[self.title_tokens(t)[0]] for t in titles])}
        if "trie" in methods:
            out["trie"] = self._trie_scores(titles, ptoks, lp0)
        if "full_title" in methods:
            out["full_title"] = self._full_title_scores(titles, ptoks, lp0)
        return {m: out[m] for m in methods}

    def _full_title_scores(self, titles: list[str], ptoks: list[int], lp0: np.ndarray) -> np.ndarray:
        """Log-likelihood of each title's whole token sequence: every token's logits."""
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
        return np.array([cache[t] for t in titles])

    def _trie_scores(self, titles: list[str], ptoks: list[int], lp0: np.ndarray) -> np.ndarray:
        """Log-probability that decoding restricted to the history's own titles writes each
        title: at every node of the trie of their tokens, the model's distribution
        renormalised over the node's children. Where first tokens differ this is the
        first-token score (renormalised); the model is asked again only at the nodes
        where titles sharing a prefix branch, and only for that position's logits."""
        seqs = {t: tuple(self.title_tokens(t)) for t in titles}
        logp: dict[tuple[int, ...], float] = {}  # token prefix -> its log-probability

        def walk(prefix: tuple[int, ...], group: list[tuple[int, ...]], lp_prefix: float, lp_next) -> None:
            ended = [s for s in group if len(s) == len(prefix)]
            going = [s for s in group if len(s) > len(prefix)]
            if ended:  # a title that is a prefix of another (rare: every title ends with its quote)
                logp[prefix] = lp_prefix
            if not going:
                return
            children = sorted({s[len(prefix)] for s in going})
            if len(children) == 1 and not ended:  # nothing to choose: costs nothing
                local = {children[0]: 0.0}
            else:
                if lp_next is None:
                    self.eval_tokens(ptoks + list(prefix))
                    lp_next = self.last_logprobs()
                z = np.logaddexp.reduce(lp_next[children])
                local = {c: float(lp_next[c] - z) for c in children}
            for c in children:
                walk(prefix + (c,), [s for s in going if s[len(prefix)] == c], lp_prefix + local[c], None)

        walk((), sorted(set(seqs.values())), 0.0, lp0)
        return np.array([logp[seqs[t]] for t in titles])


def suggestions_needed(split: str, top_k: int, max_per_sequence: dict | None) -> int:
    """How many of a unit's most suspected items get a suggestion: top_k, but never more
    than correction may change in a unit of ``split`` (it changes the most suspected items
    that clear the threshold), and at least one (llm4dsr_no_uncertainty changes the top item)."""
    if max_per_sequence is None:
        return top_k
    return min(top_k, max(1, cap(split, max_per_sequence)))


def score_units(scorer: LlamaScorer, units: pd.DataFrame, titles: dict[int, str], methods=("trie",),
                decoder=None, top_k: int = 0, max_per_sequence: dict | None = None,
                progress: bool = True) -> tuple[dict[str, pd.DataFrame], pd.DataFrame, dict]:
    """Score every unit by each of ``methods`` and suggest replacements for its most
    suspected items by ``methods[0]`` (:func:`suggestions_needed` of them).

    Returns ({method: scores table}, suggestions, stats). ``decoder`` is a
    :class:`llm4dsr.suggest.Suggester` (None: no suggestions).
    """
    from tqdm import tqdm

    kept, logp, sugg = [], {m: [] for m in methods}, []
    skipped, suggest_secs = 0, 0.0
    t0 = time.time()
    for unit, items, split in tqdm(zip(units["unit"], units["items"], units["split"]), total=len(units), desc="score",
                                   disable=not progress, mininterval=10):
        items = [int(i) for i in items]
        if not items:
            skipped += 1
            continue
        names = [titles[i] for i in items]
        scores = scorer.score(names, methods)
        kept.append(int(unit))
        for m in methods:
            logp[m].append(scores[m])
        if decoder is not None:
            t1 = time.time()
            n = suggestions_needed(split, top_k, max_per_sequence)
            for rank, k in enumerate(np.argsort(-scores[methods[0]], kind="stable")[:n]):
                item, title = decoder.suggest(names, int(k), exclude=set(items))
                sugg.append({"unit": int(unit), "index": int(k), "rank": rank, "item": item, "title": title})
            suggest_secs += time.time() - t1
    secs = time.time() - t0
    stats = {"units": len(kept), "skipped_empty": skipped, "methods": list(methods), "seconds": round(secs, 2),
             "s_per_unit": round(secs / max(len(kept), 1), 4), "units_per_s": round(len(kept) / max(secs, 1e-9), 3),
             "suggestions": len(sugg), "seconds_suggest": round(suggest_secs, 2),
             "tokens_evaluated": scorer.tokens_evaluated}
    log.info("scored %d units (%s) in %.1f s (%.2f units/s; %d suggestions in %.1f s; %d tokens evaluated; "
             "%d empty skipped)", stats["units"], ", ".join(methods), secs, stats["units_per_s"], len(sugg),
             suggest_secs, scorer.tokens_evaluated, skipped)
    kept_units = pd.DataFrame({"unit": kept})
    return ({m: scores_frame(kept_units, logp[m]) for m in methods},
            pd.DataFrame(sugg, columns=["unit", "index", "rank", "item", "title"]), stats)


def run(units_path, items_path, llm_cfg: dict, *, lora=None, model=None, suggest_cfg: dict | None = None,
        methods=("trie",), out_scores: list, out_suggestions=None, out_stats, max_per_sequence: dict | None = None,
        threads: int = 2, seed: int = 0, prompt_style: str = "study") -> dict:
    """The workflow step: score every unit by each of ``methods`` (written to the matching
    path of ``out_scores``) and, if ``out_suggestions``, suggest replacements."""
    from .context import score_context
    from .io import read_catalogue, read_parquet, write_json
    from .llm import scoring_gguf
    from .suggest import Suggester

    if len(out_scores) != len(methods):
        raise Llm4dsrError(f"{len(out_scores)} score files for {len(methods)} scoring methods")
    units = read_parquet(units_path, ["unit", "split", "items", "positions"])
    titles = read_catalogue(items_path).titles
    model = scoring_gguf(llm_cfg, model)
    n_ctx = score_context(model, units["items"], titles, suggest_cfg if out_suggestions else None,
                          prompt_style)
    scorer = LlamaScorer(model, lora, threads=threads, seed=seed, n_ctx=n_ctx, prompt_style=prompt_style)
    decoder = None
    if out_suggestions:
        decoder = Suggester(scorer, titles, suggest_cfg["decoding"], suggest_cfg["max_tokens"])
    top_k = suggest_cfg["top_k"] if out_suggestions else 0
    tables, sugg, stats = score_units(scorer, units, titles, tuple(methods), decoder, top_k, max_per_sequence)
    for m, path in zip(methods, out_scores):
        write_parquet(tables[m], path)
    if out_suggestions:
        pos = dict(zip(units["unit"], units["positions"]))
        sugg.insert(2, "pos", [int(pos[u][k]) for u, k in zip(sugg["unit"], sugg["index"])])
        write_parquet(sugg, out_suggestions)
        stats["greedy_unparsed"] = decoder.unparsed
    stats.update(model=str(model), lora=str(lora) if lora else None, n_ctx=n_ctx)
    write_json(stats, out_stats)
    return stats
