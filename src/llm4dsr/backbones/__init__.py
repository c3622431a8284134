"""The backbone stage: the paper's three recommenders and FMLP-Rec behind one interface,
their registry, the trainer (trainer.py) and the results table (results.py).

Every model maps a left-padded history [B, L] to scores over all items
[B, n_items + 1] (``forward``), to one vector per position (``encode_all``), and has a
full-softmax ``loss(history, target)``; objectives.py has the objectives the trainer
picks from (config ``backbone.objective``). A model is registered here under its name
in llm4dsr.names.BACKBONES.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

from ..io import Llm4dsrError
from .base import SequentialRecommender
from .caser import Caser
from .fmlprec import FMLPRec
from .gru4rec import GRU4Rec
from .sasrec import SASRec

_BUILDERS: dict[str, Callable[[int, int, Mapping[str, Any]], SequentialRecommender]] = {
    "sasrec": lambda n, L, c: SASRec(n, L, c["hidden"], c["layers"], c["heads"], c["dropout"], c["init"]),
    "gru4rec": lambda n, L, c: GRU4Rec(n, L, c["hidden"], c["layers"], c["dropout"], c["init"]),
    "caser": lambda n, L, c: Caser(n, L, c["hidden"], c["dropout"], c["caser_h"], c["caser_v"], c["init"]),
    "fmlprec": lambda n, L, c: FMLPRec(n, L, c["hidden"], c["layers"], c["dropout"]),  # its own (reference) init
}
MODELS = tuple(_BUILDERS)


def build(name: str, n_items: int, cfg: Mapping[str, Any], max_len: int = 10) -> SequentialRecommender:
    """A fresh model ``name`` for items 1..n_items and histories of up to ``max_len`` items.

    ``cfg`` is the config's validated ``backbone:`` section (llm4dsr.config).
    """
    if name not in _BUILDERS:
        raise Llm4dsrError(f"config backbone.models: unknown model {name!r} (known: {', '.join(MODELS)})")
    return _BUILDERS[name](n_items, max_len, cfg)


__all__ = ["MODELS", "SequentialRecommender", "SASRec", "GRU4Rec", "Caser", "FMLPRec", "build"]
