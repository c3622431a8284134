"""Caser (Tang & Wang 2018): horizontal and vertical convolutions over the history.

The reference model also concatenates a user embedding; windows here carry no user
identity the backbone may use, so the sequence vector alone scores the items.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .base import SequentialRecommender


class Caser(SequentialRecommender):
    def __init__(self, n_items: int, max_len: int, hidden: int = 64, dropout: float = 0.5,
                 n_h: int = 16, n_v: int = 4, init: str = "xavier") -> None:
        super().__init__(n_items, max_len, hidden)
        self.conv_v = nn.Conv2d(1, n_v, (max_len, 1))
        self.conv_h = nn.ModuleList(nn.Conv2d(1, n_h, (i, hidden)) for i in range(1, max_len + 1))
        self.drop = nn.Dropout(dropout)
        self.fc1 = nn.Linear(n_v * hidden + n_h * max_len, hidden)
        self.fc2 = nn.Linear(hidden, hidden)
        self.reset_parameters(init)

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        e = self.item_emb(history).unsqueeze(1)                      # [B, 1, L, H]
        vertical = self.conv_v(e).flatten(1)                         # [B, n_v * H]
        horizontal = [F.relu(conv(e).squeeze(3)).amax(dim=2) for conv in self.conv_h]
        z = F.relu(self.fc1(self.drop(torch.cat([vertical, *horizontal], dim=1))))
        return self.fc2(z)


def build(n_items: int, max_len: int, cfg: Mapping[str, Any]) -> Caser:
    """The model for items 1..n_items from the backbone section as it trains (config.backbone_of)."""
    return Caser(n_items, max_len, cfg["hidden"], cfg["dropout"], cfg["caser_h"], cfg["caser_v"], cfg["init"])
