"""The interface every backbone shares (as RecBole's SequentialRecommender).

A model turns a left-padded history [B, L] (0 = padding, most recent item last)
into one vector per row (``encode``), or one per position, each seeing only the items
up to it (``encode_all``, for the reference's every-position objective); items are
scored by the dot product with the shared item embedding. The trainer and the
evaluator only call ``forward``, ``encode_all`` and the objectives of objectives.py.
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

    def encode_all(self, history: torch.Tensor) -> torch.Tensor:
        """[B, max_len] -> [B, max_len, hidden]: at each position, the representation of the
        items up to and including it. This generic version encodes every prefix (left-padded)
        on its own, max_len forward passes' worth; causal models override it with one pass."""
        b, n = history.shape
        keep = torch.arange(n, device=history.device)[None, :] <= torch.arange(n, device=history.device)[:, None]
        prefixes = history[:, None, :] * keep[None]            # [B, n, n]: row t keeps items 0..t
        shift = (n - 1 - torch.arange(n, device=history.device))  # left-pad: item t moves to the last column
        cols = (torch.arange(n, device=history.device)[None, :] - shift[:, None]) % n
        prefixes = prefixes.gather(2, cols[None].expand(b, n, n))
        return self.encode(prefixes.reshape(b * n, n)).view(b, n, -1)

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

    def reset_parameters(self, init: str = "xavier") -> None:
        """config backbone.init. xavier (the study): Xavier-normal on every matrix, for all
        models alike. normal (the reference SASRec code): N(0, 0.02) on every embedding and
        linear layer (biases 0) except those flagged ``keeps_default_init`` (SASRec's
        point-wise feed-forward, Conv1d layers in the reference), PyTorch's defaults elsewhere.
        The padding row stays 0 either way (the reference leaves it random: it is masked)."""
        if init == "xavier":
            for p in self.parameters():
                if p.dim() > 1:
                    nn.init.xavier_normal_(p)
        elif init == "normal":
            for m in self.modules():
                if isinstance(m, (nn.Embedding, nn.Linear)) and not getattr(m, "keeps_default_init", False):
                    nn.init.normal_(m.weight, 0.0, 0.02)
                    if getattr(m, "bias", None) is not None:
                        nn.init.zeros_(m.bias)
        else:
            raise ValueError(f"backbone.init: {init!r} is not xavier or normal")
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
