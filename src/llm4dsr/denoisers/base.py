"""The interface every published denoiser shares, and the helpers they have in common.

A denoiser is fitted on one noise setting's windows (windows.parquet, docs/outputs.md):
it trains on the ``train`` windows (observed history and target) and selects its epoch on
the ``valid`` windows only; the ``test`` windows are not read by ``fit``. Then

* ``item_scores(units)`` gives every item of every unit (units.parquet) a log-score, higher
  = more likely noise: the contract of :class:`llm4dsr.detectors.Detector.score`, so the
  same metric code (:func:`llm4dsr.metrics.detection_report`) scores it. Unlike the
  detectors' scores these are per-item log-probabilities (they need not sum to 1 over a
  unit), so ``exp(logp)`` is the item's probability of being noise;
* ``correct(windows)`` edits every window's history (never a target, of any split) and
  returns the corrected windows (windows.parquet format) and the table of changes;
* ``score_all(rows)`` scores all items with the denoiser's own recommender on the corrected
  histories; ``ranks`` and ``evaluate`` turn that into target ranks and HR@K / NDCG@K by
  :mod:`llm4dsr.metrics` (full ranking, as the backbones).

A denoiser's model reads only the columns ``split``, ``user``, ``history`` and ``target``: the
noise flags and clean items of a window are ground truth, never shown to it (``correct``
carries them along, and reports a deleted item's flag as ``was_noise``).

Corrected windows. A deletion removes the item from ``history`` and its entries from
``history_noise`` and ``history_clean``, so the three lists stay aligned; an inserted item
enters ``history`` with ``history_clean`` = the inserted item and ``history_noise`` = 0 (it
is no observed interaction, so it cannot be injected noise). ``target_pos`` and the target
columns are left as they were; a corrected history may be shorter or longer than
``window.max_history`` (the backbone trainer keeps its newest ``max_len`` items).

Changes (``CHANGE_COLUMNS`` of :mod:`llm4dsr.correct` plus ``window`` and ``op``): one row per
deleted or inserted item. ``op`` is ``delete`` or ``insert``; ``unit`` is -1 (changes are made
per window, not per unit); ``pos`` is the position in the user's sequence of the deleted
item, or of the history item an insertion is placed before; ``old_item`` is the deleted item
(0 for an insertion), ``new_item`` the inserted item (0 for a deletion); ``prob`` the
method's probability of that operation; ``was_noise`` the deleted item's ``history_noise``
flag (0 for an insertion).
"""
from __future__ import annotations

import copy
import logging
import math
import time
from abc import ABC, abstractmethod
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd
import torch

from llm4dsr.correct import CHANGE_COLUMNS
from llm4dsr.io import Llm4dsrError
from llm4dsr.metrics import metrics_from_ranks, target_ranks

log = logging.getLogger(__name__)

CHANGES = [*CHANGE_COLUMNS, "window", "op"]
SELECT = "ndcg@10"  # model selection on the valid split, as the backbone trainer


class Denoiser(ABC):
    name: str  # its key in llm4dsr.names.DENOISERS and the config's denoise section

    def __init__(self) -> None:
        self.stats: dict[str, Any] = {}  # filled by fit: seconds, epochs, best epoch, valid metrics

    net: torch.nn.Module

    def fit(self, windows: pd.DataFrame, n_items: int, cfg: Mapping[str, Any], seed: int,
            threads: int = 1) -> "Denoiser":
        """Train on split == 'train' windows, select the epoch on 'valid'; never reads 'test'.

        ``cfg`` is the validated ``denoise.<name>`` section of the config (its defaults, the
        paper's values, live in the schema): ``max_epochs``, ``patience`` and the model's own."""
        torch.set_num_threads(threads)
        torch.manual_seed(seed)
        self.rng = np.random.default_rng(seed)
        train, valid = fit_windows(windows)
        run_epoch = self.setup(train, valid, n_items, cfg, seed)
        start = time.perf_counter()
        self.stats = train_epochs(self.net, run_epoch, lambda: self.evaluate(valid, None, [10]),
                                  cfg["max_epochs"], cfg["patience"], self.name)
        self.stats.update(fit_seconds=round(time.perf_counter() - start, 3), n_train=len(train),
                          n_valid=len(valid), **self.fit_stats())
        return self

    @abstractmethod
    def setup(self, train: pd.DataFrame, valid: pd.DataFrame, n_items: int, cfg: Mapping[str, Any],
              seed: int) -> Callable[[int], float]:
        """Build ``self.net`` and its optimiser for the train windows (user, history, target);
        return the function that runs one epoch (epoch number from 1 -> mean train loss).
        ``self.rng`` is the fit's numpy stream; torch is seeded."""

    def fit_stats(self) -> dict[str, Any]:
        """What the fit adds to ``stats`` beside epochs, seconds and sizes."""
        return {}

    @abstractmethod
    def item_scores(self, units: pd.DataFrame) -> list[np.ndarray]:
        """Per-item noise log-probabilities of each unit (row order of ``units``)."""

    @abstractmethod
    def correct(self, windows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        """(corrected windows, changes): histories edited, targets unchanged."""

    @abstractmethod
    def score_all(self, rows: pd.DataFrame) -> torch.Tensor:
        """Its own recommender's scores over all items [B, n_items + 1] (column 0 = -inf) for
        the windows ``rows``, each history corrected as ``correct`` does."""

    def rows(self, windows: pd.DataFrame, split: str | None) -> pd.DataFrame:
        return windows if split is None else windows[windows["split"] == split]

    def ranks(self, windows: pd.DataFrame, split: str | None) -> torch.Tensor:
        """The rank of each ``split`` window's target (all rows with None) by its own recommender."""
        return target_ranks_of(self.score_all, self.rows(windows, split))

    def evaluate(self, windows: pd.DataFrame, split: str | None, ks: Iterable[int]) -> dict[str, float]:
        """HR@K / NDCG@K (K in ``ks``) of its own recommender on the ``split`` windows."""
        return metrics_from_ranks(self.ranks(windows, split), ks)


# data

def fit_windows(windows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The train and valid windows (user, history, target); test rows are dropped unread."""
    cols = ["user", "history", "target"]
    train = windows.loc[windows["split"] == "train", cols].reset_index(drop=True)
    valid = windows.loc[windows["split"] == "valid", cols].reset_index(drop=True)
    if not len(train) or not len(valid):
        raise Llm4dsrError("windows.parquet: a denoiser needs train and valid windows")
    return train, valid


def pad(seqs: list[list[int]], length: int | None = None, left: bool = False) -> torch.Tensor:
    """[N, length] int64 with 0 padding; longer rows keep their newest (last) items."""
    length = length or max(1, max(map(len, seqs), default=1))
    out = np.zeros((len(seqs), length), dtype=np.int64)
    for i, s in enumerate(seqs):
        s = list(s)[-length:] if len(s) else []
        if s:
            if left:
                out[i, length - len(s):] = s
            else:
                out[i, :len(s)] = s
    return torch.from_numpy(out)


def check_items(seqs: Iterable[Iterable[int]], n_items: int, what: str) -> None:
    for s in seqs:
        a = np.asarray(list(s), dtype=np.int64)
        if len(a) and (a.min() < 1 or a.max() > n_items):
            raise Llm4dsrError(f"{what}: item ids outside 1..{n_items} (n_items from items.parquet)")


# training

def minibatch_epoch(net: torch.nn.Module, opt: torch.optim.Optimizer, n: int, batch_size: int,
                    order: torch.Generator, clip: float, loss_of: Callable[[torch.Tensor], torch.Tensor]) -> float:
    """One epoch over ``n`` training examples in mini-batches of shuffled indices (``order``):
    ``loss_of(indices)``, a gradient step with the gradient norm clipped at ``clip``.
    Returns the mean loss per example."""
    total, count = 0.0, 0
    for idx in torch.randperm(n, generator=order).split(batch_size):
        loss = loss_of(idx)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        opt.step()
        total, count = total + loss.item() * len(idx), count + len(idx)
    return total / count


def train_epochs(model: torch.nn.Module, run_epoch: Callable[[int], float], valid: Callable[[], dict[str, float]],
                 max_epochs: int, patience: int, name: str) -> dict[str, Any]:
    """Run epochs 1..max_epochs; after each, ``valid()`` metrics; keep the weights of the
    first epoch with the best valid NDCG@10 and stop after ``patience`` epochs without
    improvement. Loads the selected weights into ``model``; returns the training stats."""
    best, best_epoch, best_state, best_valid = -math.inf, 0, None, {}
    start = time.perf_counter()
    epoch = 0
    for epoch in range(1, max_epochs + 1):
        loss = run_epoch(epoch)
        metrics = valid()
        if metrics[SELECT] > best:
            best, best_epoch, best_valid = metrics[SELECT], epoch, metrics
            best_state = copy.deepcopy(model.state_dict())
        log.info("%s epoch %d: loss %.4f, valid %s %.4f (best %.4f at epoch %d)",
                 name, epoch, loss, SELECT, metrics[SELECT], best, best_epoch)
        if epoch - best_epoch >= patience:
            break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return {"best_epoch": best_epoch, "epochs_run": epoch, "valid": best_valid,
            "train_seconds": round(time.perf_counter() - start, 3)}


@torch.no_grad()
def target_ranks_of(score: Callable[[pd.DataFrame], torch.Tensor], windows: pd.DataFrame,
                    batch: int = 512) -> torch.Tensor:
    """1-based full-ranking rank of each window's target under ``score(rows)``
    ([B, n_items + 1], column 0 = -inf), in row order."""
    ranks = [torch.zeros(0, dtype=torch.long)]
    for lo in range(0, len(windows), batch):
        rows = windows.iloc[lo:lo + batch]
        ranks.append(target_ranks(score(rows), torch.as_tensor(rows["target"].to_numpy(dtype=np.int64, copy=True))))
    return torch.cat(ranks)


# correction

def apply_edits(windows: pd.DataFrame, deletions: list[dict[int, float]],
                insertions: list[list[tuple[int, int, float]]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply per-row edits to the histories of ``windows`` (row order).

    ``deletions[r]`` maps a history index of row r to the probability of its deletion;
    ``insertions[r]`` lists (history index it goes before, item, probability), in the
    order the items are to appear. Returns the corrected windows and the changes table.
    """
    out = windows.copy()
    hist_col, noise_col, clean_col = [], [], []
    rows = []
    for r, w in enumerate(windows.itertuples(index=False)):
        hist, noise, clean = list(w.history), list(w.history_noise), list(w.history_clean)
        start = int(w.target_pos) - len(hist)
        before: dict[int, list[tuple[int, float]]] = {}
        for idx, item, prob in insertions[r]:
            before.setdefault(int(idx), []).append((int(item), float(prob)))
        h, n, c = [], [], []
        for i in range(len(hist) + 1):
            for item, prob in before.get(i, []):
                h.append(item), n.append(0), c.append(item)
                rows.append((-1, w.user, w.split, start + i, 0, item, prob, 0, w.window, "insert"))
            if i == len(hist):
                break
            if i in deletions[r]:
                rows.append((-1, w.user, w.split, start + i, int(hist[i]), 0, float(deletions[r][i]),
                             int(noise[i]), w.window, "delete"))
            else:
                h.append(int(hist[i])), n.append(int(noise[i])), c.append(int(clean[i]))
        hist_col.append(h), noise_col.append(n), clean_col.append(c)
    out["history"], out["history_noise"], out["history_clean"] = hist_col, noise_col, clean_col
    if (out["target"].to_numpy() != windows["target"].to_numpy()).any():
        raise Llm4dsrError("a denoiser changed a target")  # cannot happen: targets are not edited
    changes = pd.DataFrame(rows, columns=CHANGES).astype(
        {"unit": np.int64, "user": np.int64, "pos": np.int64, "old_item": np.int64, "new_item": np.int64,
         "prob": float, "was_noise": np.int64, "window": np.int64})
    return out, changes
