"""Published denoisers (HSD, STEAM) and FMLP-Rec's filter layer, on cases with a known answer.

Two communities of items (tests/denoise_synth.py): a user's history stays in one, and noise
replaces an item by one of the other community, so a working denoiser flags those items far
above chance. The fits use small, fast settings (more steps per epoch, a higher learning rate)
instead of the papers' defaults, which need far more data and epochs.
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

from denoise_synth import make_log
from llm4dsr.backbones import trainer
from llm4dsr.backbones import build
from llm4dsr.backbones.fmlprec import FilterLayer
from llm4dsr import config, names
from llm4dsr.denoisers import CHANGES, apply_edits, make_denoiser
from llm4dsr.denoisers.hsd import HSD
from llm4dsr.denoisers.steam import STEAM
from llm4dsr.denoisers.hsd import HSDNet
from llm4dsr.denoisers.steam import DELETE, INSERT, KEEP
from llm4dsr.io import Llm4dsrError
from llm4dsr.units import make_units

RATE = 0.15


def defaults(name: str) -> dict:
    return config.defaults("denoise")[name]


HSD_FAST = {**defaults("hsd"), "max_epochs": 10, "patience": 10, "batch_size": 32, "lr": 0.01, "hidden": 32,
            "gumbel_tau": 1.0}
STEAM_FAST = {**defaults("steam"), "max_epochs": 6, "patience": 6, "batch_size": 32, "lr": 0.01, "hidden": 32,
              "dropout": 0.1}


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def communities(half: int, cycle: bool):
    seq, win = make_log(n_users=40, length=20, half=half, rate=RATE, max_history=10, cycle=cycle)
    return seq, win, make_units(seq, win, "history", 10), 2 * half


@pytest.fixture(scope="module")
def hsd_fit():
    torch.set_num_threads(1)
    seq, win, units, n = communities(20, cycle=False)   # random walks within a community
    return HSD().fit(win, n, HSD_FAST, seed=0), win, units


@pytest.fixture(scope="module")
def steam_fit():
    torch.set_num_threads(1)
    seq, win, units, n = communities(10, cycle=True)    # walks in order within a community
    return STEAM().fit(win, n, STEAM_FAST, seed=0), win, units


def auc(units: pd.DataFrame, scores: list[np.ndarray], split: str) -> float:
    keep = (units["split"] == split).to_numpy()
    y = np.concatenate(list(units["noise"][keep]))
    return roc_auc_score(y, np.concatenate([s for s, k in zip(scores, keep) if k]))


def check_corrected(before: pd.DataFrame, after: pd.DataFrame, n_items: int) -> None:
    """Targets untouched, the three history lists aligned, ids valid for the backbone trainer."""
    for col in ("window", "user", "split", "target_pos", "target", "target_noise", "target_clean"):
        assert (before[col].to_numpy() == after[col].to_numpy()).all(), col
    for h, n, c in zip(after["history"], after["history_noise"], after["history_clean"]):
        assert len(h) == len(n) == len(c)
    for split in ("train", "valid", "test"):
        trainer.to_tensors(after[after["split"] == split], n_items, 10)


# FMLP-Rec

def test_filter_layer_on_known_signals():
    L, H = 10, 3
    layer = FilterLayer(L, H, dropout=0.0)
    x = torch.randn(2, L, H)
    freq = torch.arange(L // 2 + 1)

    def set_weight(w: torch.Tensor) -> None:              # one complex gain per frequency
        with torch.no_grad():
            layer.weight.copy_(torch.view_as_real(w.to(torch.complex64)[:, None].expand(-1, H).contiguous()))

    set_weight(torch.ones(L // 2 + 1))                     # all-pass: identity
    assert torch.allclose(layer.filter(x), x, atol=1e-5)
    set_weight((freq == 0).float())                        # low-pass at frequency 0: the sequence mean
    assert torch.allclose(layer.filter(x), x.mean(1, keepdim=True).expand_as(x), atol=1e-5)
    wave = torch.cos(2 * math.pi * 2 * torch.arange(L) / L)[None, :, None].repeat(1, 1, H)
    set_weight((freq == 2).float())                        # a band-pass at frequency 2 keeps that wave
    assert torch.allclose(layer.filter(wave), wave, atol=1e-5)
    set_weight((freq == 3).float())                        # ... another band removes it
    assert layer.filter(wave).abs().max() < 1e-5
    set_weight(torch.exp(-2j * math.pi * freq * 3 / L))    # a linear phase is a circular delay of 3
    assert torch.allclose(layer.filter(x), torch.roll(x, shifts=3, dims=1), atol=1e-5)
    out = layer(x)                                         # residual + LayerNorm
    assert out.shape == x.shape and torch.allclose(out.mean(-1), torch.zeros(2, L), atol=1e-5)


def test_fmlprec_shapes_and_gradients():
    model = build("fmlprec", 30, {"hidden": 16, "layers": 2, "dropout": 0.0})
    hist = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    scores = model(hist)
    assert scores.shape == (2, 31) and torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    model.loss(hist, torch.tensor([6, 6])).backward()
    for block in model.blocks:
        assert block[0].weight.grad.abs().sum() > 0       # the learnable filters are trained
    assert model.item_emb.weight.grad[0].abs().sum() == 0  # padding row gets no update from the lookup


# HSD

def test_hsd_drops_the_planted_items(hsd_fit):
    model, win, units = hsd_fit
    scores = model.item_scores(units)
    assert [len(s) for s in scores] == units["items"].map(len).tolist()
    assert auc(units, scores, "train") > 0.65 and auc(units, scores, "test") > 0.6
    corrected, changes = model.correct(win)
    check_corrected(win, corrected, 40)
    assert list(changes.columns) == CHANGES and set(changes["op"]) == {"delete"}
    train = changes[changes["split"] == "train"]
    base = np.concatenate(list(win.loc[win["split"] == "train", "history_noise"])).mean()
    assert len(train) > 50 and train["was_noise"].mean() > 3 * base
    before = sum(map(sum, win["history_noise"]))
    assert sum(map(sum, corrected["history_noise"])) == before - changes["was_noise"].sum()
    assert model.stats["best_epoch"] >= 1 and model.stats["valid"]["ndcg@10"] > 0
    metrics = model.evaluate(win, "test", [5, 10])
    assert set(metrics) == {"hr@5", "ndcg@5", "hr@10", "ndcg@10"} and metrics["hr@10"] > 0.3  # random: 0.25


def test_hsd_signal_shapes_and_gradients():
    torch.manual_seed(0)
    model = HSD()
    model.net = HSDNet(n_items=12, n_users=3, hidden=8, ae_dropout=0.0, att_dropout=0.0, dropout=0.0)
    hist = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [6, 7, 8, 9]])  # right-padded
    user, seq, recon = model.net.signals(hist, model.net.item_emb(torch.tensor([4, 6, 10])))
    assert user.shape == seq.shape == (3, 4, 2) and recon.shape == (3,)
    assert ((user > 0) & (user < 1)).all() and torch.isfinite(recon).all()
    loss = model._loss(hist, torch.tensor([4, 6, 10]), torch.tensor([0, 1, 2]), torch.tensor([11, 11, 12]),
                       tau=1.0, drop=0.0, bpr_drop=0.2)
    loss.backward()
    net = model.net
    # the straight-through gate passes the recommender's gradient to both signal levels
    for p in (net.fc_e.weight, net.seq_out.weight, net.fuse.weight, net.gru.weight_ih_l0, net.user_emb.weight):
        assert torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0
    scores = net.recommend(hist, torch.ones(3, 4))
    assert scores.shape == (3, 13) and torch.isinf(scores[:, 0]).all()
    assert torch.isfinite(net.recommend(hist, torch.zeros(3, 4))[:, 1:]).all()  # everything dropped


# STEAM

def test_steam_corruption_labels_recover_the_raw_sequence():
    model = STEAM()
    model.cfg, model.rng = defaults("steam"), np.random.default_rng(0)
    model.n_items, model.mod_len, model.eos = 50, 21, 51
    seen = set()
    for k in range(300):
        raw = [int(i) for i in np.random.default_rng(k).choice(np.arange(1, 51), size=1 + k % 11, replace=False)]
        mod, ops, targets = model.corrupt(raw)
        assert len(mod) == len(ops) == len(targets) <= model.mod_len and mod[-1] == raw[-1]
        rebuilt = []
        for item, op, tgt in zip(mod, ops, targets):
            if op == DELETE:
                assert item not in raw                   # a random item not in the sequence
                continue
            if op == INSERT:
                missing = [t for t in tgt if t not in (0, 51)]
                assert 1 <= len(missing) <= 5 and (len(missing) == 5 or 51 in tgt)
                rebuilt += missing[::-1]                  # targets are nearest first
            rebuilt.append(item)
        assert rebuilt == raw
        seen |= set(ops)
    assert seen == {KEEP, DELETE, INSERT}


def test_steam_flags_and_deletes_the_planted_items(steam_fit):
    model, win, units = steam_fit
    scores = model.item_scores(units)
    assert [len(s) for s in scores] == units["items"].map(len).tolist()
    assert all((s <= 0).all() for s in scores)           # log-probabilities of "delete"
    assert auc(units, scores, "train") > 0.85 and auc(units, scores, "test") > 0.85
    corrected, changes = model.correct(win)
    check_corrected(win, corrected, 20)
    assert list(changes.columns) == CHANGES
    deleted = changes[changes["op"] == "delete"]
    base = np.concatenate(list(win["history_noise"])).mean()
    assert len(deleted) > 20 and deleted["was_noise"].mean() > 3 * base
    inserted = changes[changes["op"] == "insert"]
    assert ((inserted["old_item"] == 0) & (inserted["was_noise"] == 0) & inserted["new_item"].between(1, 20)).all()
    growth = corrected["history"].map(len) - win["history"].map(len)
    per_window = changes.groupby("window")["op"].agg(lambda o: (o == "insert").sum() - (o == "delete").sum())
    assert (growth.to_numpy() == per_window.reindex(win["window"], fill_value=0).to_numpy()).all()
    metrics = model.evaluate(win, "test", [5, 10])
    assert metrics["hr@10"] > 0.7                         # in-order walks: the next item is predictable


# shared

@pytest.mark.parametrize("name", sorted(names.DENOISERS))
def test_fit_never_reads_test_rows_and_is_deterministic(name):
    seq, win, units, n = communities(10, cycle=True)
    cfg = (HSD_FAST if name == "hsd" else STEAM_FAST) | {"max_epochs": 2, "patience": 2}
    poisoned = win.copy()
    test = poisoned["split"] == "test"
    poisoned.loc[test, "target"] = 10 ** 6
    poisoned.loc[test, "history"] = pd.Series([[10 ** 6]] * int(test.sum()), index=poisoned.index[test])
    a = make_denoiser(name).fit(win, n, cfg, seed=3)
    b = make_denoiser(name).fit(poisoned, n, cfg, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(a.item_scores(units), b.item_scores(units)))
    assert a.correct(win)[0]["history"].tolist() == b.correct(win)[0]["history"].tolist()


def test_apply_edits_records_deletions_and_insertions():
    win = pd.DataFrame({"window": [7], "user": [2], "split": ["test"], "target_pos": [10], "time": [0],
                        "history": [[5, 6, 7]], "history_noise": [[0, 1, 0]], "history_clean": [[5, 9, 7]],
                        "target": [3], "target_noise": [0], "target_clean": [3]})
    out, changes = apply_edits(win, [{1: 0.8}], [[(0, 4, 0.6), (2, 8, 0.7), (2, 11, 0.7)]])
    assert out.at[0, "history"] == [4, 5, 8, 11, 7]
    assert out.at[0, "history_noise"] == [0, 0, 0, 0, 0] and out.at[0, "history_clean"] == [4, 5, 8, 11, 7]
    assert out.at[0, "target"] == 3
    rows = changes[["op", "pos", "old_item", "new_item", "prob", "was_noise", "window", "unit"]].values.tolist()
    assert rows == [["insert", 7, 0, 4, 0.6, 0, 7, -1], ["delete", 8, 6, 0, 0.8, 1, 7, -1],
                    ["insert", 9, 0, 8, 0.7, 0, 7, -1], ["insert", 9, 0, 11, 0.7, 0, 7, -1]]


def test_registry_and_errors():
    assert [type(make_denoiser(n)).__name__ for n in names.DENOISERS] == ["HSD", "STEAM"]
    assert set(defaults("hsd")) >= {"max_epochs", "patience"} and set(defaults("steam")) >= {"max_epochs", "patience"}
    with pytest.raises(Llm4dsrError, match="unknown denoiser"):
        make_denoiser("nope")
    with pytest.raises(Llm4dsrError, match="train and valid"):
        HSD().fit(make_log(n_users=4, length=5)[1].assign(split="train"), 40, HSD_FAST, seed=0)


def test_detection_pairs_the_llm_with_each_denoiser():
    from llm4dsr.metrics import paired_comparisons

    pairs = paired_comparisons(["llm_full_title", "popularity", "hsd", "steam"])
    assert {("llm_full_title", "popularity"), ("llm_full_title", "hsd"), ("llm_full_title", "steam")} <= set(pairs)
