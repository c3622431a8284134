"""GRU4Rec (Hidasi et al. 2016, RecBole's variant): a GRU over item embeddings."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from .base import SequentialRecommender


class GRU4Rec(SequentialRecommender):
    def __init__(self, n_items: int, max_len: int, hidden: int = 64, layers: int = 1,
                 dropout: float = 0.5, init: str = "xavier") -> None:
        super().__init__(n_items, max_len, hidden)
        self.drop = nn.Dropout(dropout)
        self.gru = nn.GRU(hidden, hidden, num_layers=layers, batch_first=True, bias=False)
        self.out = nn.Linear(hidden, hidden)
        self.reset_parameters(init)

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        # Left padding: the last step is always the newest item.
        return self.encode_all(history)[:, -1]

    def encode_all(self, history: torch.Tensor) -> torch.Tensor:
        states, _ = self.gru(self.drop(self.item_emb(history)))
        return self.out(states)


def build(n_items: int, max_len: int, cfg: Mapping[str, Any]) -> GRU4Rec:
    """The model for items 1..n_items from the backbone section as it trains (config.backbone_of)."""
    return GRU4Rec(n_items, max_len, cfg["hidden"], cfg["layers"], cfg["dropout"], cfg["init"])
