"""FMLP-Rec (Zhou et al., WWW 2022, "Filter-enhanced MLP is All You Need for Sequential
Recommendation"): SASRec's self-attention replaced by a learnable filter in the frequency
domain.

Each block: FFT of the sequence of hidden states along the time axis (``rfft``, orthonormal),
an element-wise product with a learnable complex weight (one per frequency and hidden unit),
the inverse FFT, dropout, residual + LayerNorm; then a point-wise feed-forward network
(hidden -> 4 hidden -> hidden, GELU), dropout, residual + LayerNorm. The filter is a global
circular convolution over the sequence; learned, it acts as a denoising (e.g. low-pass) filter.

Hyperparameters of the paper and its reference code (RUCAIBox/FMLP-Rec): hidden 64, 2 blocks,
dropout 0.5 (the code's default; the paper tunes it in [0, 0.5]), inner size 4 x hidden, GELU,
LayerNorm eps 1e-12, weights drawn from N(0, 0.02), filter weights 0.02 x N(0, 1), Adam lr 1e-3,
batch 256. Where this study departs: histories of up to 10 items (the paper: 50), the study's
full-softmax cross-entropy over all items (the reference code: binary cross-entropy with one
sampled negative), and the study's trainer (early stopping on valid NDCG@10).

As in the reference code the filter sees the padded positions too: histories are left-padded,
so the newest item is always the last position, whose output is the sequence representation.
"""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .base import SequentialRecommender

LN_EPS = 1e-12
INIT_STD = 0.02


class FilterLayer(nn.Module):
    """x [B, L, H] -> LayerNorm(x + dropout(irfft(rfft(x) * W))), W complex [L // 2 + 1, H]."""

    def __init__(self, max_len: int, hidden: int, dropout: float) -> None:
        super().__init__()
        self.max_len = max_len
        # real and imaginary parts in the last axis (as the reference code stores them)
        self.weight = nn.Parameter(torch.randn(max_len // 2 + 1, hidden, 2) * INIT_STD)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=LN_EPS)

    def filter(self, x: torch.Tensor) -> torch.Tensor:
        """The frequency-domain filter alone (no dropout, residual or norm)."""
        spectrum = torch.fft.rfft(x, dim=1, norm="ortho")
        return torch.fft.irfft(spectrum * torch.view_as_complex(self.weight), n=x.shape[1], dim=1, norm="ortho")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.drop(self.filter(x)))


class _FeedForward(nn.Module):
    def __init__(self, hidden: int, dropout: float) -> None:
        super().__init__()
        self.fc1 = nn.Linear(hidden, 4 * hidden)
        self.fc2 = nn.Linear(4 * hidden, hidden)
        self.drop = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(hidden, eps=LN_EPS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x + self.drop(self.fc2(F.gelu(self.fc1(x)))))


class FMLPRec(SequentialRecommender):
    def __init__(self, n_items: int, max_len: int, hidden: int = 64, layers: int = 2,
                 dropout: float = 0.5) -> None:
        super().__init__(n_items, max_len, hidden)
        self.pos_emb = nn.Embedding(max_len, hidden)
        self.emb_norm = nn.LayerNorm(hidden, eps=LN_EPS)
        self.drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(nn.Sequential(FilterLayer(max_len, hidden, dropout), _FeedForward(hidden, dropout))
                                    for _ in range(layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # The reference initialisation: N(0, 0.02) for embeddings and linear weights, zero
        # biases, LayerNorm (1, 0); the filters keep their 0.02 x N(0, 1) draw.
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, 0.0, INIT_STD)
            if isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def encode(self, history: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(history.shape[1], device=history.device)
        x = self.drop(self.emb_norm(self.item_emb(history) + self.pos_emb(pos)))
        for block in self.blocks:
            x = block(x)
        return x[:, -1]


def build(n_items: int, max_len: int, cfg: Mapping[str, Any]) -> FMLPRec:
    """The model for items 1..n_items from the backbone section as it trains (config.backbone_of)."""
    return FMLPRec(n_items, max_len, cfg["hidden"], cfg["layers"], cfg["dropout"])  # its own (reference) init
