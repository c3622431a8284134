"""The interface every backbone shares (as RecBole's SequentialRecommender).

A model turns a left-padded history [B, L] (0 = padding, most recent item last)
into one vector per row; items are scored by the dot product with the shared item
embedding. The trainer and the evaluator only call ``forward`` and ``loss``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SequentialRecommender(nn.Module):
    def __init__(self, n_items: int, max_len: int, hidden: int) -> None:
        super().__init__()
        self.n_items = n_items
        self.max_len = max_len
        self.item_emb = nn.Embedding(n_items + 1, hidden, padding_idx=0)

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        """[B, max_len] left-padded item ids -> [B, hidden] sequence representation."""
        raise NotImplementedError

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """Scores over all items [B, n_items + 1]; column 0 (padding) is -inf."""
        scores = self.encode(self._fit_length(history)) @ self.item_emb.weight.T
        scores[:, 0] = float("-inf")
        return scores

    def loss(self, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Cross-entropy of the target over the full catalogue (no sampled negatives)."""
        return F.cross_entropy(self(history), target)

    def _fit_length(self, history: torch.Tensor) -> torch.Tensor:
        # Keep the most recent max_len items; left-pad shorter rows so that the last
        # column is always the newest item (position embeddings and Caser need it).
        history = history[:, -self.max_len:]
        return F.pad(history, (self.max_len - history.shape[1], 0))

    def reset_parameters(self) -> None:
        # Xavier on every matrix, as the SASRec reference code does, for all models alike.
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
