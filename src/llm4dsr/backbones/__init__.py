"""The backbone stage: the paper's three recommenders and FMLP-Rec behind one interface,
their registry, the trainer (trainer.py) and the results table (results.py).

Every model maps a left-padded history [B, L] to scores over all items
[B, n_items + 1] (``forward``), to one vector per position (``encode_all``), and has a
full-softmax ``loss(history, target)``; objectives.py has the objectives the trainer
picks from (config ``backbone.objective``). A model is registered by its name
in llm4dsr.names.BACKBONES: its module backbones/<name>.py defines
``build(n_items, max_len, cfg)`` (llm4dsr.registry), its own hyperparameters go under
``backbone.<name>`` in the schema.
"""
from __future__ import annotations

from typing import Any, Mapping

from .. import names, registry
from .base import SequentialRecommender

MODELS = names.BACKBONES


def build(name: str, n_items: int, cfg: Mapping[str, Any], max_len: int = 10) -> SequentialRecommender:
    """A fresh model ``name`` for items 1..n_items and histories of up to ``max_len`` items.

    ``cfg`` is the validated ``backbone:`` section as this model trains with it (llm4dsr.config.backbone_of).
    """
    return registry.get("backbone", name)(n_items, max_len, cfg)


__all__ = ["MODELS", "SequentialRecommender", "build"]
