"""Units: train units stay in the train period, no unit shows a valid/test target."""
import numpy as np
import pandas as pd
import pytest

from denoise_synth import make_log
from llm4dsr.io import Llm4dsrError
from llm4dsr.names import TRAIN_PERIOD
from llm4dsr.scores import scores_frame
from llm4dsr.units import check_units, item_table, make_units, self_supervised_units


@pytest.fixture(scope="module")
def log():
    return make_log(n_users=12, length=15, rate=0.2)


def held_targets(windows):
    held = windows[windows["split"] != "train"]
    return set(zip(held["user"], held["target_pos"]))


def test_history_blocks_cover_the_train_period_once(log):
    seq, win = log
    units = make_units(seq, win, "history", 4)
    train = units[units["split"] == "train"]
    assert (train["window"] == -1).all()
    assert train["items"].map(len).between(2, 4).all()
    covered = [(u, p) for u, ps in zip(train["user"], train["positions"]) for p in ps]
    period = seq[seq["split"].isin(TRAIN_PERIOD)]
    assert sorted(covered) == sorted(zip(period["user"], period["pos"]))
    assert not set(covered) & held_targets(win)
    items = item_table(train).merge(seq, on=["user", "pos"], suffixes=("", "_seq"))
    assert (items["item"] == items["item_seq"]).all() and (items["noise"] == items["noise_seq"]).all()
    check_units(units, win, seq)


def test_window_mode_and_eval_units_hide_targets(log):
    seq, win = log
    units = make_units(seq, win, "window", 10)
    train = units[units["split"] == "train"].merge(win, on="window")
    assert (train["items"].map(lambda x: x[-1]) == train["target"]).all()  # train windows whole
    held = units[units["split"] != "train"].merge(win, on="window", suffixes=("", "_w"))
    assert len(held) == ((win["split"] != "train") & (win["history"].map(len) >= 2)).sum()
    assert all(max(p) < tp for p, tp in zip(held["positions"], held["target_pos"]))
    assert (held["items"] == held["history"]).all()
    assert list(units["unit"]) == list(range(len(units)))
    check_units(units, win, seq)


@pytest.mark.parametrize("mode, block", [("window", 10), ("history", 4)])
def test_eval_units_carry_their_windows_noise_mask_position_by_position(log, mode, block):
    """Guard (issue 28): detection is scored against this mask; a shift by one position
    would score every detector against the wrong items."""
    seq, win = log
    held = make_units(seq, win, mode, block).query("split != 'train'").merge(win, on="window", suffixes=("", "_w"))
    assert len(held) and sum(map(sum, held["noise"])) > 0  # noisy items to misplace
    for noise, mask, items, positions, user in zip(held["noise"], held["history_noise"], held["items"],
                                                   held["positions"], held["user"]):
        assert list(noise) == list(mask)
        truth = seq.set_index(["user", "pos"]).loc[[(user, p) for p in positions]]
        assert list(truth["noise"]) == list(noise) and list(truth["item"]) == list(items)


def test_check_units_refuses_a_shown_target(log):
    seq, win = log
    units = make_units(seq, win, "history", 4)
    k = units.index[units["split"] == "test"][0]
    units.at[k, "positions"] = list(units.at[k, "positions"][1:]) + [int(win.set_index("window").at[units.at[k, "window"], "target_pos"])]
    with pytest.raises(Llm4dsrError, match="shows the target"):
        check_units(units, win, seq)
    train = make_units(seq, win, "history", 4)
    train.at[0, "positions"] = [0, int(seq[seq["split"] == "test"]["pos"].iloc[0])]
    train.at[0, "user"] = int(seq[seq["split"] == "test"]["user"].iloc[0])
    with pytest.raises(Llm4dsrError, match="outside the train period"):
        check_units(train, win, seq)


def test_self_supervised_units_replace_exactly_one_item(log):
    """One item of the observed history (noise included, as a user has it) is replaced."""
    _, win = log
    units = self_supervised_units(win, 40, 30, seed=3)
    assert len(units) == 30 and (units["noise"].map(sum) == 1).all()
    observed = units.merge(win[["window", "history"]], on="window")
    for items, noise, orig in zip(observed["items"], observed["noise"], observed["history"]):
        k = int(np.argmax(noise))
        assert items[k] not in list(orig)
        assert [i for j, i in enumerate(items) if j != k] == [i for j, i in enumerate(orig) if j != k]
    assert units.equals(self_supervised_units(win, 40, 30, seed=3))


def test_self_supervised_units_follow_popularity_when_asked(log):
    _, win = log
    counts = np.zeros(41)
    counts[31:] = 1.0  # only items 31..40 can be drawn
    units = self_supervised_units(win, 40, 30, seed=3, counts=counts)
    drawn = [items[int(np.argmax(noise))] for items, noise in zip(units["items"], units["noise"])]
    assert set(drawn) <= set(range(31, 41)) and len(set(drawn)) > 3
    one = win[(win["split"] == "train") & (win["history"].map(len) >= 2)].iloc[[0]]
    only = np.zeros(41)
    only[list(one["history"].iloc[0])] = 1.0  # nothing outside that history can be drawn
    with pytest.raises(Llm4dsrError, match="every item with a count is in the history"):
        self_supervised_units(one, 40, 1, seed=3, counts=only)


def test_item_table_rejects_malformed_scores(log):
    seq, win = log
    units = make_units(seq, win, "history", 4)
    scores = scores_frame(units, [np.zeros(len(i)) for i in units["items"]])
    assert len(item_table(units, scores)) == units["items"].map(len).sum()
    bad = scores.copy()
    bad.at[0, "probs"] = [1.0]
    with pytest.raises(Llm4dsrError, match="scores: unit 0 has 1 probs"):
        item_table(units, bad)
    with pytest.raises(Llm4dsrError, match="not in units"):
        item_table(units, pd.concat([scores, scores.assign(unit=10_000).head(1)]))
