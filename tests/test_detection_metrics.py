"""Detection metrics on a hand-computed example; one metric code for every detector;
the combined scorer is calibrated."""
import numpy as np
import pandas as pd
import pytest

from denoise_synth import make_log
from llm4dsr import combine
from llm4dsr.detectors import make_detector
from llm4dsr.metrics import detection_metrics, detection_report
from llm4dsr.scores import scores_frame
from llm4dsr.units import item_table, make_units

BOOT = {"resamples": 200, "level": 0.95}  # config intervals (fewer replicates: tests)

# three test units; probs and noise by hand
PROBS = [[0.7, 0.2, 0.1], [0.6, 0.4], [0.5, 0.3, 0.2]]
NOISE = [[1, 0, 0], [0, 1], [0, 0, 0]]


def hand_units(split="test"):
    return pd.DataFrame({"unit": [0, 1, 2], "user": [0, 1, 2], "split": split, "window": [5, 6, 7],
                         "positions": [list(range(len(p))) for p in PROBS], "items": [[1, 2, 3], [4, 5], [6, 7, 8]],
                         "noise": NOISE})


def hand_scores():
    return pd.DataFrame({"unit": [0, 1, 2], "probs": PROBS, "logp": [list(np.log(p)) for p in PROBS]})


def test_hand_computed_example():
    report = detection_report(hand_units(), {"llm_full_title": hand_scores()},
                              {"kind": "probability", "scale": "unit_prob", "train": 0.5, "test": 0.45}, BOOT, 0)
    m = report["llm_full_title"]["test"]
    # noise at 0.7 and 0.4; clean 0.2 0.1 0.6 0.5 0.3 0.2: 0.7 beats 6, 0.4 beats 4 -> 10/12
    assert m["roc_auc"] == pytest.approx(10 / 12)
    # ranked 0.7(n) 0.6 0.5 0.4(n): precision 1/1 and 2/4 at the two noise items
    assert m["pr_auc"] == pytest.approx((1 + 2 / 4) / 2)
    assert m["top1"] == 0.5 and m["top1_units"] == 2  # unit 2 holds no noise
    # within units: unit 0 ranks its noise item first (1.0), unit 1 last (0.0); unit 2 has no noise
    assert m["roc_auc_within"] == 0.5 and m["roc_auc_within_units"] == 2
    assert (m["flagged"], m["precision"], m["recall"]) == (3, pytest.approx(1 / 3), 0.5)  # > 0.45: .7 .6 .5
    assert m["units"] == 3 and m["items"] == 8 and m["noise_items"] == 2 and m["units_unscored"] == 0
    bins = {b["lo"]: b for b in m["calibration"]}
    assert bins[0.7]["count"] == 1 and bins[0.7]["noise_rate"] == 1.0
    assert bins[0.2]["count"] == 2 and bins[0.2]["noise_rate"] == 0.0
    assert sum(b["count"] for b in m["calibration"]) == 8 and bins[0.8]["mean_prob"] is None
    assert report["llm_full_title"]["train"]["units"] == 0 and report["llm_full_title"]["train"]["roc_auc"] is None


def test_percentile_threshold_ties_and_missing_units():
    # median of the 8 probabilities is 0.35: flagged .7 .6 .5 .4, both noise items among them
    m = detection_report(hand_units(), {"x": hand_scores()}, {"kind": "percentile", "scale": "unit_prob", "train": 60, "test": 50}, BOOT, 0)["x"]["test"]
    assert m["threshold"] == pytest.approx(0.35) and (m["precision"], m["recall"]) == (0.5, 1.0)
    tied = hand_scores()
    tied.at[0, "probs"] = [0.4, 0.4, 0.2]  # a tie between the noise item and a clean one: half credit
    assert detection_report(hand_units(), {"x": tied}, {"kind": "percentile", "scale": "unit_prob", "train": 60, "test": 50}, BOOT, 0)["x"]["test"]["top1"] == 0.25
    m = detection_report(hand_units(), {"x": hand_scores().head(2)}, {"kind": "percentile", "scale": "unit_prob", "train": 60, "test": 50}, BOOT, 0)
    assert m["x"]["test"]["units_unscored"] == 1


def test_every_detector_goes_through_the_same_code():
    seq, win = make_log(n_users=10, length=12, rate=0.2)
    units = make_units(seq, win, "history", 10)
    tables = {name: scores_frame(units, make_detector(name).fit(seq, 40).score(units))
              for name in ("popularity", "cooccurrence")}
    tables["llm_full_title"] = tables["llm_first_token"] = tables["popularity"]  # an LLM table is just a table
    report = detection_report(units, tables, {"kind": "percentile", "scale": "unit_prob", "train": 60, "test": 90}, BOOT, 0)
    assert report["llm_full_title"] == report["popularity"] == report["llm_first_token"]
    assert set(report) == {*tables, "paired"}
    items = item_table(units, tables["cooccurrence"])
    train = items[items["split"] == "train"]
    expected = detection_metrics(train, float(np.percentile(train["prob"], 60)))
    got = report["cooccurrence"]["train"]
    intervals = {k: got[k] for k in ("roc_auc_ci", "pr_auc_ci", "top1_ci", "roc_auc_within_ci")}
    assert got == {**expected, **intervals, "units_unscored": got["units_unscored"], "users": 10}
    assert all(lo <= got[m] <= hi for m, (lo, hi) in ((k[:-3], v) for k, v in intervals.items()))
    # identical tables: every paired difference is 0 with the interval [0, 0]
    same = report["paired"]["llm_full_title - popularity"]["train"]
    assert all(same[m] == {"diff": 0.0, "ci": [0.0, 0.0]} for m in ("roc_auc", "pr_auc", "top1", "roc_auc_within"))
    assert report["paired"]["llm_full_title - cooccurrence"]["train"]["roc_auc"]["diff"] == pytest.approx(
        report["popularity"]["train"]["roc_auc"] - got["roc_auc"])


def synthetic_selfsup(n_units, seed, length=10):
    """One noise item per unit; two detectors whose log-scores are noisy hints of it."""
    rng = np.random.default_rng(seed)
    noise = np.zeros((n_units, length), dtype=int)
    noise[np.arange(n_units), rng.integers(length, size=n_units)] = 1
    units = pd.DataFrame({"unit": np.arange(n_units), "user": 0, "split": "train", "window": -1,
                          "positions": [list(range(length))] * n_units, "items": [list(range(1, length + 1))] * n_units,
                          "noise": [list(r) for r in noise]})
    scores = {}
    for name, signal in (("llm_full_title", 1.5), ("popularity", 1.0)):
        logp = signal * noise + rng.normal(size=noise.shape)
        scores[name] = scores_frame(units, list(logp))
    return units, scores


def test_combined_scorer_is_calibrated():
    train_units, train_scores = synthetic_selfsup(400, seed=0)
    model = combine.fit(combine.features(train_units, train_scores))
    units, scores = synthetic_selfsup(1500, seed=1)
    out = combine.predict(model, units, scores)
    assert list(out.columns) == ["unit", "probs", "logp"] and len(out) == 1500
    report = detection_report(units, {**scores, "combined": out}, {"kind": "probability", "scale": "unit_prob", "train": 0.5, "test": 0.5}, BOOT, 0)
    m = report["combined"]["train"]
    assert m["ece"] < 0.02
    for b in m["calibration"]:
        if b["count"] >= 300:
            assert abs(b["mean_prob"] - b["noise_rate"]) < 0.05, b
    assert m["roc_auc"] > max(report[n]["train"]["roc_auc"] for n in scores)


def test_combined_scorer_never_reads_the_evaluated_units_labels(tmp_path):
    """Guard (issue 28): the combination is fitted on the self-supervised held-out units
    only. Flipping the evaluated units' true noise labels must not change one score;
    changing the self-supervised labels must."""
    from llm4dsr.io import write_parquet

    def files(tag, units, scores):
        write_parquet(units, tmp_path / f"{tag}_units.parquet")
        paths = [tmp_path / f"{tag}_{n}.parquet" for n in sorted(scores)]
        for p, n in zip(paths, sorted(scores)):
            write_parquet(scores[n], p)
        return tmp_path / f"{tag}_units.parquet", paths

    def combined(selfsup, evaluated):
        s_units, s_paths = files("selfsup", *selfsup)
        e_units, e_paths = files("eval", *evaluated)
        out = combine.run(sorted(evaluated[1]), e_units, s_units, e_paths, s_paths, 0, tmp_path / "combined.parquet")
        return np.concatenate(out.sort_values("unit")["probs"].map(np.asarray).to_list())

    selfsup = synthetic_selfsup(300, seed=0)
    units, scores = synthetic_selfsup(300, seed=1)
    units = units.assign(split="test")
    flipped = units.assign(noise=[[1 - x for x in n] for n in units["noise"]])  # every label wrong
    base = combined(selfsup, (units, scores))
    assert np.array_equal(base, combined(selfsup, (flipped, scores)))
    s_units, s_scores = selfsup
    s_flipped = s_units.assign(noise=[[1 - x for x in n] for n in s_units["noise"]])
    assert not np.allclose(base, combined((s_flipped, s_scores), (units, scores)))  # the fit reads selfsup


# within-unit ROC-AUC (issue 26): known answers

def units_of(lengths, noise_at, users=None, split="test"):
    """Units of the given lengths, noise at the given indices of each unit."""
    noise = [[int(i in at) for i in range(n)] for n, at in zip(lengths, noise_at)]
    return pd.DataFrame({"unit": range(len(lengths)), "user": users if users is not None else range(len(lengths)),
                         "split": split, "window": range(len(lengths)), "positions": [list(range(n)) for n in lengths],
                         "items": [list(range(1, n + 1)) for n in lengths], "noise": noise})


def report_of(units, probs, boot=BOOT):
    table = pd.DataFrame({"unit": units["unit"], "probs": probs, "logp": [list(np.log(p)) for p in probs]})
    return detection_report(units, {"x": table}, {"kind": "percentile", "scale": "unit_prob", "train": 60, "test": 90},
                            boot, 0)["x"]["test"]


def test_perfect_within_every_unit_scores_1_whatever_the_lengths():
    """A detector that ranks noise above clean inside each history scores 1.0 within units,
    on histories of 2 to 10 items, although its pooled ROC-AUC is well below 1: a noise
    item of a long history has a lower probability than a clean item of a short one."""
    lengths = [2, 3, 5, 7, 10] * 4
    noise_at = [[0], [1], [2, 4], [0], [9]] * 4
    units = units_of(lengths, noise_at)
    probs = []
    for n, at in zip(lengths, noise_at):
        p = np.array([1.0 if i in at else 0.5 for i in range(n)])
        probs.append(list(p / p.sum()))  # normalised over the unit, as the LLM's softmax
    m = report_of(units, probs)
    assert m["roc_auc_within"] == 1.0 and m["roc_auc_within_ci"] == [1.0, 1.0] and m["roc_auc_within_units"] == 20
    assert m["roc_auc"] < 0.95  # pooled: 0.944 here


def test_a_score_of_history_length_alone_is_chance_within_units_not_pooled():
    """The within-unit softmax of an uninformed model, 1/n, says only how long the history
    is. With noise in every history, short histories hold a larger share of noise, so the
    pooled ROC-AUC of 1/n is far from chance (0.70 by hand: 2-item and 10-item histories,
    one noise item each); within units every item ties, 0.5 exactly."""
    lengths = [2, 10] * 15
    units = units_of(lengths, [[1], [3]] * 15)
    probs = [[1 / n] * n for n in lengths]
    m = report_of(units, probs)
    # noise: 15 at 1/2, 15 at 1/10; clean: 15 at 1/2, 135 at 1/10
    # P(noise > clean) = 15*135 / (30*150) = 0.45, ties (15*15 + 15*135) / 4500 = 0.5 -> 0.45 + 0.25
    assert m["roc_auc"] == pytest.approx(0.70)
    assert m["roc_auc_within"] == 0.5 and m["roc_auc_within_ci"] == [0.5, 0.5]


def test_within_interval_resamples_users_not_units():
    """Two users: user 0 has 9 histories where the detector is perfect, user 1 one history
    where it is wrong. Resampling the 2 users gives replicates 1.0, 0.9 or 0.0 (user 1 drawn
    twice: a quarter of the replicates), so the 95% interval is [0, 1]. Resampling the 10
    units would almost never draw the wrong one ten times, and would give about [0.7, 1]."""
    units = units_of([3] * 10, [[0]] * 10, users=[0] * 9 + [1])
    probs = [[0.6, 0.3, 0.1]] * 9 + [[0.1, 0.3, 0.6]]
    m = report_of(units, probs, {"resamples": 400, "level": 0.95})
    assert m["roc_auc_within"] == pytest.approx(0.9) and m["users"] == 2
    assert m["roc_auc_within_ci"] == [0.0, 1.0]


def test_paired_within_difference_and_its_interval():
    """A - B within units is the mean over units of the difference of their ROC-AUCs; the
    interval reuses the same resampled users for both."""
    lengths = [2, 4, 6, 8] * 5
    units = units_of(lengths, [[0]] * 20)
    good = [[0.9] + [0.1 / (n - 1)] * (n - 1) for n in lengths]  # noise first: 1.0
    bad = [[0.01] + [0.99 / (n - 1)] * (n - 1) for n in lengths]  # noise last: 0.0
    table = {name: pd.DataFrame({"unit": units["unit"], "probs": p, "logp": [list(np.log(x)) for x in p]})
             for name, p in (("llm_trie", good), ("popularity", bad))}
    report = detection_report(units, table, {"kind": "percentile", "scale": "unit_prob", "train": 60, "test": 90},
                              BOOT, 0)
    d = report["paired"]["llm_trie - popularity"]["test"]["roc_auc_within"]
    assert d == {"diff": 1.0, "ci": [1.0, 1.0]}
