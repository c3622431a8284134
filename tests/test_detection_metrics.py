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
    intervals = {k: got[k] for k in ("roc_auc_ci", "pr_auc_ci", "top1_ci")}
    assert got == {**expected, **intervals, "units_unscored": got["units_unscored"], "users": 10}
    assert all(lo <= got[m] <= hi for m, (lo, hi) in ((k[:-3], v) for k, v in intervals.items()))
    # identical tables: every paired difference is 0 with the interval [0, 0]
    same = report["paired"]["llm_full_title - popularity"]["train"]
    assert all(same[m] == {"diff": 0.0, "ci": [0.0, 0.0]} for m in ("roc_auc", "pr_auc", "top1"))
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
