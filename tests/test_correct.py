"""Correction obeys threshold and max-N, rebuilds train windows, never touches a valid/test target."""
import numpy as np
import pandas as pd
import pytest

from denoise_synth import make_log
from llm4dsr import correct
from llm4dsr.detectors import Cooccurrence
from llm4dsr.io import Llm4dsrError
from llm4dsr.scores import contrast, scores_frame, split_thresholds
from llm4dsr.units import item_table, make_units

N_ITEMS = 40
CFG = {"threshold": {"kind": "percentile", "scale": "unit_prob", "train": 60, "test": 90},
       "max_per_sequence": {"train": 2, "test": 1}}


@pytest.fixture(scope="module")
def log():
    return make_log(n_users=16, length=16, rate=0.15, seed=1)


def cooc_scores(seq, units):
    return scores_frame(units, Cooccurrence().fit(seq, N_ITEMS).score(units))


def oracle(seq, units):
    """Scores that point at the noise items, and the clean item as every suggestion."""
    scores = scores_frame(units, [np.array(n, dtype=float) * 5 for n in units["noise"]])
    items = item_table(units).merge(seq[["user", "pos", "item_clean"]], on=["user", "pos"])
    suggestions = items[["unit", "pos"]].assign(rank=0, item=items["item_clean"], title="t")
    return scores, suggestions


def check_held_targets(before, after):
    held = before["split"] != "train"
    assert before[held]["target"].equals(after[held]["target"])
    assert list(after.columns) == list(before.columns) and after["window"].equals(before["window"])


@pytest.mark.parametrize("mode", ["history", "window"])
def test_threshold_and_max_per_sequence(log, mode):
    seq, win = log
    units = make_units(seq, win, mode, 8)
    scores = cooc_scores(seq, units)
    out, changes = correct.correct("cooccurrence", win, seq, units, N_ITEMS, CFG, seed=0, scores=scores)
    items = item_table(units, scores)
    cuts = split_thresholds(items, CFG["threshold"])
    assert len(changes) and (changes["prob"] > changes["split"].map(cuts)).all()
    per_unit = changes.groupby("unit").agg(n=("pos", "size"), split=("split", "first"))
    assert (per_unit["n"] <= per_unit["split"].map({"train": 2, "valid": 1, "test": 1})).all()
    assert (changes["new_item"] != changes["old_item"]).all()
    check_held_targets(win, out)
    # the most suspicious item above threshold is taken first
    top = items.loc[items.groupby("unit")["prob"].idxmax()].set_index("unit")
    for u, g in changes.groupby("unit"):
        assert top.at[u, "pos"] in set(g["pos"])


def test_train_windows_rebuilt_from_corrected_log(log):
    seq, win = log
    units = make_units(seq, win, "history", 8)
    scores, suggestions = oracle(seq, units)
    threshold = {"kind": "probability", "scale": "unit_prob", "train": 0.2, "test": 0.2}
    out, changes = correct.correct("llm4dsr", win, seq, units, N_ITEMS, {**CFG, "threshold": threshold}, seed=0,
                                   scores=scores, suggestions=suggestions)
    train = changes[changes["split"] == "train"]
    assert len(train) and (train["was_noise"] == 1).all()
    new = dict(zip(zip(train["user"], train["pos"]), train["new_item"]))
    held = changes[changes["split"] != "train"].assign(window=lambda c: c["unit"].map(units.set_index("unit")["window"]))
    own = dict(zip(zip(held["window"], held["pos"]), held["new_item"]))
    for b, a in zip(win.itertuples(), out.itertuples()):
        start = b.target_pos - len(b.history)
        for k, old in enumerate(b.history):
            key = (b.user, start + k)
            if b.split == "train":  # rebuilt from the corrected log
                assert a.history[k] == new.get(key, old)
                assert a.history_noise[k] == (0 if key in new else b.history_noise[k])
            else:  # valid/test histories take only their own unit's changes
                assert a.history[k] == own.get((b.window, start + k), old)
        if b.split == "train":
            assert a.target == new.get((b.user, b.target_pos), b.target)
    assert sum(map(sum, out[out["split"] == "train"]["history_noise"])) < sum(map(sum, win[win["split"] == "train"]["history_noise"]))
    check_held_targets(win, out)


def test_window_mode_corrects_windows_directly(log):
    seq, win = log
    units = make_units(seq, win, "window", 8)
    scores, suggestions = oracle(seq, units)
    out, changes = correct.correct("llm4dsr", win, seq, units, N_ITEMS, CFG, seed=0, scores=scores, suggestions=suggestions)
    w = units.set_index("unit")["window"]
    tgt = changes[(changes["split"] == "train") & (changes["pos"] == changes["unit"].map(w).map(win.set_index("window")["target_pos"]))]
    assert len(tgt)  # a train window's target is part of its unit and may be corrected
    for c in tgt.itertuples():
        assert out.set_index("window").at[w[c.unit], "target"] == c.new_item
    check_held_targets(win, out)


def test_llm_conditions_only_use_suggested_positions(log):
    seq, win = log
    units = make_units(seq, win, "history", 8)
    scores = cooc_scores(seq, units)
    items = item_table(units, scores)
    top = items.loc[items.groupby("unit")["prob"].idxmax()]
    # rank 0 repeats the item itself (no change), rank 1 is the real suggestion
    suggestions = pd.concat([top[["unit", "pos", "item"]].assign(rank=0),
                             top[["unit", "pos"]].assign(rank=1, item=(top["item"] % N_ITEMS) + 1)])
    _, changes = correct.correct("llm4dsr", win, seq, units, N_ITEMS, CFG, seed=0, scores=scores, suggestions=suggestions)
    chosen = changes.merge(top[["unit", "pos", "item"]], on=["unit", "pos"])
    assert len(chosen) == len(changes) and (chosen["new_item"] == chosen["item"] % N_ITEMS + 1).all()
    _, every = correct.correct("llm4dsr_no_uncertainty", win, seq, units, N_ITEMS, CFG, seed=0, scores=scores,
                           suggestions=suggestions)
    assert len(every) == len(units) > len(changes) and every["unit"].is_unique
    with pytest.raises(Llm4dsrError, match="suggestions.parquet: suggested item outside"):
        correct.correct("llm4dsr", win, seq, units, N_ITEMS, CFG, seed=0, scores=scores,
                    suggestions=suggestions.assign(item=N_ITEMS + 1))


def test_random_makes_the_same_number_of_changes(log):
    seq, win = log
    units = make_units(seq, win, "history", 8)
    scores, suggestions = oracle(seq, units)
    _, llm = correct.correct("llm4dsr", win, seq, units, N_ITEMS, CFG, seed=0, scores=scores, suggestions=suggestions)
    out, rnd = correct.correct("random", win, seq, units, N_ITEMS, CFG, seed=5, llm_changes=llm)
    assert rnd.groupby("split").size().to_dict() == llm.groupby("split").size().to_dict()
    assert (rnd["new_item"] != rnd["old_item"]).all() and rnd["new_item"].between(1, N_ITEMS).all()
    assert rnd["prob"].isna().all() and not rnd.set_index(["unit", "pos"]).index.equals(llm.set_index(["unit", "pos"]).index)
    assert rnd.equals(correct.correct("random", win, seq, units, N_ITEMS, CFG, seed=5, llm_changes=llm)[1])
    check_held_targets(win, out)


def test_a_unit_showing_a_test_target_is_refused(log):
    seq, win = log
    units = make_units(seq, win, "history", 8)
    k = units.index[units["split"] == "test"][0]
    target = int(win.set_index("window").at[units.at[k, "window"], "target_pos"])
    units.at[k, "positions"] = list(units.at[k, "positions"][1:]) + [target]
    with pytest.raises(Llm4dsrError, match="shows the target"):
        correct.correct("cooccurrence", win, seq, units, N_ITEMS, CFG, seed=0, scores=cooc_scores(seq, units))


# A hand-made case: 3 users x 9 interactions; targets at positions 1-6 are train, 7
# valid, 8 test. With block 4, each user has train blocks of positions 0-3 and 4-6, a
# valid unit (history 3-6) and a test unit (history 4-7). The probabilities are chosen
# so that the thresholds fall on known values (numpy's linear interpolation):
#  train: 21 items, 60th percentile = 13th smallest (index 12.0)            = 0.30
#  valid: 12 items, 90th percentile = 0.1 * s[9] + 0.9 * s[10], s9 = s10 = 0.50 = 0.50
#  test:  12 items, 90th percentile = s[9] = s[10]                            = 0.40
# Each split holds an item exactly at its threshold: `>` leaves it, `>=` would take it.
HAND_THRESHOLDS = {"train": 0.30, "valid": 0.50, "test": 0.40}
HAND_PROBS = {  # (user, split, first position) -> probabilities in position order
    (0, "train", 0): [0.90, 0.80, 0.70, 0.01],  # 3 above 0.30, cap 2: the two most probable
    (0, "train", 4): [0.02, 0.30, 0.03],  # at the threshold: none
    (1, "train", 0): [0.60, 0.04, 0.05, 0.06],
    (1, "train", 4): [0.07, 0.08, 0.09],
    (2, "train", 0): [0.55, 0.50, 0.10, 0.11],
    (2, "train", 4): [0.45, 0.40, 0.12],
    (0, "valid", 3): [0.90, 0.10, 0.20, 0.05],  # cap 1
    (1, "valid", 3): [0.50, 0.15, 0.25, 0.06],  # at the threshold: none (the train percentile, 0.28, would take it)
    (2, "valid", 3): [0.07, 0.30, 0.35, 0.50],
    (0, "test", 4): [0.01, 0.70, 0.40, 0.02],  # cap 1
    (1, "test", 4): [0.03, 0.04, 0.40, 0.05],
    (2, "test", 4): [0.06, 0.07, 0.08, 0.09],  # the train percentile (0.076) would take 0.08 or 0.09
}
HAND_CHANGES = {(0, "train", 0): [0, 1], (1, "train", 0): [0], (2, "train", 0): [0, 1], (2, "train", 4): [4, 5],
                (0, "valid", 3): [3], (0, "test", 4): [5]}  # -> the positions changed


def hand_case():
    rows, split = [], {}
    for u in range(3):
        for p in range(9):
            item = 1 + (u * 9 + p) % N_ITEMS
            rows.append((u, p, p * 100 + u, item, item, 0))
            split[(u, p)] = "none" if p == 0 else "train" if p <= 6 else "valid" if p == 7 else "test"
    seq = pd.DataFrame(rows, columns=["user", "pos", "timestamp", "item", "item_clean", "noise"])
    seq["split"] = [split[k] for k in zip(seq["user"], seq["pos"])]
    from denoise_synth import _windows

    win = _windows(seq, 4, split)
    units = make_units(seq, win, "history", 4)
    keys = [(u, s, p[0]) for u, s, p in zip(units["user"], units["split"], units["positions"])]
    assert sorted(keys) == sorted(HAND_PROBS)
    probs = [HAND_PROBS[k] for k in keys]
    scores = scores_frame(units, [np.log(p) for p in probs], probs)
    items = item_table(units)
    suggestions = items[["unit", "pos"]].assign(rank=0, item=items["item"] % N_ITEMS + 1)
    return seq, win, units, scores, suggestions, dict(zip(units["unit"], keys))


def test_exact_changes_per_unit_on_a_hand_made_case():
    """Guards: a cap of N-1, the train percentile on valid, `>=` instead of `>`, each
    changes the number of replacements of some unit here."""
    seq, win, units, scores, suggestions, key = hand_case()
    cuts = split_thresholds(item_table(units, scores), CFG["threshold"])
    assert cuts == pytest.approx(HAND_THRESHOLDS, abs=1e-12)  # valid takes the test percentile
    out, changes = correct.correct("llm4dsr", win, seq, units, N_ITEMS, CFG, seed=0, scores=scores,
                                   suggestions=suggestions)
    got = changes.groupby("unit")["pos"].apply(list)
    assert {key[u]: sorted(p) for u, p in got.items()} == HAND_CHANGES
    assert (changes["new_item"] == changes["old_item"] % N_ITEMS + 1).all()
    check_held_targets(win, out)
    # the same positions through a detector's condition (no suggestions needed)
    _, det = correct.correct("popularity", win, seq, units, N_ITEMS, CFG, seed=0, scores=scores)
    assert det[["unit", "pos"]].equals(changes[["unit", "pos"]])


def test_logprob_threshold_selects_what_a_hand_computation_does():
    """correct.threshold.scale logprob (the reference code): percentiles of the raw
    log-scores pooled over the split, strict >, at most 2 (train) / 1 (test) per unit.

    Train: A (a, b, c) = (-1, -6, -2), B (d, e, a) = (-5, -3, -4); the 60th percentile of
    the six values is -3.0: A's a and c are replaced, B's e (-3) is not (strict >).
    Test: P = (-0.5, -2, -4), Q = (-1, -3, -6); the 90th percentile is -0.75: P's first
    item only. On the within-unit probability scale the same scores pick Q's first item
    instead (softmax P = (0.798, ...), Q = (0.876, ...), 90th percentile 0.837)."""
    a, b, c, d, e = 1, 2, 3, 4, 5
    units = pd.DataFrame({"unit": [0, 1, 2, 3], "user": [0, 1, 2, 3], "split": ["train", "train", "test", "test"],
                          "window": [0, 1, 2, 3], "positions": [[0, 1, 2]] * 4,
                          "items": [[a, b, c], [d, e, a], [a, b, c], [d, e, a]], "noise": [[0, 0, 0]] * 4})
    logp = [np.array(x) for x in ([-1, -6, -2], [-5, -3, -4], [-0.5, -2, -4], [-1, -3, -6])]
    items = item_table(units, scores_frame(units, logp))
    caps = {"train": 2, "test": 1}
    logprob = {"kind": "percentile", "scale": "logprob", "train": 60, "test": 90}
    assert split_thresholds(items, logprob) == pytest.approx({"train": -3.0, "test": -0.75})
    chosen = correct.select(items, logprob, caps)
    assert sorted(zip(chosen["unit"], chosen["idx"])) == [(0, 0), (0, 2), (2, 0)]
    unit_prob = {**logprob, "scale": "unit_prob"}
    assert split_thresholds(items, unit_prob)["test"] == pytest.approx(0.837, abs=1e-3)
    chosen = correct.select(items, unit_prob, caps)
    assert [(u, i) for u, i in zip(chosen["unit"], chosen["idx"]) if u >= 2] == [(3, 0)]


def test_contrast_is_the_same_in_a_short_and_a_long_unit():
    """contrast = log(s_i / mean of the unit's other scores): 0 when a detector scores every
    item alike, log k for an item scored k times each other item, in a 2- and a 10-item unit
    alike (the within-unit probability: 1/2 and 1/10, k/(k+1) and k/(k+9))."""
    k = 5.0
    units = pd.DataFrame({"unit": [0, 1, 2, 3, 4], "user": [0] * 5, "split": ["test"] * 5, "window": [0] * 5,
                          "positions": [list(range(n)) for n in (2, 10, 2, 10, 1)],
                          "items": [list(range(1, n + 1)) for n in (2, 10, 2, 10, 1)],
                          "noise": [[0] * n for n in (2, 10, 2, 10, 1)]})
    logp = [np.full(2, -3.0), np.full(10, -3.0), np.log([k, 1]) - 7, np.log([1] * 9 + [k]) - 7, np.array([-1.0])]
    items = item_table(units, scores_frame(units, logp)).set_index(["unit", "idx"])
    assert items.loc[[0, 1], "contrast"].to_numpy() == pytest.approx(np.zeros(12), abs=1e-12)
    assert items.at[(2, 0), "contrast"] == pytest.approx(np.log(k)) == items.at[(3, 9), "contrast"]
    assert items.at[(2, 1), "contrast"] == pytest.approx(-np.log(k))  # 1 over the other's k
    assert items.loc[3, "contrast"].iloc[:9].to_numpy() == pytest.approx(np.full(9, -np.log((k + 8) / 9)))
    assert items.at[(4, 0), "contrast"] == 0.0  # a 1-item unit has no other item to compare with
    assert items.at[(2, 0), "prob"] == pytest.approx(k / (k + 1))
    assert items.at[(3, 9), "prob"] == pytest.approx(k / (k + 9))
    # a dominant item: no cancellation in the sum of the others
    one_unit = contrast(np.zeros(3, dtype=int), np.array([0.0, -800.0, -800.0]))
    assert one_unit == pytest.approx([800.0, -800 - np.log(0.5), -800 - np.log(0.5)])


def test_pooled_contrast_spreads_changes_over_units_and_unit_prob_sends_them_to_short_ones():
    """Test units of 2..10 items, 10 of each length; in the j-th unit of every length the
    noise item is scored k_j = 2 + j times each other item. The 90th percentile of the
    pooled contrast falls between log 5 and log 6: the units with k >= 6 (j >= 4), 6 of each
    length, get one change each: the changes spread over lengths as the units (and the
    noise) do. On the within-unit probability, k/(k + n - 1), the same percentile (0.503)
    takes the units with k >= n: 12 - n of the n-item units, 10 of the 2-item ones and 2 of
    the 10-item ones, so the 7-10 bin, 44% of the units and of the noise, gets 26% of the
    changes."""
    lengths, per = range(2, 11), 10
    shape = [(n, j) for n in lengths for j in range(per)]
    units = pd.DataFrame({"unit": np.arange(len(shape)), "user": np.arange(len(shape)), "split": "test",
                          "window": np.arange(len(shape)), "positions": [list(range(n)) for n, _ in shape],
                          "items": [list(range(1, n + 1)) for n, _ in shape],
                          "noise": [[1] + [0] * (n - 1) for n, _ in shape]})
    logp = [np.log([2.0 + j] + [1.0] * (n - 1)) for n, j in shape]
    items = item_table(units, scores_frame(units, logp))
    caps = {"train": 2, "test": 1}
    threshold = {"kind": "percentile", "scale": "contrast", "train": 60, "test": 90}
    assert split_thresholds(items, threshold)["test"] == pytest.approx(np.log(5) + 0.1 * np.log(6 / 5))
    chosen = correct.select(items, threshold, caps)
    assert (chosen["noise"] == 1).all() and chosen["unit"].map(lambda u: shape[u][1]).ge(4).all()
    table = correct.spread(units, chosen.rename(columns={"noise": "was_noise"})).set_index("length")
    assert table["changes"].tolist() == [12, 18, 24]  # 6 per length
    assert table["changes_share"].to_numpy() == pytest.approx([20 / 90, 30 / 90, 40 / 90])
    assert table["changes_share"].to_numpy() == pytest.approx(table["noise_share"].to_numpy())
    assert (table["precision"] == 1.0).all()
    by_prob = correct.select(items, {**threshold, "scale": "unit_prob"}, caps)
    length = by_prob["unit"].map(lambda u: shape[u][0])
    assert length.value_counts().sort_index().to_dict() == {n: 12 - n for n in lengths}
    table = correct.spread(units, by_prob.rename(columns={"noise": "was_noise"})).set_index("length")
    assert table["changes"].tolist() == [19, 21, 14] and table.at["7-10", "noise_share"] == pytest.approx(40 / 90)


def test_spread_counts_a_hand_made_case():
    """Valid: units of 2, 5 and 8 items holding 1, 0 and 2 noise items; 2 changes in the
    2-item unit (one hit) and 1 in the 8-item unit (a miss). Train: one 3-item unit, no
    change. A denoiser's per-window change (unit -1) is left out."""
    units = pd.DataFrame({"unit": [0, 1, 2, 3], "split": ["valid", "valid", "valid", "train"],
                          "items": [[1, 2], [1, 2, 3, 4, 5], list(range(1, 9)), [1, 2, 3]],
                          "noise": [[1, 0], [0] * 5, [1, 1] + [0] * 6, [0, 0, 1]]})
    changes = pd.DataFrame({"unit": [0, 0, 2, -1], "was_noise": [1, 0, 0, 1]})
    t = correct.spread(units, changes)
    assert t["split"].tolist() == ["train"] * 3 + ["valid"] * 3
    assert t["length"].astype(str).tolist() == ["2-3", "4-6", "7-8"] * 2
    v = t[t["split"] == "valid"].set_index("length")
    assert v["units"].tolist() == [1, 1, 1] and v["items"].tolist() == [2, 5, 8] and v["noise"].tolist() == [1, 0, 2]
    assert v["changes"].tolist() == [2, 0, 1]
    assert v["items_share"].to_numpy() == pytest.approx([2 / 15, 5 / 15, 8 / 15])
    assert v["noise_share"].to_numpy() == pytest.approx([1 / 3, 0, 2 / 3])
    assert v["changes_share"].to_numpy() == pytest.approx([2 / 3, 0, 1 / 3])
    assert v["precision"].to_numpy() == pytest.approx([0.5, np.nan, 0.0], nan_ok=True)
    train = t[t["split"] == "train"]
    assert train["changes"].sum() == 0 and train["changes_share"].isna().all()
    with pytest.raises(Llm4dsrError, match="changes.parquet: unit 9 is not in units.parquet"):
        correct.spread(units, pd.DataFrame({"unit": [9], "was_noise": [0]}))
