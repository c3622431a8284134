"""The backbones' training objectives (config ``backbone.objective``).

* ``ce_last`` (the study): full-softmax cross-entropy of each window's target, predicted
  from its history (``SequentialRecommender.loss``).
* ``bce_all`` (the reference SASRec code): every position of the window (history and
  target, left-padded to max_len + 1) is a training target, predicted from the items
  before it; each gets its positive logit and the logit of one sampled negative, and
  the loss is mean softplus(-positive) + mean softplus(negative) over the positions that
  hold an item. A row's negatives are distinct and never one of its window's items (nor
  padding). The reference publishes SASRec only; using it for GRU4Rec and Caser is the
  study's choice.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ..io import Llm4dsrError
from .base import SequentialRecommender


def next_item_cells(history: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, next items), both [B, L], from left-padded histories [B, L] and targets [B]:
    the window history + target shifted by one, so that position t's input sequence ends
    with the item whose successor is ``next[:, t]`` (0 where there is none to predict)."""
    window = torch.cat([history, target[:, None]], dim=1)
    return window[:, :-1], window[:, 1:]


def sample_negatives(window: torch.Tensor, n_items: int, k: int) -> torch.Tensor:
    """[B, k] items of 1..n_items, distinct within a row and never in that row of ``window``."""
    weights = torch.ones(window.shape[0], n_items + 1, device=window.device)
    weights[:, 0] = 0
    weights.scatter_(1, window, 0.0)
    if (weights.sum(1) < k).any():
        raise Llm4dsrError(f"backbone.objective bce_all: {n_items} items leave fewer than {k} negatives "
                           "outside a window")
    return torch.multinomial(weights, k, replacement=False)


def bce_from_logits(pos_logits: torch.Tensor, neg_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean softplus(-positive) + mean softplus(negative) over the cells of ``mask``
    (BCEWithLogits with target 1 and 0, each averaged over the batch's valid cells)."""
    return F.softplus(-pos_logits[mask]).mean() + F.softplus(neg_logits[mask]).mean()


def bce_all(model: SequentialRecommender, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """The reference's objective on a batch of windows (see the module docstring)."""
    history = model._fit_length(history)
    inputs, nxt = next_item_cells(history, target)
    hidden = model.encode_all(inputs)                                   # [B, L, H]
    negatives = sample_negatives(torch.cat([inputs, nxt[:, -1:]], 1), model.n_items, nxt.shape[1])
    emb = model.item_emb
    pos = (hidden * emb(nxt)).sum(-1)
    neg = (hidden * emb(negatives)).sum(-1)
    return bce_from_logits(pos, neg, nxt != 0)


def ce_last(model: SequentialRecommender, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return model.loss(history, target)


OBJECTIVES: dict[str, Callable[[SequentialRecommender, torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "ce_last": ce_last, "bce_all": bce_all}
