"""How many tokens llama.cpp needs to score and suggest, from the data (no fixed number).

Scoring a unit reads its prompt, then each of its titles after it (``prompt tokens +
title tokens``). A suggestion extends the prompt with the suspected title and
``Suggested Replacements: "``, then decodes a title: at most the longest catalogue
title on the trie, at most ``suggest.max_tokens`` when greedy. The context is the
longest of these over the units, rounded up; it must fit the model's own context
(``<arch>.context_length`` in the GGUF), else the run stops naming what to shorten.
Titles are already cut to ``datasets.<dataset>.max_title_chars`` by the data stage.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

from . import prompts
from .io import Llm4dsrError

log = logging.getLogger(__name__)

MARGIN = 8  # a suggestion prompt is tokenized whole: allow for merges at its joins
ROUND = 64
REMEDY = "cut titles shorter (datasets.<dataset>.max_title_chars) or histories (window.max_history)"


def score_context(model_path: str | Path, units_items: Iterable, titles: dict[int, str],
                  suggest_cfg: dict | None = None, prompt_style: str = "study") -> int:
    """The llama.cpp context (n_ctx) that every unit's scoring and, with ``suggest_cfg``
    (config `suggest`), its suggestions fit in, prompts in ``prompt_style`` (config
    `prompt.style`). Reads the GGUF's vocabulary only."""
    from .llamacpp import module

    vocab = module().Llama(model_path=str(model_path), vocab_only=True, verbose=False)

    def n_tokens(text: str, bos: bool = False) -> int:
        return len(vocab.tokenize(text.encode("utf-8"), add_bos=bos, special=False))

    title_tokens: dict[int, int] = {}

    def title(item: int) -> int:
        if item not in title_tokens:
            title_tokens[item] = n_tokens(prompts.display_title(titles[item]) + prompts.END)
        return title_tokens[item]

    decode = 0
    if suggest_cfg is not None:
        decode = n_tokens(prompts.SUGGEST_PREFIX) + MARGIN + (
            max(title(i) for i in titles) if suggest_cfg["decoding"] == "trie" else suggest_cfg["max_tokens"] + 1)
    need, longest_prompt = 0, 0
    for items in units_items:
        items = [int(i) for i in items]
        if not items:
            continue
        prompt = n_tokens(prompts.prompt([titles[i] for i in items], prompt_style), bos=True)
        longest_prompt = max(longest_prompt, prompt)
        need = max(need, prompt + max(title(i) for i in items) + decode)
    n_ctx = -(-(need + 1) // ROUND) * ROUND
    arch = vocab.metadata.get("general.architecture", "")
    trained = int(vocab.metadata.get(f"{arch}.context_length", 0) or 0)
    if trained and need + 1 > trained:
        raise Llm4dsrError(f"score: a unit needs {need + 1} tokens (its prompt {longest_prompt} at most, then a title"
                           f"{' and a suggestion' if suggest_cfg else ''}), more than the model's context of {trained} "
                           f"(llm.base_model): {REMEDY}")
    if trained:
        n_ctx = min(n_ctx, trained)
    log.info("llama.cpp context: %d tokens (the longest prompt %d, the longest title %d; the model's context %s)",
             n_ctx, longest_prompt, max(title_tokens.values(), default=0), trained or "unknown")
    return max(n_ctx, ROUND)
