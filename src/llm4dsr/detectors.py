"""Noise detectors other than the LLM's answer, all behind one interface, and a
co-occurrence suggester. All but ``llm_embedding`` (the LLM's title embeddings) use
the interaction log alone.

A detector is fitted on the train period of the observed (possibly noisy) log and
gives each item of a unit a log-score, higher = more likely noise; the score table
(llm4dsr.scores) normalises them over the unit, as it does the LLM's log-probs.
Counts are leave-one-user-out: a user's own history never vouches for itself
(an injected item would otherwise "co-occur" with its neighbours once).

A detector is registered by its ``name`` in llm4dsr.names.DETECTORS.
"""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch

from llm4dsr import names
from llm4dsr.io import Llm4dsrError, read_catalogue, read_parquet, write_parquet
from llm4dsr.scores import scores_frame

log = logging.getLogger(__name__)


class Detector(ABC):
    name: str
    needs: tuple[str, ...] = ()  # inputs beyond the log (llm_embedding: "embeddings")

    def __init__(self, seed: int = 0, threads: int = 1):
        self.seed, self.threads = seed, threads

    @abstractmethod
    def fit(self, sequences: pd.DataFrame, n_items: int) -> "Detector":
        """Learn from the train-period interactions of ``sequences`` (items 1..n_items)."""

    @abstractmethod
    def score(self, units: pd.DataFrame) -> list[np.ndarray]:
        """Per-item log-scores of each unit (row order of ``units``), higher = more suspicious."""


def train_period(sequences: pd.DataFrame) -> pd.DataFrame:
    """Observed train-period interactions (split train or none), in user, pos order."""
    return sequences[sequences["split"].isin(names.TRAIN_PERIOD)].sort_values(["user", "pos"])


def _user_item_counts(train: pd.DataFrame, n_items: int) -> sp.csr_matrix:
    users = train["user"].to_numpy()
    return sp.csr_matrix((np.ones(len(train)), (users, train["item"].to_numpy())),
                         shape=(users.max(initial=0) + 1, n_items + 1))


class Popularity(Detector):
    """The less often an item was seen in the train period, the more suspicious: -log(1 + count)."""

    name = "popularity"

    def fit(self, sequences: pd.DataFrame, n_items: int) -> "Popularity":
        train = train_period(sequences)
        self.counts = np.bincount(train["item"], minlength=n_items + 1).astype(float)
        self.by_user = _user_item_counts(train, n_items)
        return self

    def score(self, units: pd.DataFrame) -> list[np.ndarray]:
        out = []
        for user, items in zip(units["user"], units["items"]):
            items = np.asarray(items)
            own = self.by_user[user].toarray()[0, items] if user < self.by_user.shape[0] else 0.0
            out.append(-np.log1p(self.counts[items] - own))
        return out


class Cooccurrence(Detector):
    """An item that co-occurs less than chance with the rest of its unit is suspicious.

    Pairs are counted within ``span`` positions of a user's train-period history; the
    association is a smoothed PMI, log((c_ij + 1) / (c_i c_j / T + 1)), which is ~0 for
    pairs too rare to judge, and an item's score is minus its mean PMI with the others.
    """

    name = "cooccurrence"

    def __init__(self, seed: int = 0, threads: int = 1, span: int = 10):
        super().__init__(seed, threads)
        self.span = span

    def fit(self, sequences: pd.DataFrame, n_items: int) -> "Cooccurrence":
        train = train_period(sequences)
        self.n = n_items + 1
        users, items = train["user"].to_numpy(), train["item"].to_numpy()
        a, b, u = [], [], []
        for d in range(1, self.span + 1):
            same = (users[:-d] == users[d:]) & (items[:-d] != items[d:])
            a += [items[:-d][same], items[d:][same]]
            b += [items[d:][same], items[:-d][same]]
            u += [users[:-d][same]] * 2
        a, b, u = (np.concatenate(x) if x else np.zeros(0, int) for x in (a, b, u))
        self.pairs = sp.csr_matrix((np.ones(len(a)), (a, b)), shape=(self.n, self.n))
        self.marginal = np.asarray(self.pairs.sum(axis=1)).ravel()
        self.total = self.marginal.sum()
        # each user's own pair counts, as sorted codes a * n + b, for leave-one-user-out
        order = np.argsort(u, kind="stable")
        codes, u = a[order] * self.n + b[order], u[order]
        self.own: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        for user, lo, hi in zip(*_runs(u)):
            self.own[int(user)] = np.unique(codes[lo:hi], return_counts=True)
        return self

    def association(self, user: int, items: np.ndarray) -> np.ndarray:
        """Smoothed PMI between every two items of a unit, the user's own pairs left out."""
        c = self.pairs[items][:, items].toarray()
        marg, total = self.marginal[items].astype(float), float(self.total)
        if user in self.own:
            codes, counts = self.own[user]
            want = items[:, None] * self.n + items[None, :]
            at = np.clip(np.searchsorted(codes, want), 0, len(codes) - 1)
            c = c - np.where(codes[at] == want, counts[at], 0)
            a = codes // self.n
            for k, it in enumerate(items):
                marg[k] -= counts[a == it].sum()
            total -= counts.sum()
        expected = np.outer(marg, marg) / max(total, 1.0)
        return np.log((c + 1.0) / (expected + 1.0))

    def score(self, units: pd.DataFrame) -> list[np.ndarray]:
        out = []
        for user, items in zip(units["user"], units["items"]):
            items = np.asarray(items)
            pmi = self.association(int(user), items)
            others = items[:, None] != items[None, :]  # a repeated item is no evidence either way
            n = others.sum(axis=1)
            out.append(-np.where(n > 0, (pmi * others).sum(axis=1) / np.maximum(n, 1), 0.0))
        return out


def _runs(sorted_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Key, start and end of each run of equal values in a sorted array."""
    starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]]) if len(sorted_keys) else np.zeros(0, int)
    ends = np.r_[starts[1:], len(sorted_keys)]
    return sorted_keys[starts], starts, ends


def suggest_cooccurrence(model: Cooccurrence, units: pd.DataFrame, wanted: pd.DataFrame) -> np.ndarray:
    """For each (unit, pos) row of ``wanted``: the item co-occurring most with the rest of
    the unit and not already in it (ties: the more frequent item, then the lower id)."""
    by_unit = units.set_index("unit")
    tie = model.marginal / (model.marginal.max() + 1.0)  # < 1: only breaks ties of whole counts
    out = np.zeros(len(wanted), dtype=np.int64)
    for k, (unit, pos) in enumerate(zip(wanted["unit"], wanted["pos"])):
        u = by_unit.loc[unit]
        items, positions = np.asarray(u["items"]), list(u["positions"])
        rest = np.delete(items, positions.index(pos))
        key = np.asarray(model.pairs[rest].sum(axis=0)).ravel() + tie
        key[items], key[0] = -1.0, -1.0
        out[k] = int(np.argmax(key))
    return out


class _Encoder(torch.nn.Module):
    """Item embeddings -> transformer encoder -> one logit per position (no position
    embeddings: which item does not belong is a question about the set)."""

    def __init__(self, n_items: int, dim: int, layers: int, heads: int):
        super().__init__()
        self.emb = torch.nn.Embedding(n_items + 1, dim, padding_idx=0)
        layer = torch.nn.TransformerEncoderLayer(dim, heads, 2 * dim, dropout=0.1, batch_first=True)
        self.enc = torch.nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.out = torch.nn.Linear(dim, 1)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        pad = items == 0
        h = self.enc(self.emb(items), src_key_padding_mask=pad)
        return torch.log_softmax(self.out(h).squeeze(-1).masked_fill(pad, -torch.inf), dim=-1)


class IdTransformer(Detector):
    """A small ID-based transformer trained on the LLM's self-supervised task: in a
    train-period segment one item is replaced by a uniform random item; which one?"""

    name = "idtransformer"

    def __init__(self, seed: int = 0, threads: int = 1, length: int = 10, dim: int = 32, layers: int = 2,
                 heads: int = 2, steps: int = 600, batch: int = 64, lr: float = 3e-3):
        super().__init__(seed, threads)
        self.length, self.steps, self.batch, self.lr = length, steps, batch, lr
        self.shape = (dim, layers, heads)

    def fit(self, sequences: pd.DataFrame, n_items: int) -> "IdTransformer":
        torch.manual_seed(self.seed)
        torch.set_num_threads(self.threads)
        rng = np.random.default_rng(self.seed)
        train = train_period(sequences)
        seqs = [g.to_numpy() for _, g in train.groupby("user")["item"] if len(g) >= 2]
        if not seqs:
            raise Llm4dsrError("sequences.parquet: no user has two train-period interactions")
        lengths = np.array([len(s) for s in seqs])
        self.model = _Encoder(n_items, *self.shape)
        opt = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        self.model.train()
        for step in range(self.steps):
            x, y = _corrupted_batch(seqs, lengths, self.length, self.batch, n_items, rng)
            loss = torch.nn.functional.nll_loss(self.model(torch.as_tensor(x)), torch.as_tensor(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if step % 100 == 0 or step == self.steps - 1:
                log.info("idtransformer step %d loss %.3f", step, loss.item())
        self.model.eval()
        return self

    @torch.no_grad()
    def score(self, units: pd.DataFrame) -> list[np.ndarray]:
        items = list(units["items"])
        out = []
        for lo in range(0, len(items), 256):
            chunk = items[lo:lo + 256]
            x = np.zeros((len(chunk), max(map(len, chunk))), dtype=np.int64)
            for k, it in enumerate(chunk):
                x[k, :len(it)] = it
            logp = self.model(torch.as_tensor(x)).numpy()
            out += [logp[k, :len(it)].astype(float) for k, it in enumerate(chunk)]
        return out


def _corrupted_batch(seqs: list[np.ndarray], lengths: np.ndarray, length: int, batch: int, n_items: int,
                     rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    users = rng.choice(len(seqs), size=batch, p=lengths / lengths.sum())
    x = np.zeros((batch, length), dtype=np.int64)
    y = np.zeros(batch, dtype=np.int64)
    for k, u in enumerate(users):
        n = int(rng.integers(2, min(length, lengths[u]) + 1))
        start = int(rng.integers(lengths[u] - n + 1))
        seg = seqs[u][start:start + n].copy()
        y[k] = rng.integers(n)
        while (new := int(rng.integers(1, n_items + 1))) == seg[y[k]]:
            pass
        seg[y[k]] = new
        x[k, :n] = seg
    return x, y


class LlmEmbedding(Detector):
    """The LLM's knowledge without its answer: an item whose title sits far, in the LLM's
    embedding space (llm4dsr.embed), from the rest of its history is suspicious. Its score
    is minus its mean cosine similarity to the unit's other items, other copies of the same
    item left out as co-occurrence leaves them (0 with nothing else to compare). Nothing is
    fitted: the embeddings are the model's."""

    name = "llm_embedding"
    needs = ("embeddings",)  # rule embed_items's table, given to detectors.run

    def __init__(self, seed: int = 0, threads: int = 1, embeddings: np.ndarray | None = None):
        super().__init__(seed, threads)
        self.embeddings = embeddings  # [n_items + 1, dim] unit rows (embed.read_embeddings)

    def fit(self, sequences: pd.DataFrame, n_items: int) -> "LlmEmbedding":
        if self.embeddings is None or len(self.embeddings) != n_items + 1:
            raise Llm4dsrError(f"llm_embedding: needs the embeddings of items 1..{n_items} (rule embed_items)")
        return self

    def score(self, units: pd.DataFrame) -> list[np.ndarray]:
        out = []
        for items in units["items"]:
            items = np.asarray(items, dtype=np.int64)
            e = self.embeddings[items].astype(np.float64)
            other = items[:, None] != items[None, :]  # a repeated item does not vouch for itself
            n = other.sum(axis=1)
            out.append(-np.where(n > 0, ((e @ e.T) * other).sum(axis=1) / np.maximum(n, 1), 0.0))
        return out


def _registered() -> dict[str, type[Detector]]:
    found, todo = {}, list(Detector.__subclasses__())
    while todo:
        cls = todo.pop()
        todo += cls.__subclasses__()
        if getattr(cls, "name", None) in names.DETECTORS:
            found[cls.name] = cls
    return found


def make_detector(name: str, seed: int = 0, threads: int = 1, **inputs) -> Detector:
    """A fresh detector registered in llm4dsr.names.DETECTORS under ``name`` (``inputs``:
    what its class ``needs``, e.g. ``embeddings``)."""
    classes = _registered()
    if name not in classes:
        raise Llm4dsrError(f"config detectors: unknown detector {name!r} (known: {', '.join(classes)})")
    return classes[name](seed=seed, threads=threads, **inputs)


def needs(name: str) -> tuple[str, ...]:
    """The extra inputs detector ``name`` reads (llm_embedding: the item embeddings)."""
    return tuple(getattr(_registered().get(name), "needs", ()))


def run(name: str, sequences_path, catalogue_path, units_paths: list, out_paths: list, seed: int,
        threads: int = 1, embeddings_path=None) -> None:
    """The workflow step: fit detector ``name`` on the train period of a noise setting's
    log, then score each units file into the score table beside it in ``out_paths``."""
    from llm4dsr.embed import read_embeddings

    sequences = read_parquet(sequences_path, ["user", "pos", "item", "split"])
    n_items = read_catalogue(catalogue_path).n_items
    inputs = {"embeddings": read_embeddings(embeddings_path, n_items)} if "embeddings" in needs(name) else {}
    detector = make_detector(name, seed, threads, **inputs).fit(sequences, n_items)
    for units_path, out in zip(units_paths, out_paths, strict=True):
        units = read_parquet(units_path, ["unit", "user", "items"])
        write_parquet(scores_frame(units, detector.score(units)), out)
        log.info("%s: scored %d units -> %s", name, len(units), out)
