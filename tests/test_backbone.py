"""Backbones, ranking metrics, the train/valid/test protocol and the results table."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from llm4dsr import config, correct
from llm4dsr.backbones import MODELS, build, reference, results
from llm4dsr.backbones import trainer as backbone
from llm4dsr.io import Llm4dsrError
from llm4dsr.metrics import hit_ndcg_at_k, target_ranks

N_ITEMS = 30
FAST = {**config.defaults("backbone"), "hidden": 32, "layers": 1, "dropout": 0.0, "lr": 1e-2, "batch_size": 32,
        "max_epochs": 4, "patience": 2, "ks": [5, 10]}


@pytest.fixture(autouse=True)
def one_thread():
    # Tiny models run fastest single-threaded (and the test machine is shared).
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_windows(n: int, split: str, seed: int, n_items: int = N_ITEMS) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    hist = [rng.integers(1, n_items + 1, rng.integers(1, 11)).tolist() for _ in range(n)]
    target = rng.integers(1, n_items + 1, n)
    return pd.DataFrame({"window": range(n), "user": 0, "split": split, "target_pos": 0, "time": 0,
                         "history": hist, "history_noise": [[0] * len(h) for h in hist],
                         "history_clean": hist, "target": target, "target_noise": 0, "target_clean": target})


@pytest.fixture
def data(tmp_path):
    windows = pd.concat([make_windows(160, "train", 1), make_windows(40, "valid", 2), make_windows(40, "test", 3)])
    windows.to_parquet(tmp_path / "windows.parquet")
    pd.DataFrame({"item": range(1, N_ITEMS + 1), "title": [f"t{i}" for i in range(1, N_ITEMS + 1)],
                  "count": 1}).to_parquet(tmp_path / "items.parquet")
    return tmp_path


# models

@pytest.mark.parametrize("name", MODELS)
def test_backbone_overfits_tiny_set(name):
    train = backbone.to_tensors(make_windows(48, "train", 0), N_ITEMS, 10)
    cfg = {**FAST, "hidden": 64, "max_epochs": 30, "patience": 30, "batch_size": 16}
    fit = backbone.fit(name, N_ITEMS, train, train, cfg, seed=0)
    assert backbone.evaluate(fit.model, train, [5])["hr@5"] >= 0.9


@pytest.mark.parametrize("name", MODELS)
def test_scores_cover_all_items_and_mask_padding(name):
    model = build(name, N_ITEMS, FAST).eval()
    scores = model(torch.tensor([[0, 0, 3, 4], [1, 2, 3, 4], [0, 0, 0, 0]]))
    assert scores.shape == (3, N_ITEMS + 1)
    assert torch.isinf(scores[:, 0]).all() and torch.isfinite(scores[:, 1:]).all()
    # Shorter input is left-padded: the same as giving the padding explicitly.
    assert torch.allclose(model(torch.tensor([[3, 4]])), model(torch.tensor([[0] * 8 + [3, 4]])))


def test_unknown_model_is_a_clear_error():
    with pytest.raises(Llm4dsrError, match="backbone.models"):
        build("bert4rec", N_ITEMS, {})


# metrics

def test_metrics_match_hand_computed_ranking():
    inf = float("-inf")
    scores = torch.tensor([[inf, 0.9, 0.5, 0.5, 0.1],   # target 3 ties with 2: rank 2
                           [inf, 0.2, 0.2, 0.2, 0.9],   # target 1 ties with 2, 3: rank 2
                           [inf, 0.9, 0.5, 0.5, 0.1],   # target 4: rank 4
                           [inf, 0.3, 0.1, 0.2, 0.0]])  # target 1: rank 1
    targets = torch.tensor([3, 1, 4, 1])
    assert target_ranks(scores, targets).tolist() == [2, 2, 4, 1]
    m = hit_ndcg_at_k(scores, targets, [1, 2, 5])
    g2 = 1 / math.log2(3)
    assert m["hr@1"] == pytest.approx(1 / 4) and m["ndcg@1"] == pytest.approx(1 / 4)
    assert m["hr@2"] == pytest.approx(3 / 4) and m["ndcg@2"] == pytest.approx((2 * g2 + 1) / 4)
    assert m["hr@5"] == 1.0 and m["ndcg@5"] == pytest.approx((2 * g2 + 1 / math.log2(5) + 1) / 4)


# protocol

def test_test_split_is_read_only_after_training(data, monkeypatch):
    events = []
    real_load, real_fit = backbone.load_split, backbone.fit

    def spy_load(path, split):
        events.append(f"load {split}")
        return real_load(path, split)

    def spy_fit(*args, **kwargs):
        events.append("fit start")
        out = real_fit(*args, **kwargs)
        events.append("fit end")
        return out

    monkeypatch.setattr(backbone, "load_split", spy_load)
    monkeypatch.setattr(backbone, "fit", spy_fit)
    backbone.run(data / "windows.parquet", data / "items.parquet", data / "r.json", "gru4rec", FAST, seed=0)
    assert events.index("load test") > events.index("fit end")
    assert events.count("load test") == 1 and "load test" not in events[:events.index("fit end")]


def test_selection_ignores_test_content(data):
    """Replacing the test windows changes test metrics only, never what was selected."""
    windows = pd.read_parquet(data / "windows.parquet")
    poisoned = windows.copy()
    test = poisoned["split"] == "test"
    poisoned.loc[test, "target"] = 1 + poisoned.loc[test, "target"] % N_ITEMS
    poisoned.to_parquet(data / "poisoned.parquet")
    a = backbone.run(data / "windows.parquet", data / "items.parquet", data / "a.json", "sasrec", FAST, seed=0)
    b = backbone.run(data / "poisoned.parquet", data / "items.parquet", data / "b.json", "sasrec", FAST, seed=0)
    assert (a["valid"], a["best_epoch"], a["epochs_run"]) == (b["valid"], b["best_epoch"], b["epochs_run"])
    assert a["test"] != b["test"]


def test_early_stopping_uses_patience_on_valid(data):
    train = backbone.to_tensors(backbone.load_split(data / "windows.parquet", "train"), N_ITEMS, 10)
    valid = backbone.to_tensors(backbone.load_split(data / "windows.parquet", "valid"), N_ITEMS, 10)
    cfg = {**FAST, "max_epochs": 30, "patience": 2}
    fit = backbone.fit("gru4rec", N_ITEMS, train, valid, cfg, seed=0)
    assert fit.epochs_run == min(fit.best_epoch + 2, 30)
    assert backbone.evaluate(fit.model, valid, [10])["ndcg@10"] == pytest.approx(fit.valid["ndcg@10"])


def test_same_seed_same_result(data):
    args = (data / "windows.parquet", data / "items.parquet")
    a = backbone.run(*args, data / "a.json", "caser", FAST, seed=7)
    b = backbone.run(*args, data / "b.json", "caser", FAST, seed=7)
    c = backbone.run(*args, data / "c.json", "caser", FAST, seed=8)
    timing = ("train_seconds", "sequences_per_s")
    assert {k: v for k, v in a.items() if k not in timing} == {k: v for k, v in b.items() if k not in timing}
    assert a["valid"] != c["valid"] or a["test"] != c["test"]
    saved = json.loads((data / "a.json").read_text())
    assert saved["test"] == a["test"] and set(saved["test"]) == {"hr@5", "ndcg@5", "hr@10", "ndcg@10"}


def test_copied_runs_equal_a_training_on_the_same_windows(data):
    # clean in every noise setting and noisy at rate 0 train on the same windows: the
    # workflow trains once and copies; a second training must give the same runs
    windows = pd.read_parquet(data / "windows.parquet")
    windows.assign(history_noise=windows["history_noise"]).to_parquet(data / "same.parquet")  # another file, same windows
    args = (data / "items.parquet",)
    src = backbone.run_seeds(data / "windows.parquet", *args, [data / "s0.json", data / "s1.json"], "gru4rec", FAST, [0, 1],
                             meta={"noise": "uniform-0.0", "condition": "clean"})
    again = backbone.run_seeds(data / "same.parquet", *args, [data / "t0.json", data / "t1.json"], "gru4rec", FAST, [0, 1])
    copies = backbone.copy_seeds([data / "s0.json", data / "s1.json"], data / "windows.parquet", data / "same.parquet",
                                 [data / "c0.json", data / "c1.json"], {"noise": "uniform-0.2", "condition": "clean"})
    for s, t, c, k in zip(src, again, copies, (0, 1)):
        assert c["test"] == t["test"] == s["test"] and c["valid"] == t["valid"] and c["noise"] == "uniform-0.2"
        assert c["same_windows_as"].endswith(f"s{k}.json")
        assert json.loads((data / f"c{k}.json").read_text()) == c
        pd.testing.assert_frame_equal(pd.read_parquet(data / f"c{k}.ranks.parquet"), pd.read_parquet(data / f"t{k}.ranks.parquet"))
    windows.assign(target=windows["target"] % N_ITEMS + 1).to_parquet(data / "other.parquet")
    with pytest.raises(Llm4dsrError, match="other.parquet: windows differ from"):
        backbone.copy_seeds([data / "s0.json"], data / "windows.parquet", data / "other.parquet", [data / "d0.json"], {})
    assert not (data / "d0.json").exists()


def test_missing_valid_windows_name_the_file(data):
    windows = pd.read_parquet(data / "windows.parquet")
    windows[windows["split"] != "valid"].to_parquet(data / "novalid.parquet")
    with pytest.raises(Llm4dsrError, match="novalid.parquet: needs train and valid windows"):
        backbone.run(data / "novalid.parquet", data / "items.parquet", data / "r.json", "caser", FAST, seed=0)
    assert not (data / "r.json").exists()


def test_item_ids_outside_catalogue_name_the_file(data):
    windows = make_windows(5, "train", 0, n_items=N_ITEMS + 5)
    with pytest.raises(Llm4dsrError, match="bad.parquet: item ids outside 1..30"):
        backbone.to_tensors(windows, N_ITEMS, 10, data / "bad.parquet")


def test_clean_windows_takes_pre_noise_items():
    w = make_windows(3, "train", 0)
    w["history"] = [[1] * len(h) for h in w["history_clean"]]
    w["history_noise"] = [[1] * len(h) for h in w["history_clean"]]
    w["target"], w["target_noise"] = 1, 1
    clean = correct.clean_windows(w)
    assert clean["history"].tolist() == w["history_clean"].tolist()
    assert (clean["target"] == w["target_clean"]).all() and (clean["target_noise"] == 0).all()
    assert all(set(h) <= {0} for h in clean["history_noise"])


# results table

BOOT = {"resamples": 300, "level": 0.95}  # config intervals (fewer replicates: tests)


def _write_run(tmp_path, model, condition, seed, ranks, users):
    p = tmp_path / f"{model}-{condition}-seed{seed}.json"
    ranks = np.asarray(ranks)
    test = {"hr@5": float((ranks <= 5).mean()), "ndcg@5": float(np.where(ranks <= 5, 1 / np.log2(ranks + 1), 0).mean())}
    p.write_text(json.dumps({"model": model, "condition": condition, "seed": seed, "best_epoch": seed + 1,
                             "train_seconds": 1.0, "test": test}))
    pd.DataFrame({"window": np.arange(len(ranks)), "user": users, "rank": ranks}).to_parquet(backbone.ranks_path(p))
    return p


def test_results_table_means_intervals_and_paired_differences(tmp_path):
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(20), 3)  # 60 test windows of 20 users
    noisy = [rng.integers(1, 30, 60) for _ in range(2)]
    runs = {"noisy": noisy, "same": noisy, "clean": [np.ones(60, int), np.ones(60, int)],
            "worse": [np.full(60, 99), np.full(60, 99)]}
    paths = [_write_run(tmp_path, "sasrec", c, s, r, users) for c, rs in runs.items() for s, r in enumerate(rs)]
    table = results.aggregate(paths, tmp_path / "results.csv", tmp_path / "results.md", BOOT, seed=0)
    assert pd.read_csv(tmp_path / "results.csv").round(6).equals(table.round(6))
    csv = table.set_index("condition")
    hr = [(r <= 5).mean() for r in noisy]
    assert csv.at["noisy", "hr@5_mean"] == pytest.approx(np.mean(hr))
    assert csv.at["noisy", "hr@5_std"] == pytest.approx(np.std(hr, ddof=1))
    assert csv.at["noisy", "hr@5_ci_low"] <= csv.at["noisy", "hr@5_mean"] <= csv.at["noisy", "hr@5_ci_high"]
    assert (csv.at["clean", "hr@5_ci_low"], csv.at["clean", "hr@5_ci_high"]) == (1.0, 1.0)
    assert (csv.at["noisy", "n_test"], csv.at["noisy", "test_users"]) == (60, 20)
    # paired on the same windows: identical runs differ by exactly 0
    assert csv.at["same", "hr@5_diff_noisy"] == 0 and csv.at["same", "hr@5_diff_noisy_ci_low"] == 0
    assert csv.at["same", "hr@5_diff_noisy_ci_high"] == 0
    assert csv.at["worse", "hr@5_diff_noisy_ci_high"] < 0 < csv.at["clean", "hr@5_diff_noisy_ci_low"]
    assert csv.at["worse", "hr@5_gap_clean"] == pytest.approx(1.0)
    assert csv.at["noisy", "hr@5_gain_pct"] == pytest.approx(0.0)
    assert list(table["condition"]) == ["noisy", "same", "clean", "worse"]
    md = (tmp_path / "results.md").read_text()
    assert "60 test windows, 20 users" in md
    worse = next(line for line in md.splitlines() if line.startswith("| sasrec | worse |") and "**" in line)
    same = next(line for line in md.splitlines() if line.startswith("| sasrec | same |") and "+0.0000 [" in line)
    assert "**-" in worse and "**" not in same.split("|")[3]  # only an interval that excludes 0 is marked


def test_results_table_intervals_resample_users_not_windows(tmp_path):
    """Guard (issue 28): a user's test windows are drawn together. Giving each of 20 users
    5 copies of their one window adds no independent evidence, so every interval must stay
    as it is; a bootstrap over windows would narrow them about sqrt(5) times."""
    rng = np.random.default_rng(1)
    users = np.arange(20)
    runs = {c: [rng.integers(1, 12, 20) for _ in range(2)] for c in ("noisy", "clean")}
    tables = []
    for copies in (1, 5):
        folder = tmp_path / f"x{copies}"
        folder.mkdir()
        paths = [_write_run(folder, "sasrec", c, s, np.repeat(r, copies), np.repeat(users, copies))
                 for c, rs in runs.items() for s, r in enumerate(rs)]
        tables.append(results.aggregate(paths, folder / "results.csv", folder / "results.md", BOOT, seed=0)
                      .set_index("condition"))
    one, five = tables
    assert (one["n_test"].iloc[0], five["n_test"].iloc[0], five["test_users"].iloc[0]) == (20, 100, 20)
    bounds = [c for c in one.columns if c.endswith(("_ci_low", "_ci_high"))]
    assert "hr@5_diff_noisy_ci_low" in bounds and one.at["clean", "hr@5_ci_high"] > one.at["clean", "hr@5_ci_low"]
    for c in bounds:
        assert five[c].to_numpy() == pytest.approx(one[c].to_numpy(), rel=1e-9, abs=1e-12, nan_ok=True), c


def test_results_table_needs_the_same_test_windows(tmp_path):
    users = np.arange(10)
    a = _write_run(tmp_path, "sasrec", "noisy", 0, np.arange(1, 11), users)
    b = _write_run(tmp_path, "sasrec", "clean", 0, np.arange(1, 11), users)
    pd.DataFrame({"window": np.arange(1, 11), "user": users, "rank": np.arange(1, 11)}).to_parquet(backbone.ranks_path(b))
    with pytest.raises(Llm4dsrError, match="test windows differ"):
        results.aggregate([a, b], tmp_path / "results.csv", tmp_path / "results.md", BOOT, seed=0)


def test_aggregate_rejects_duplicate_runs(tmp_path):
    p = _write_run(tmp_path, "sasrec", "noisy", 0, [1, 2], [0, 1])
    with pytest.raises(Llm4dsrError, match="duplicate"):
        results.aggregate([p, p], tmp_path / "results.csv", tmp_path / "results.md", BOOT, seed=0)


# reference levels: most-popular and random (issue 26)

def pop_windows(train_targets, test_targets, test_users=None) -> pd.DataFrame:
    n_train, n_test = len(train_targets), len(test_targets)
    return pd.DataFrame({"window": range(n_train + n_test),
                         "user": [0] * n_train + list(test_users if test_users is not None else range(n_test)),
                         "split": ["train"] * n_train + ["test"] * n_test,
                         "target": list(train_targets) + list(test_targets)})


def test_mostpop_hand_computed_with_ties():
    """Counts 3, 2, 2, 0, 0 for items 1..5. Target 1 is ranked first; target 2 ties with
    item 3 at ranks 2-3; target 5 ties with item 4 at ranks 4-5: each metric is the mean
    over the tied ranks, not the best of them (the backbones' tie rule)."""
    test, v = reference.mostpop(pop_windows([1, 1, 1, 2, 2, 3, 3], [1, 2, 5]), 5, ["hr@2", "ndcg@2", "hr@5", "ndcg@5"])
    assert list(test["window"]) == [7, 8, 9]
    assert v["hr@2"] == pytest.approx([1, 0.5, 0])
    assert v["ndcg@2"] == pytest.approx([1, 0.5 / math.log2(3), 0])
    assert v["hr@5"] == pytest.approx([1, 1, 1])
    assert v["ndcg@5"] == pytest.approx([1, (1 / math.log2(3) + 1 / math.log2(4)) / 2,
                                         (1 / math.log2(5) + 1 / math.log2(6)) / 2])


def test_mostpop_equals_the_expectation_over_random_tie_orders():
    """Brute force: rank the 8 items in every order that keeps the counts' order (ties
    permuted), average each window's metric: the same as the closed form."""
    from itertools import permutations

    rng = np.random.default_rng(3)
    counts_from = rng.integers(1, 5, 12)  # items 5..8 never a train target
    test_targets = [1, 2, 3, 4, 5, 6, 7, 8]
    test, v = reference.mostpop(pop_windows(counts_from, test_targets), 8, ["hr@3", "ndcg@3"])
    counts = np.bincount(counts_from, minlength=9)[1:]
    got = {m: np.zeros(8) for m in v}
    orders = [o for o in permutations(range(8)) if all(counts[o[i]] >= counts[o[i + 1]] for i in range(7))]
    for order in orders:
        rank = np.empty(8, int)
        rank[list(order)] = np.arange(1, 9)
        r = rank[np.array(test_targets) - 1]
        got["hr@3"] += (r <= 3) / len(orders)
        got["ndcg@3"] += np.where(r <= 3, 1 / np.log2(r + 1), 0) / len(orders)
    for m in v:
        assert v[m] == pytest.approx(got[m])


def test_random_level_and_mostpop_without_counts():
    """A random ranking: HR@K = K / n, NDCG@K = sum_{r<=K} 1/log2(r+1) / n; a most-popular
    list that has seen nothing is exactly that."""
    level = reference.random_level(50, ["hr@10", "ndcg@10", "hr@20"])
    assert level["hr@10"] == pytest.approx(10 / 50) and level["hr@20"] == pytest.approx(20 / 50)
    assert level["ndcg@10"] == pytest.approx(sum(1 / math.log2(r + 1) for r in range(1, 11)) / 50)
    _, v = reference.mostpop(pop_windows([], [3, 17, 50]), 50, ["hr@10", "ndcg@10"])
    assert v["hr@10"] == pytest.approx([0.2] * 3) and v["ndcg@10"] == pytest.approx([level["ndcg@10"]] * 3)


def test_results_table_has_mostpop_rows_and_paired_differences(tmp_path):
    """mostpop is built from each condition's own train targets; each backbone row gets its
    difference to the same condition's list, paired on the same windows; nothing of the
    table without the reference changes."""
    n_items, users = 40, np.repeat(np.arange(20), 2)  # 40 test windows of 20 users
    rng = np.random.default_rng(0)
    test_targets = rng.integers(1, 6, 40)  # the popular items 1..5
    noisy_w = pop_windows(rng.integers(1, n_items + 1, 300), test_targets, users)  # noise: no popularity signal
    clean_w = pop_windows(rng.integers(1, 6, 300), test_targets, users)
    paths = {}
    for c, w in (("noisy", noisy_w), ("clean", clean_w)):
        paths[c] = tmp_path / f"{c}.parquet"
        w.to_parquet(paths[c])
    pd.DataFrame({"item": range(1, n_items + 1), "title": [f"t{i}" for i in range(1, n_items + 1)],
                  "count": 1}).to_parquet(tmp_path / "items.parquet")
    runs = [_write_run(tmp_path, "sasrec", c, s, rng.integers(1, 15, 40), users) for c in ("noisy", "clean")
            for s in (0, 1)]
    for p in runs:  # the test windows of the condition files
        r = pd.read_parquet(backbone.ranks_path(p))
        r.assign(window=np.arange(300, 340)).to_parquet(backbone.ranks_path(p))
    plain = results.aggregate(runs, tmp_path / "plain.csv", tmp_path / "plain.md", BOOT, seed=0)
    table = results.aggregate(runs, tmp_path / "results.csv", tmp_path / "results.md", BOOT, seed=0, windows=paths,
                              catalogue=tmp_path / "items.parquet")
    assert list(zip(table["model"], table["condition"])) == [("sasrec", "noisy"), ("sasrec", "clean"),
                                                             ("mostpop", "noisy"), ("mostpop", "clean")]
    assert table.iloc[:2][plain.columns].round(9).equals(plain.round(9))  # only added
    t = table.set_index(["model", "condition"])
    _, clean_pop = reference.mostpop(clean_w, n_items, ["hr@5"])
    assert t.at[("mostpop", "clean"), "hr@5_mean"] == pytest.approx(clean_pop["hr@5"].mean())
    assert t.at[("mostpop", "clean"), "hr@5_mean"] > 0.9 > t.at[("mostpop", "noisy"), "hr@5_mean"]
    assert t.at[("mostpop", "clean"), "seeds"] == 1
    for c in ("noisy", "clean"):
        row = t.loc[("sasrec", c)]
        assert row["hr@5_diff_mostpop"] == pytest.approx(row["hr@5_mean"] - t.at[("mostpop", c), "hr@5_mean"])
        assert row["hr@5_diff_mostpop_ci_low"] <= row["hr@5_diff_mostpop"] <= row["hr@5_diff_mostpop_ci_high"]
    assert t.at[("sasrec", "clean"), "hr@5_diff_mostpop_ci_high"] < 0  # the list beats a poor backbone
    assert pd.isna(t.at[("mostpop", "clean"), "hr@5_diff_mostpop"])
    assert t.at[("mostpop", "clean"), "hr@5_diff_noisy_ci_low"] > 0  # clean counts make a better list
    md = (tmp_path / "results.md").read_text()
    assert "| mostpop | clean |" in md and "a random ranking of the 40 items scores" in md
    with pytest.raises(Llm4dsrError, match="test windows differ"):
        other = clean_w.assign(window=clean_w["window"] + 1)
        other.to_parquet(paths["clean"])
        results.aggregate(runs, tmp_path / "x.csv", tmp_path / "x.md", BOOT, seed=0, windows=paths,
                          catalogue=tmp_path / "items.parquet")


def test_mostpop_interval_resamples_users_not_windows(tmp_path):
    """As for the backbones: 5 copies of each user's test window leave its interval as it is."""
    rng = np.random.default_rng(2)
    pd.DataFrame({"item": range(1, 21), "title": [f"t{i}" for i in range(1, 21)], "count": 1}).to_parquet(
        tmp_path / "items.parquet")
    train, targets = rng.integers(1, 21, 100), rng.integers(1, 21, 15)
    bounds = []
    for copies in (1, 5):
        w = pop_windows(train, np.repeat(targets, copies), np.repeat(np.arange(15), copies))
        w.to_parquet(tmp_path / f"w{copies}.parquet")
        run = _write_run(tmp_path, "sasrec", f"noisy{copies}", 0, np.ones(15 * copies, int),
                         np.repeat(np.arange(15), copies))
        r = pd.read_parquet(backbone.ranks_path(run))
        r.assign(window=np.arange(100, 100 + 15 * copies)).to_parquet(backbone.ranks_path(run))
        t = results.aggregate([run], tmp_path / "r.csv", tmp_path / "r.md", BOOT, seed=0,
                              windows={f"noisy{copies}": tmp_path / f"w{copies}.parquet"},
                              catalogue=tmp_path / "items.parquet").set_index("model")
        bounds.append(t.loc["mostpop", ["hr@5_ci_low", "hr@5_ci_high", "ndcg@5_ci_low", "ndcg@5_ci_high"]]
                      .to_numpy(dtype=float))
    assert bounds[0][1] > bounds[0][0] and bounds[1] == pytest.approx(bounds[0])


# the reference protocol's objective and initialisation, and the test-selection diagnostic

def test_bce_objective_matches_a_hand_computed_case():
    """Window [3, 1] left-padded to max_len + 1 = 11: inputs [0 x 9, 3], next items
    [0 x 8, 3, 1]; the cells predicting 3 (from padding) and 1 (from 3) count. With
    positive logits (0, 2) and negative logits (0, -1):
    (softplus(0) + softplus(-2)) / 2 + (softplus(0) + softplus(-1)) / 2 = 0.913242."""
    from llm4dsr.backbones.objectives import bce_from_logits, next_item_cells

    history = torch.tensor([[0] * 9 + [3]])
    inputs, nxt = next_item_cells(history, torch.tensor([1]))
    assert inputs.tolist() == [[0] * 9 + [3]] and nxt.tolist() == [[0] * 8 + [3, 1]]
    mask = nxt != 0
    pos = torch.zeros(1, 10)
    neg = torch.zeros(1, 10)
    pos[0, 8:], neg[0, 8:] = torch.tensor([0.0, 2.0]), torch.tensor([0.0, -1.0])
    pos[0, :8], neg[0, :8] = 50.0, -50.0  # masked cells must not count
    loss = bce_from_logits(pos, neg, mask)
    assert loss.item() == pytest.approx(0.913242, abs=1e-6)
    bce = torch.nn.BCEWithLogitsLoss()
    assert loss.item() == pytest.approx((bce(pos[mask], torch.ones(2)) + bce(neg[mask], torch.zeros(2))).item())


def test_sampled_negatives_are_distinct_and_outside_the_window():
    from llm4dsr.backbones.objectives import sample_negatives

    torch.manual_seed(0)
    window = torch.tensor([[0, 0, 3, 4, 5], [1, 2, 3, 4, 5]])
    neg = sample_negatives(window, 12, 4)
    for row, w in zip(neg.tolist(), window.tolist()):
        assert len(set(row)) == 4 and not set(row) & (set(w) | {0}) and all(1 <= i <= 12 for i in row)
    with pytest.raises(Llm4dsrError, match="fewer than"):
        sample_negatives(window, 6, 4)


@pytest.mark.parametrize("name", MODELS)
def test_every_position_encoding_matches_prefixes(name):
    """encode_all's position t is the model's encoding of the history up to t (left-padded)."""
    model = build(name, N_ITEMS, {**FAST, "dropout": 0.0}).eval()
    history = torch.tensor([[0, 0, 0, 0, 0, 0, 7, 8, 9, 10], [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]])
    every = model.encode_all(history)
    assert torch.allclose(every[:, -1], model.encode(history), atol=1e-5)
    later = history.clone()
    later[:, -1] = 11  # a different newest item changes no earlier position (causality)
    assert torch.allclose(every[:, :-1], model.encode_all(later)[:, :-1], atol=1e-5)
    if name == "sasrec":  # its position embedding is the absolute slot (as the reference's): no prefix identity
        return
    for t in (6, 8):
        prefix = torch.nn.functional.pad(history[:, :t + 1], (9 - t, 0))
        assert torch.allclose(every[:, t], model.encode(prefix), atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_reference_objective_and_init_train(name):
    cfg = {**config.defaults("backbone", "reference"), **{k: v for k, v in FAST.items() if k not in
                                                            ("ks", "objective", "init", "select_metric")},
           "hidden": 64, "max_epochs": 30, "patience": 30, "batch_size": 16}
    model = build(name, N_ITEMS, cfg)
    emb = model.item_emb.weight[1:].detach()
    assert emb.std().item() == pytest.approx(0.02, rel=0.2)  # N(0, 0.02), not Xavier
    train = backbone.to_tensors(make_windows(48, "train", 0), N_ITEMS, 10)
    fit = backbone.fit(name, N_ITEMS, train, train, cfg, seed=0)
    assert backbone.evaluate(fit.model, train, [10])["hr@10"] >= 0.6


def test_test_selection_diagnostic_changes_nothing_selected_or_reported(data):
    """With the diagnostic on, the selected weights and the reported test metrics are
    exactly those of the run without it; the diagnostic only adds the gap."""
    args = (data / "windows.parquet", data / "items.parquet")
    cfg = {**FAST, "max_epochs": 6, "patience": 3}
    off = backbone.run(*args, data / "off.json", "sasrec", cfg, seed=0)
    on = backbone.run(*args, data / "on.json", "sasrec", {**cfg, "test_selection_diagnostic": True}, seed=0)
    timing = ("train_seconds", "sequences_per_s")
    diag = on.pop("test_selection_diagnostic")
    assert {k: v for k, v in on.items() if k not in timing} == {k: v for k, v in off.items() if k not in timing}
    assert diag["valid_selected_epoch"] == off["best_epoch"] and len(diag["test_per_epoch"]) == off["epochs_run"]
    assert diag["test_per_epoch"][diag["epoch"] - 1] == max(diag["test_per_epoch"])
    assert diag["gap"][diag["select_metric"]] >= 0  # the test-selected epoch is the test-best one
    # the weights too: both runs' models give the same scores
    torch.manual_seed(0)
    train = backbone.to_tensors(backbone.load_split(args[0], "train"), N_ITEMS, 10)
    valid = backbone.to_tensors(backbone.load_split(args[0], "valid"), N_ITEMS, 10)
    test = backbone.to_tensors(backbone.load_split(args[0], "test"), N_ITEMS, 10)
    a = backbone.fit("gru4rec", N_ITEMS, train, valid, cfg, seed=0)
    b = backbone.fit("gru4rec", N_ITEMS, train, valid, cfg, seed=0, diagnostic_test=test)
    assert a.best_epoch == b.best_epoch and b.test_per_epoch and a.test_per_epoch is None
    for (ka, va), (kb, vb) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)


def test_selection_gap_table(data, tmp_path):
    args = (data / "windows.parquet", data / "items.parquet")
    cfg = {**FAST, "max_epochs": 4, "patience": 2, "test_selection_diagnostic": True}
    paths = []
    for seed in (0, 1):
        p = tmp_path / f"s{seed}.json"
        backbone.run(*args, p, "gru4rec", cfg, seed=seed, meta={"condition": "noisy"})
        paths.append(p)
    table = results.selection_gap(paths, tmp_path / "gap.csv", tmp_path / "gap.md")
    assert table["seeds"].tolist() == [2] and "ndcg@10_gap_mean" in table
    assert (tmp_path / "gap.md").read_text().startswith("**Diagnostic, not a result.**")
