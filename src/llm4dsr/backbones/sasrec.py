"""SASRec (Kang & McAuley 2018): causal self-attention over the history."""
from __future__ import annotations

from typing import Any, Mapping

import torch
from torch import nn

from .base import SequentialRecommender


class _Block(nn.Module):
    """One block of the reference code: normed query, attention, point-wise FFN."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attn_norm = nn.LayerNorm(hidden)
        self.attn = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)
        self.ffn_norm = nn.LayerNorm(hidden)
        self.ffn = nn.Sequential(nn.Linear(hidden, hidden), nn.Dropout(dropout), nn.ReLU(),
                                 nn.Linear(hidden, hidden), nn.Dropout(dropout))
        for layer in (self.ffn[0], self.ffn[3]):  # Conv1d(k=1) in the reference: its init is PyTorch's
            layer.keeps_default_init = True

    def forward(self, x: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
        q = self.attn_norm(x)
        x = q + self.attn(q, x, x, attn_mask=blocked, need_weights=False)[0]
        x = self.ffn_norm(x)
        return x + self.ffn(x)


class SASRec(SequentialRecommender):
    def __init__(self, n_items: int, max_len: int, hidden: int = 64, layers: int = 2,
                 heads: int = 1, dropout: float = 0.5, init: str = "xavier") -> None:
        super().__init__(n_items, max_len, hidden)
        self.heads = heads
        self.pos_emb = nn.Embedding(max_len, hidden)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(_Block(hidden, heads, dropout) for _ in range(layers))
        self.out_norm = nn.LayerNorm(hidden)
        self.reset_parameters(init)

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        return self.encode_all(history)[:, -1]

    def encode_all(self, history: torch.Tensor) -> torch.Tensor:
        b, n = history.shape
        pad = history == 0
        pos = torch.arange(n, device=history.device)
        x = self.item_emb(history) * self.item_emb.embedding_dim ** 0.5 + self.pos_emb(pos)
        x = self.drop(x) * ~pad[..., None]
        # Block future positions and padding keys; a position may always see itself,
        # so padded rows never attend to nothing (which would give NaN).
        eye = torch.eye(n, dtype=torch.bool, device=history.device)
        blocked = torch.triu(~eye, diagonal=1)[None] | (pad[:, None, :] & ~eye)
        blocked = blocked.repeat_interleave(self.heads, dim=0)
        for block in self.blocks:
            x = block(x, blocked) * ~pad[..., None]
        return self.out_norm(x)


def build(n_items: int, max_len: int, cfg: Mapping[str, Any]) -> SASRec:
    """The model for items 1..n_items from the backbone section as it trains (config.backbone_of)."""
    return SASRec(n_items, max_len, cfg["hidden"], cfg["layers"], cfg["heads"], cfg["dropout"], cfg["init"])
