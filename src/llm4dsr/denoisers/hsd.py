"""HSD (Zhang et al., CIKM 2022, "Hierarchical Item Inconsistency Signal Learning for Sequence
Denoising in Sequential Recommendation"), from the paper and its reference code (zc-97/HSD).

Two inconsistency signals per history item, each a 2-way score (consistent, noise):

* **user level**: how well the item fits the user's interest, an additive attention score
  ``sigmoid(W_e tanh(W_u e_t + W_v q))`` of the item embedding ``e_t`` against a query ``q``:
  the target item's embedding in training, the user's embedding when no target may be read
  (valid/test, correction). User embeddings learn a BPR loss against the items of the
  user's histories (one sampled negative per window); as in the reference, the items with
  the largest loss are left out of it, a share that grows from 0 to ``bpr_drop`` over the
  first ``curriculum_epochs`` epochs;
* **sequence level**: how well the item fits its context, from a bidirectional-LSTM
  autoencoder (encoder and decoder share the LSTM; input dropout ``ae_dropout``) whose
  reconstruction ``d_t`` is fused with ``e_t`` into a score ``sigmoid(W_s ReLU(W_f [d_t; e_t]))``.
  The reconstruction loss is a curriculum: the ``drop_rate`` share of windows with the largest
  loss is left out, ``drop_rate`` falling linearly from ``curriculum_drop`` to 0 over the first
  ``curriculum_epochs`` epochs.

Each score passes through a hard Gumbel-softmax (temperature ``gumbel_tau``, annealed every
40 batches as tau <- max(1e-3, tau * exp(-1e-3 * batches so far))); an item is dropped when
both levels say noise. The kept items, their embeddings multiplied by the (straight-through)
gate, feed a sub-model recommender (a GRU, as GRU4Rec) trained by cross-entropy over all items
on the window's target; everything is trained jointly (loss = reconstruction + recommendation +
BPR), Adam, gradients clipped at norm 5.

Inference is deterministic (the reference samples the gate also at test time): an item is
dropped when both levels' more probable outcome is noise (u1 > u0 and s1 > s0). HSD's output is
this binary gate, so an item's noise score is the gate itself: log 1 = 0 when dropped,
log 1e-3 when kept (ties within each group); detection metrics then describe the drop decisions
(ROC-AUC = balanced accuracy). A continuous score would mislead: the sampled gate's own drop
probability, sigmoid(u1 - u0) * sigmoid(s1 - s0), ranks noise near chance in the synthetic tests
(ROC-AUC 0.51) while 70-100% of the drops are noise (five seeds), because the two levels mark
noise jointly (both votes), not singly, and an item with one vote is no more suspicious than
one with none.
As in the reference the user-level query is the target in training and the user's embedding
at inference, so corrections and scores read no target.

Hyperparameters (the schema's defaults of ``denoise.hsd``) follow the reference code (run_hsd.py, config/text.yml, the
trainer): lr 1e-3, batch 256, weight decay 0, Gumbel temperature 0.5 with annealing, AE dropout
0.3, attention dropout 0.2, curriculum 0.2 -> 0 over 10 epochs, BPR drop 0.2, early stopping
patience 10 (up to 300 epochs). Departures: hidden size 64, the study's backbone size (the
released script runs 100 in a hyper-parameter analysis); windows of up to 10 history items
(the paper: sequences of up to 50, RecBole's prefix augmentation); model selection on valid
NDCG@10 (the reference: Hit@20); the sequence-level fusion is a per-position linear layer (the
reference convolves with the positions as channels, which ties it to one sequence length); no
batch normalisation in the attention read-out; the BPR filter leaves out no item of a history
too short for its share (the reference's slice ``[-0:]`` then leaves out all); the sub-model
is this module's GRU (the paper plugs in GRU4Rec, SASRec, Caser, ...); ``max_epochs`` and
``patience`` are config keys, so that a CPU budget can cut them.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from .base import Denoiser, apply_edits, check_items, minibatch_epoch, pad

log = logging.getLogger(__name__)

TAU_MIN, TAU_EVERY, TAU_RATE = 1e-3, 40, 1e-3  # the reference's annealing schedule


class HSDNet(nn.Module):
    def __init__(self, n_items: int, n_users: int, hidden: int, ae_dropout: float, att_dropout: float,
                 dropout: float) -> None:
        super().__init__()
        self.item_emb = nn.Embedding(n_items + 1, hidden, padding_idx=0)
        self.user_emb = nn.Embedding(n_users, hidden)
        # sequence level: a bidirectional LSTM used as encoder and as decoder
        self.lstm = nn.LSTM(hidden, hidden, batch_first=True, bidirectional=True)
        self.ae_drop = nn.Dropout(ae_dropout)
        self.fuse = nn.Linear(2 * hidden, hidden)
        self.seq_out = nn.Linear(hidden, 2, bias=False)
        # user level: additive attention of each item against the query
        self.att_drop = nn.Dropout(att_dropout)
        self.fc_u = nn.Linear(hidden, hidden, bias=False)
        self.fc_v = nn.Linear(hidden, hidden)
        self.fc_e = nn.Linear(hidden, 2, bias=False)
        # the sub-model recommender (GRU4Rec)
        self.sub_drop = nn.Dropout(dropout)
        self.gru = nn.GRU(hidden, hidden, batch_first=True)
        self.sub_out = nn.Linear(hidden, hidden)
        for name, p in self.named_parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
            elif "bias" in name:
                nn.init.zeros_(p)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()

    def _bilstm(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.lstm(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        h = out.shape[-1] // 2
        return out[..., :h] + out[..., h:]  # the two directions summed, as the reference

    def signals(self, items: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """items [B, L] right-padded, query [B, H] -> user-level and sequence-level scores
        [B, L, 2] (index 1 = noise) and the per-window reconstruction loss [B]."""
        mask = (items > 0).unsqueeze(-1).float()
        lengths = (items > 0).sum(1)
        e = self.item_emb(items)
        enc = self._bilstm(self.ae_drop(e) * mask, lengths) * mask
        dec = self._bilstm(enc, lengths) * mask
        recon = ((dec - e) ** 2 * mask).sum((1, 2)) / lengths.clamp(min=1)
        seq = torch.sigmoid(self.seq_out(F.relu(self.ae_drop(self.fuse(torch.cat([dec, e], -1))))))
        f = self.att_drop(e) * mask
        user = torch.sigmoid(self.fc_e(torch.tanh(self.fc_u(f) + self.fc_v(query).unsqueeze(1))))
        return user, seq, recon

    def recommend(self, items: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """Scores over all items [B, n_items + 1] from the kept items of ``items`` (right-padded),
        their embeddings multiplied by ``keep`` (a 0/1 gate, differentiable in training)."""
        kept = (keep > 0.5) & (items > 0)
        n = kept.sum(1)
        # move the kept items to the front, in order (the dropped ones vanish)
        rank = kept.long().cumsum(1) - 1
        rows, cols = kept.nonzero(as_tuple=True)
        x = torch.zeros(items.shape[0], max(1, int(n.max()) if len(n) else 1), self.item_emb.embedding_dim)
        x = x.index_put((rows, rank[rows, cols]), self.item_emb(items)[rows, cols] * keep[rows, cols].unsqueeze(-1))
        packed = pack_padded_sequence(self.sub_drop(x), n.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        _, h = self.gru(packed)
        scores = self.sub_out(h[-1]) @ self.item_emb.weight.T
        scores[:, 0] = float("-inf")
        return scores

    def user_query(self, users: torch.Tensor) -> torch.Tensor:
        known = users < self.user_emb.num_embeddings
        q = self.user_emb(users.clamp(max=self.user_emb.num_embeddings - 1))
        # a user without train windows: the mean user (no user-level evidence either way)
        return torch.where(known.unsqueeze(-1), q, self.user_emb.weight.mean(0))


KEPT_LOGP = float(np.log(1e-3))  # the score of a kept item (a dropped one scores log 1 = 0)


class HSD(Denoiser):
    name = "hsd"

    def setup(self, train: pd.DataFrame, valid: pd.DataFrame, n_items: int, cfg: Mapping[str, Any],
              seed: int) -> Callable[[int], float]:
        check_items(train["history"], n_items, "windows.parquet")
        self.n_items = n_items
        n_users = int(max(train["user"].max(), valid["user"].max())) + 1
        self.net = HSDNet(n_items, n_users, cfg["hidden"], cfg["ae_dropout"], cfg["att_dropout"], cfg["dropout"])
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg["lr"], weight_decay=cfg["weight_decay"])
        hist, target = pad(list(train["history"])), torch.as_tensor(train["target"].to_numpy(dtype=np.int64, copy=True))
        users = torch.as_tensor(train["user"].to_numpy(dtype=np.int64, copy=True))
        order = torch.Generator().manual_seed(seed)
        self.state = state = {"tau": cfg["gumbel_tau"], "batches": 0}
        schedule = np.linspace(cfg["curriculum_drop"], 0.0, cfg["curriculum_epochs"])

        def run_epoch(epoch: int) -> float:
            self.net.train()
            drop = float(schedule[epoch - 1]) if epoch <= cfg["curriculum_epochs"] else 0.0
            bpr_drop = cfg["bpr_drop"] - drop * cfg["bpr_drop"] / max(cfg["curriculum_drop"], 1e-12)

            def loss_of(idx: torch.Tensor) -> torch.Tensor:
                state["batches"] += 1
                if state["batches"] % TAU_EVERY == 0:
                    state["tau"] = max(TAU_MIN, state["tau"] * float(np.exp(-TAU_RATE * state["batches"])))
                neg = torch.as_tensor(self.rng.integers(1, n_items + 1, len(idx)))
                return self._loss(hist[idx], target[idx], users[idx], neg, state["tau"], drop, bpr_drop)
            return minibatch_epoch(self.net, opt, len(target), cfg["batch_size"], order, cfg["clip_grad"], loss_of)
        return run_epoch

    def fit_stats(self) -> dict[str, Any]:
        return {"final_tau": self.state["tau"]}

    def _loss(self, hist: torch.Tensor, target: torch.Tensor, users: torch.Tensor, neg: torch.Tensor,
              tau: float, drop: float, bpr_drop: float) -> torch.Tensor:
        net = self.net
        mask = hist > 0
        user_s, seq_s, recon = net.signals(hist, net.item_emb(target))
        # hard Gumbel-softmax on each level (straight-through); drop where both say noise
        g_user = F.gumbel_softmax(user_s, tau=tau, hard=True)[..., 1]
        g_seq = F.gumbel_softmax(seq_s, tau=tau, hard=True)[..., 1]
        keep = (1 - g_user * g_seq) * mask
        scores = net.recommend(hist, keep)
        # curriculum: leave out the windows with the largest reconstruction loss
        chosen = torch.argsort(recon.detach(), stable=True)[: max(1, int(round((1 - drop) * len(recon))))]
        rec_loss = recon[chosen].mean()
        ce = F.cross_entropy(scores[chosen], target[chosen])
        # BPR of the user against the history's items, one negative per window; the items
        # with the largest loss (bpr_drop of each history) are left out
        u = net.user_emb(users)
        pos = (net.item_emb(hist) * u.unsqueeze(1)).sum(-1)
        negs = (net.item_emb(neg) * u).sum(-1, keepdim=True)
        bpr = -F.logsigmoid(pos - negs) * mask
        n_out = (bpr_drop * mask.sum(1)).long()
        if n_out.any():
            ranked = torch.argsort(torch.argsort(bpr.detach().masked_fill(~mask, -1.0), dim=1, descending=True,
                                                 stable=True), dim=1)
            bpr = bpr * (ranked >= n_out.unsqueeze(1))
        return rec_loss + ce + bpr.sum(1).mean()

    # inference (user-level query = the user's embedding; deterministic gate)

    @torch.no_grad()
    def _gate(self, items: list[list[int]], users: np.ndarray) -> list[np.ndarray]:
        """The drop decision (bool) of every item of every sequence."""
        self.net.eval()
        drop = []
        for lo in range(0, len(items), 512):
            chunk = items[lo:lo + 512]
            x = pad(chunk, max(1, max(map(len, chunk), default=1)))
            q = self.net.user_query(torch.tensor(np.asarray(users[lo:lo + 512], dtype=np.int64)))
            user_s, seq_s, _ = self.net.signals(x, q)
            d = ((user_s[..., 1] > user_s[..., 0]) & (seq_s[..., 1] > seq_s[..., 0])).numpy()
            drop += [d[k, :len(s)] for k, s in enumerate(chunk)]
        return drop

    def item_scores(self, units: pd.DataFrame) -> list[np.ndarray]:
        check_items(units["items"], self.n_items, "units.parquet")
        drop = self._gate([list(map(int, s)) for s in units["items"]], units["user"].to_numpy())
        return [np.where(d, 0.0, KEPT_LOGP) for d in drop]

    def correct(self, windows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        hist = [list(map(int, h)) for h in windows["history"]]
        check_items(hist, self.n_items, "windows.parquet")
        drop = self._gate(hist, windows["user"].to_numpy())
        deletions = [{int(i): 1.0 for i in np.flatnonzero(d)} for d in drop]
        return apply_edits(windows, deletions, [[] for _ in hist])

    @torch.no_grad()
    def score_all(self, rows: pd.DataFrame) -> torch.Tensor:
        """The sub-model's scores over all items for the denoised histories of ``rows``."""
        self.net.eval()
        x = pad([list(map(int, h)) for h in rows["history"]])
        q = self.net.user_query(torch.as_tensor(rows["user"].to_numpy(dtype=np.int64, copy=True)))
        user_s, seq_s, _ = self.net.signals(x, q)
        keep = ~((user_s[..., 1] > user_s[..., 0]) & (seq_s[..., 1] > seq_s[..., 0]))
        return self.net.recommend(x, keep.float() * (x > 0))


def build() -> HSD:
    """An unfitted HSD (llm4dsr.registry)."""
    return HSD()
