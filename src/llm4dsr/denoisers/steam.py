"""STEAM (Lin et al., WWW 2023, "A Self-Correcting Sequential Recommender"), from the paper and
its reference code (TempSDU/STEAM).

One transformer encoder (bidirectional, position embeddings) is shared by two heads:

* the **item-wise corrector** gives every item of a sequence one of three operations, *keep*,
  *delete* or *insert* (insert = put items before this one, and keep it). For an insertion a
  small causal transformer (``insert_net``) starts from the encoder's state at that position
  and generates the missing items one by one, nearest first, until an end token (at most
  ``max_insert``);
* the **recommender** is a masked-item (Cloze) model: one more transformer layer on the
  encoder, scores over all items at every masked position; the next item is predicted at a
  mask token appended to the (corrected) history.

Self-supervised corruption trains the corrector without labels: each item of a training
sequence is kept (probability ``p_keep``), deleted (``p_delete``; a run of deletions, at most
``max_insert`` long, never the last item, becomes an *insert* label on the next kept item,
whose targets are the deleted items), or preceded by a random item not in the sequence
(``1 - p_keep - p_delete``; the random item is labelled *delete*). The recommender learns the
Cloze task (mask probability ``mask_prob``) on the raw sequence and on the sequence as the
corrector (no gradient) currently corrects it. Loss = corrector (operation + insertion
cross-entropy) + recommender (raw + corrected), Adam, gradients clipped at norm 5.

Here a training sequence is a train window's history followed by its target; correction and
prediction read a window's history only. Corrected windows apply the corrector's most probable
operation at every history item (deletions and insertions), the target never changes. The
item's noise score is the corrector's log-probability of *delete*.

Hyperparameters (the schema's defaults of ``denoise.steam``) from the paper and the reference code (main.py): hidden 64, one
head, one encoder layer, dropout 0.5, feed-forward 4 x hidden, GELU, lr 1e-3, batch 256,
corruption probabilities keep/delete/insert 0.4/0.5/0.1, at most 5 items inserted before an
item, mask probability 0.5, corrupted sequences up to 10 items longer than the raw ones
(50 -> 60), Xavier-normal initialisation, up to 300 epochs. Departures: sequences are windows
(up to 10 history items + target) instead of random sub-sequences of up to 50 items of each
user's whole history; full ranking over all items (the reference: 99 sampled negatives);
model selection and early stopping on valid NDCG@10 of the corrected-sequence recommender
(the reference validates every saved epoch); the inserted items are generated with the same
position embeddings as in training (the reference adds them again at every decoding step),
and generation never emits padding or the mask token; ``max_epochs`` and ``patience`` are config
keys, so that a CPU budget can cut them.
"""
from __future__ import annotations

import logging
from typing import Any, Callable, Mapping

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..io import Llm4dsrError
from .base import Denoiser, apply_edits, check_items, minibatch_epoch, pad

log = logging.getLogger(__name__)

KEEP, DELETE, INSERT = 0, 1, 2
POSITIONS = 100  # position-embedding table (the reference's size); longer sequences are cut


class STEAMNet(nn.Module):
    def __init__(self, n_items: int, hidden: int, heads: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.n_items, self.eos, self.mask = n_items, n_items + 1, n_items + 2
        self.item_emb = nn.Embedding(n_items + 3, hidden, padding_idx=0)  # 0 pad, items, EOS, MASK
        self.pos_emb = nn.Embedding(POSITIONS, hidden)
        self.drop = nn.Dropout(dropout)

        def layer() -> nn.TransformerEncoderLayer:
            return nn.TransformerEncoderLayer(hidden, heads, 4 * hidden, dropout, activation="gelu", batch_first=True)

        self.encoder = nn.ModuleList(layer() for _ in range(layers))
        self.ops = nn.Linear(hidden, 3)
        self.insert_net = layer()
        self.recommender = layer()
        for name, p in self.named_parameters():
            if p.dim() > 1:
                nn.init.xavier_normal_(p)
            elif "bias" in name:
                nn.init.zeros_(p)

    def encode(self, seqs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Right-padded [B, L] -> hidden states [B, L, H] and the padding mask."""
        padding = seqs == 0
        x = self.drop(self.item_emb(seqs) + self.pos_emb(torch.arange(seqs.shape[1])))
        for lay in self.encoder:
            x = lay(x, src_key_padding_mask=padding)
        return x, padding

    def vocab(self, h: torch.Tensor) -> torch.Tensor:
        """Logits over the vocabulary; padding and the mask token are never an answer."""
        out = h @ self.item_emb.weight.T
        out[..., 0] = float("-inf")
        out[..., self.mask] = float("-inf")
        return out

    def insert_states(self, start: torch.Tensor, prev: torch.Tensor) -> torch.Tensor:
        """start [N, H] (encoder state of the item inserted before), prev [N, k] items so far
        -> hidden states [N, k + 1, H] predicting the next item at every step (causal)."""
        k = prev.shape[1]
        x = torch.cat([start.unsqueeze(1), self.item_emb(prev)], 1) + self.pos_emb(torch.arange(k + 1))
        causal = torch.triu(torch.ones(k + 1, k + 1, dtype=torch.bool), diagonal=1)
        return self.insert_net(self.drop(x), src_mask=causal)

    def cloze_states(self, seqs: torch.Tensor) -> torch.Tensor:
        """Recommender hidden states [B, L, H] at every position of right-padded ``seqs``
        (``vocab`` turns the chosen ones into scores)."""
        enc, padding = self.encode(seqs)
        return self.recommender(enc, src_key_padding_mask=padding)


class STEAM(Denoiser):
    name = "steam"

    def setup(self, train: pd.DataFrame, valid: pd.DataFrame, n_items: int, cfg: Mapping[str, Any],
              seed: int) -> Callable[[int], float]:
        self.cfg = cfg
        seqs = [list(map(int, h)) + [int(t)] for h, t in zip(train["history"], train["target"])]
        check_items(seqs, n_items, "windows.parquet")
        self.n_items, self.eos = n_items, n_items + 1
        self.max_len = max(map(len, seqs))
        self.mod_len = min(POSITIONS, self.max_len + cfg["extra_len"])
        self.net = STEAMNet(n_items, cfg["hidden"], cfg["heads"], cfg["layers"], cfg["dropout"])
        opt = torch.optim.Adam(self.net.parameters(), lr=cfg["lr"])
        order = torch.Generator().manual_seed(seed)

        def run_epoch(epoch: int) -> float:
            return minibatch_epoch(self.net, opt, len(seqs), cfg["batch_size"], order, cfg["clip_grad"],
                                   lambda idx: self._loss([seqs[i] for i in idx]))
        return run_epoch

    # self-supervised corruption

    def corrupt(self, seq: list[int]) -> tuple[list[int], list[int], list[list[int]]]:
        """A randomly modified copy of ``seq``: (modified items, operation label per item,
        insertion targets per item: the deleted items nearest first, then EOS if fewer than
        max_insert, padded with 0)."""
        rng, cfg, K = self.rng, self.cfg, self.cfg["max_insert"]
        p_keep, p_del = cfg["p_keep"], cfg["p_keep"] + cfg["p_delete"]
        present = set(seq)
        out, ops, targets = [], [], []
        length, i = len(seq), 0
        while i < len(seq):
            d = rng.random()
            if d <= p_keep:
                out.append(seq[i]), ops.append(KEEP), targets.append([0] * K)
                i += 1
            elif d <= p_del and length > 1 and i != len(seq) - 1:
                deleted: list[int] = []
                while d <= p_del and d > p_keep and length > 1 and len(deleted) < K and i != len(seq) - 1:
                    deleted.insert(0, seq[i])
                    length, i = length - 1, i + 1
                    d = rng.random()
                tgt = deleted + ([self.eos] if len(deleted) < K else [])
                out.append(seq[i]), ops.append(INSERT), targets.append(tgt + [0] * (K - len(tgt)))
                i += 1
            elif d > p_del and length < self.mod_len and len(present) < self.n_items:
                while (new := int(rng.integers(1, self.n_items + 1))) in present:
                    pass
                present.add(new)
                out.append(new), ops.append(DELETE), targets.append([0] * K)
                length += 1
            # otherwise the drawn operation is not allowed here: draw again (as the reference)
        return out, ops, targets

    def _cloze_batch(self, seqs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(masked input, original items, loss mask) for the Cloze task: the newest mod_len items
        of each sequence, right-padded (an empty sequence is one EOS token, never masked)."""
        x = pad([s[-self.mod_len:] if s else [self.net.eos] for s in seqs])
        real = (x > 0) & (x != self.net.eos)
        masked = torch.as_tensor(self.rng.random(tuple(x.shape)) < self.cfg["mask_prob"]) & real
        return x.masked_fill(masked, self.net.mask), x, masked

    def _loss(self, batch: list[list[int]]) -> torch.Tensor:
        net = self.net
        # corrector: recover the raw sequence from a randomly modified one
        mods = [self.corrupt(s) for s in batch]
        x = pad([m[0] for m in mods])
        ops = pad([m[1] for m in mods], x.shape[1])
        tgt = torch.zeros(len(batch), x.shape[1], self.cfg["max_insert"], dtype=torch.long)
        for b, m in enumerate(mods):
            tgt[b, :len(m[2])] = torch.as_tensor(m[2], dtype=torch.long)
        # corrected copies of the raw sequences, by the current corrector (no gradient)
        net.eval()
        corrected = self._corrected(batch)
        net.train()
        enc, padding = net.encode(x)
        op_loss = F.cross_entropy(net.ops(enc)[~padding], ops[~padding])
        at = (ops == INSERT) & ~padding
        ins_loss = torch.zeros(())
        if at.any():
            t = tgt[at]                                             # [N, K] deleted items (+ EOS), 0 after
            h = net.insert_states(enc[at], t[:, :-1])               # teacher forcing
            ins_loss = F.cross_entropy(net.vocab(h[t > 0]), t[t > 0])
        rec_loss = torch.zeros(())
        for seqs in (batch, corrected):
            inp, orig, m = self._cloze_batch(seqs)
            if m.any():
                rec_loss = rec_loss + F.cross_entropy(net.vocab(net.cloze_states(inp)[m]), orig[m])
        return op_loss + ins_loss + rec_loss

    # inference

    @torch.no_grad()
    def _operations(self, seqs: list[list[int]]
                    ) -> tuple[list[np.ndarray], list[np.ndarray], list[dict[int, list[int]]]]:
        """Per sequence: log-probabilities of the 3 operations per item [n, 3], the chosen
        operation per item, and for each *insert* item the generated items (chronological)."""
        net, K = self.net, self.cfg["max_insert"]
        net.eval()
        logps, chosen, inserts = [], [], []
        for lo in range(0, len(seqs), 512):
            chunk = [s[-POSITIONS:] for s in seqs[lo:lo + 512]]
            x = pad(chunk, max(1, max(map(len, chunk), default=1)))
            enc, padding = net.encode(x)
            lp = F.log_softmax(net.ops(enc), -1)
            op = lp.argmax(-1).masked_fill(padding, KEEP)
            at = op == INSERT
            gen = torch.zeros(int(at.sum()), 0, dtype=torch.long)
            if at.any():
                start = enc[at]
                for _ in range(K):  # greedy, nearest item first
                    nxt = net.vocab(net.insert_states(start, gen)[:, -1]).argmax(-1, keepdim=True)
                    gen = torch.cat([gen, nxt], 1)
            rows, cols = at.nonzero(as_tuple=True)
            per_row: list[dict[int, list[int]]] = [{} for _ in chunk]
            for (r, c), items in zip(zip(rows.tolist(), cols.tolist()), gen.tolist()):
                items = items[:items.index(net.eos)] if net.eos in items else items
                if items:
                    per_row[r][c] = items[::-1]  # generated nearest first; stored in time order
            for k, s in enumerate(chunk):
                logps.append(lp[k, :len(s)].numpy().astype(float))
                chosen.append(op[k, :len(s)].numpy())
                inserts.append(per_row[k])
        return logps, chosen, inserts

    def _corrected(self, seqs: list[list[int]]) -> list[list[int]]:
        _, chosen, inserts = self._operations(seqs)
        out = []
        for s, op, ins in zip(seqs, chosen, inserts):
            seq = []
            for i, item in enumerate(s[-POSITIONS:]):
                seq += ins.get(i, [])
                if op[i] != DELETE:
                    seq.append(item)
            out.append(seq)
        return out

    def item_scores(self, units: pd.DataFrame) -> list[np.ndarray]:
        seqs = [list(map(int, s)) for s in units["items"]]
        check_items(seqs, self.n_items, "units.parquet")
        if any(len(s) > POSITIONS for s in seqs):
            raise Llm4dsrError(f"units.parquet: steam scores units of at most {POSITIONS} items (config score.block)")
        return [lp[:, DELETE] for lp in self._operations(seqs)[0]]

    def correct(self, windows: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
        hist = [list(map(int, h))[-POSITIONS:] for h in windows["history"]]
        check_items(hist, self.n_items, "windows.parquet")
        logps, chosen, inserts = self._operations(hist)
        offset = [len(h) - len(c) for h, c in zip(windows["history"], hist)]
        deletions = [{o + int(i): float(np.exp(lp[i, DELETE])) for i in np.flatnonzero(op == DELETE)}
                     for lp, op, o in zip(logps, chosen, offset)]
        insertions = [[(o + i, item, float(np.exp(lp[i, INSERT])))
                       for i, items in sorted(ins.items()) for item in items]
                      for lp, ins, o in zip(logps, inserts, offset)]
        return apply_edits(windows, deletions, insertions)

    @torch.no_grad()
    def score_all(self, rows: pd.DataFrame) -> torch.Tensor:
        """The recommender's scores over all items at a mask token after the corrected history."""
        self.net.eval()
        corrected = self._corrected([list(map(int, h)) for h in rows["history"]])
        x = pad([s[-(self.mod_len - 1):] + [self.net.mask] for s in corrected])
        at = (x == self.net.mask).long().argmax(1)
        return self.net.vocab(self.net.cloze_states(x)[torch.arange(len(x)), at])[:, :self.n_items + 1]


def build() -> STEAM:
    """An unfitted STEAM (llm4dsr.registry)."""
    return STEAM()
