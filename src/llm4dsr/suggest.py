"""Suggesting a replacement for a suspected noise item.

The prompt continues the scoring prompt with ``<noise title>"`` and
``Suggested Replacements: "``; the model then writes a title.

* ``trie`` (default): decoding constrained to a trie of the catalogue's title tokens, so
  every suggestion is a real item (and never one already in the history).
* ``greedy`` (the paper): free greedy decoding; a title that is not in the catalogue is
  grounded to the nearest catalogue title by llama.cpp embeddings (L2).
"""
from __future__ import annotations

import logging

import numpy as np

from . import prompts

log = logging.getLogger(__name__)


class _Node:
    __slots__ = ("children", "item", "items")

    def __init__(self):
        self.children: dict[int, _Node] = {}
        self.item: int | None = None  # a title ends here
        self.items: list[int] = []  # every title below (to skip subtrees of excluded items)


class TitleTrie:
    """Token trie over the catalogue's titles (display form + closing quote)."""

    def __init__(self, titles: dict[int, str], tokenize):
        self.root = _Node()
        for item, title in titles.items():
            node = self.root
            node.items.append(item)
            for tok in tokenize(title):
                node = node.children.setdefault(tok, _Node())
                node.items.append(item)
            node.item = item

    @staticmethod
    def open_children(node: _Node, exclude: set[int]) -> dict[int, _Node]:
        return {t: c for t, c in node.children.items() if any(i not in exclude for i in c.items)}


class Suggester:
    def __init__(self, scorer, titles: dict[int, str], decoding: str = "trie", max_tokens: int = 40):
        self.scorer, self.titles, self.decoding, self.max_tokens = scorer, titles, decoding, max_tokens
        self.by_display = {prompts.display_title(t): i for i, t in titles.items()}
        self.trie = TitleTrie(titles, scorer.title_tokens) if decoding == "trie" else None
        self._embeddings = None
        self.unparsed = 0  # greedy answers that named no catalogue title

    def suggest(self, history_titles: list[str], index: int, exclude: set[int]) -> tuple[int, str]:
        """(item, title) to replace ``history_titles[index]``."""
        text = prompts.suggestion_prompt(history_titles, history_titles[index], self.scorer.prompt_style)
        tokens = self.scorer.prompt_tokens(text)
        if self.decoding == "trie":
            return self._trie_decode(tokens, exclude)
        self.scorer.eval_tokens(tokens)
        return self._greedy_decode(tokens, exclude)

    def _trie_decode(self, tokens: list[int], exclude: set[int]) -> tuple[int, str]:
        """Greedy walk down the trie. The model is only asked where the trie branches:
        a node with one open child forces the next token, so most of a title's tokens
        cost nothing (they are evaluated, in one batch, only if a later branch needs logits)."""
        node = self.trie.root
        while True:
            open_ = TitleTrie.open_children(node, exclude)
            if node.item is not None and node.item not in exclude and not open_:
                return node.item, self.titles[node.item]
            if not open_:  # only excluded titles left (tiny catalogues): fall back to any title
                open_ = node.children
            if len(open_) == 1:
                tok = next(iter(open_))
            else:
                self.scorer.eval_tokens(tokens)
                lp = self.scorer.last_logprobs()
                tok = max(open_, key=lambda t: lp[t])
            node = open_[tok]
            tokens = tokens + [tok]
            if not node.children and node.item is not None:
                return node.item, self.titles[node.item]

    def _greedy_decode(self, tokens: list[int], exclude: set[int]) -> tuple[int, str]:
        out: list[int] = []
        for _ in range(self.max_tokens):
            tok = int(np.argmax(self.scorer.last_logprobs()))
            out.append(tok)
            text = self.scorer.llm.detokenize(out).decode("utf-8", errors="replace")
            if '"' in text or tok == self.scorer.llm.token_eos():
                break
            self.scorer.eval_tokens(tokens + out)
        text = self.scorer.llm.detokenize(out).decode("utf-8", errors="replace").split('"')[0].strip()
        item = self.by_display.get(text)
        if item is not None and item not in exclude:
            return item, self.titles[item]
        self.unparsed += 1
        return self._nearest(text, exclude)

    def _nearest(self, text: str, exclude: set[int]) -> tuple[int, str]:
        """Ground free text to the catalogue title whose embedding is nearest (L2)."""
        if self._embeddings is None:
            ids = sorted(self.titles)
            vecs = self._embed([self.titles[i] for i in ids])  # the catalogue in a few batched passes
            self._embeddings = (np.array(ids), vecs)
        ids, vecs = self._embeddings
        dist = np.linalg.norm(vecs - self._embed(text), axis=1)
        for k in np.argsort(dist, kind="stable"):
            if int(ids[k]) not in exclude:
                return int(ids[k]), self.titles[int(ids[k])]
        return int(ids[0]), self.titles[int(ids[0])]

    def _embed(self, text: str | list[str]) -> np.ndarray:
        """Mean of the last hidden states, read from llama.cpp in embedding mode ([n, dim]
        for a list of texts, embedded several per pass)."""
        if not hasattr(self, "_embedder"):
            from .embed import TitleEmbedder

            src = self.scorer.llm
            self._embedder = TitleEmbedder(src.model_path, src.lora_path, src.n_threads, self.scorer.n_ctx)
        vecs = self._embedder([text] if isinstance(text, str) else text)
        return vecs[0] if isinstance(text, str) else vecs
