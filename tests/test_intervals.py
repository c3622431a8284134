"""The user-level bootstrap: known answers, agreement with sklearn, coverage."""
import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import average_precision_score, roc_auc_score

from llm4dsr import intervals


def test_weighted_metrics_equal_sklearn_with_sample_weights():
    rng = np.random.default_rng(0)
    y = rng.random(300) < 0.2
    p = np.round(rng.random(300) + 0.3 * y, 2)  # rounded: many ties
    w = rng.integers(0, 4, size=(5, 300)).astype(float)
    for row in w:
        assert intervals.roc_auc(y, p, row)[0] == pytest.approx(roc_auc_score(y, p, sample_weight=row))
        assert intervals.average_precision(y, p, row)[0] == pytest.approx(
            average_precision_score(y, p, sample_weight=row))
    assert intervals.roc_auc(y, p, np.ones(300))[0] == pytest.approx(roc_auc_score(y, p))


def test_a_perfect_detector_has_the_interval_1_1():
    users = np.repeat(np.arange(30), 5)
    y = np.tile([1, 0, 0, 0, 0], 30)
    w = intervals.user_weights(users, 500, seed=1, tag="t")
    assert intervals.interval(intervals.roc_auc(y, y + 0.5, w), 0.95) == [1.0, 1.0]
    assert intervals.interval(intervals.average_precision(y, y + 0.5, w), 0.95) == [1.0, 1.0]


def test_resampling_by_user_keeps_a_users_rows_together():
    users = np.array([3, 3, 3, 7, 7, 9])
    w = intervals.user_weights(users, 200, seed=0, tag="t")
    assert w.shape == (200, 6)
    assert (w[:, 0] == w[:, 1]).all() and (w[:, 1] == w[:, 2]).all() and (w[:, 3] == w[:, 4]).all()
    assert (w[:, [0, 3, 5]].sum(axis=1) == 3).all()  # 3 users drawn per replicate
    assert np.array_equal(w, intervals.user_weights(users, 200, seed=0, tag="t"))  # seeded
    assert not np.array_equal(w, intervals.user_weights(users, 200, seed=1, tag="t"))


def test_the_95_percent_interval_covers_a_known_auc_about_95_percent_of_the_time():
    """Noise items score N(d, 1), clean ones N(0, 1): the true ROC-AUC is Phi(d / sqrt 2)."""
    d, truth = 1.0, norm.cdf(1.0 / np.sqrt(2))
    rng = np.random.default_rng(42)
    users = np.repeat(np.arange(100), 10)
    covered = []
    for rep in range(200):
        y = rng.random(len(users)) < 0.1
        p = rng.normal(size=len(users)) + d * y
        lo, hi = intervals.interval(intervals.roc_auc(y, p, intervals.user_weights(users, 400, rep, "cov")), 0.95)
        covered.append(lo <= truth <= hi)
    assert 0.89 <= np.mean(covered) <= 0.99, np.mean(covered)
