"""Paired model comparison: the corrected repeated-CV t-test, the Bayesian correlated t-test and DeLong's
test, against independent implementations and against their error rates on simulated null comparisons."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import RepeatedStratifiedKFold

from src.evaluation.comparison import (
    bayesian_correlated_ttest,
    corrected_ttest,
    delong_test,
    holm,
    paired_bootstrap,
)


def _delong_pairwise(y, a, b):
    """DeLong et al. (1988) written out from its definition: placement values by explicit pairwise
    comparison (psi = 1 if the positive scores higher, 1/2 on ties), their covariance, the z statistic."""
    y = np.asarray(y)

    def components(s):
        pos, neg = s[y == 1], s[y == 0]
        psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
        return psi.mean(axis=1), psi.mean(axis=0), psi.mean()

    v10a, v01a, auc_a = components(np.asarray(a, float))
    v10b, v01b, auc_b = components(np.asarray(b, float))
    m, n = len(v10a), len(v01a)
    var = (np.var(v10a, ddof=1) + np.var(v10b, ddof=1) - 2 * np.cov(v10a, v10b)[0, 1]) / m + (
        np.var(v01a, ddof=1) + np.var(v01b, ddof=1) - 2 * np.cov(v01a, v01b)[0, 1]
    ) / n
    z = (auc_b - auc_a) / np.sqrt(var)
    return auc_a, auc_b, np.sqrt(var), 2 * stats.norm.sf(abs(z))


def test_delong_equals_the_pairwise_definition_and_sklearn_auc():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 80)
    a = y + rng.normal(0, 1.2, 80)
    b = np.round(0.6 * a + y * 0.5 + rng.normal(0, 0.8, 80), 1)  # correlated with a, with ties
    result = delong_test(y, a, b)
    auc_a, auc_b, se, p = _delong_pairwise(y, a, b)
    assert result.auc_a == pytest.approx(roc_auc_score(y, a)) and result.auc_b == pytest.approx(
        roc_auc_score(y, b)
    )
    assert (result.auc_a, result.auc_b) == pytest.approx((auc_a, auc_b))
    assert result.se == pytest.approx(se, rel=1e-10) and result.p_value == pytest.approx(p, rel=1e-10)


@pytest.mark.slow
def test_delong_agrees_with_a_paired_bootstrap():
    """The paired bootstrap of the AUC difference (subjects resampled within class, both models together)
    gives DeLong's standard error within 10 % and a two-sided p within 0.02."""
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(60, int), np.zeros(60, int)]
    shared = rng.normal(0, 1, 120)
    a = 0.9 * y + shared + rng.normal(0, 0.7, 120)
    b = 1.3 * y + shared + rng.normal(0, 0.7, 120)
    result = delong_test(y, a, b)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    diffs = []
    for _ in range(4000):
        rows = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        diffs.append(roc_auc_score(y[rows], b[rows]) - roc_auc_score(y[rows], a[rows]))
    boot_se = np.std(diffs, ddof=1)
    assert result.se == pytest.approx(boot_se, rel=0.1)
    boot_p = 2 * stats.norm.sf(abs(result.difference) / boot_se)
    assert abs(result.p_value - boot_p) < 0.02


def test_the_corrected_ttest_is_the_bayesian_posterior_at_rope_zero():
    """Two independent codes, one model: with a flat prior the correlated t-test's posterior P(A better) is
    the corrected t-test's one-sided p (baycomp's posterior vs scipy's t distribution here)."""
    rng = np.random.default_rng(2)
    a = rng.normal(0.70, 0.06, 50)
    b = a + 0.01 + rng.normal(0, 0.04, 50)
    test = corrected_ttest(b - a, test_fraction=1 / (10 - 1))
    bayes = bayesian_correlated_ttest(a, b, repeats=5, rope=0.0)
    assert bayes.p_a_better == pytest.approx(stats.t.sf(test.t, test.df), rel=1e-9)
    assert bayes.p_a_better == pytest.approx(test.p_value / 2, rel=1e-9)  # t > 0 here
    assert bayes.p_equivalent == pytest.approx(0.0, abs=1e-12)
    wide = bayesian_correlated_ttest(a, b, repeats=5, rope=0.05)
    assert wide.p_equivalent > 0.9  # a 1-point mean difference is inside a 5-point ROPE


def _null_comparison(seed: int, gain: float = 0.0) -> tuple[float, float]:
    """A fresh sample where two classifiers see different but equally informative features: their true
    performances are equal (``gain``: B's features carry that much more signal). Returns the corrected and
    the naive (uncorrected) t-test's p over 10 x 10 folds. Nearest-centroid classifiers: the comparison, not
    the classifier, is under test, and 40 x 100 x 2 fits must stay cheap."""
    rng = np.random.default_rng(seed)
    n = 120
    y = rng.permutation(np.r_[np.ones(n // 2, int), np.zeros(n // 2, int)])
    effect = np.r_[np.full(5, 0.35), np.full(5, 0.35 + gain)]
    X = rng.normal(size=(n, 10)) + effect * (y[:, None] - 0.5) * 2
    splits = RepeatedStratifiedKFold(n_splits=10, n_repeats=10, random_state=seed)

    def bac(columns: slice, train: np.ndarray, test: np.ndarray) -> float:  # nearest centroid, in numpy
        centroids = np.stack([X[train][y[train] == c][:, columns].mean(axis=0) for c in (0, 1)])
        distance = ((X[test][:, None, columns] - centroids[None]) ** 2).sum(axis=2)
        predicted = distance.argmin(axis=1)
        return np.mean([np.mean(predicted[y[test] == c] == c) for c in (0, 1)])

    diffs = []
    for train, test in splits.split(X, y):
        diffs.append(bac(slice(5, None), train, test) - bac(slice(0, 5), train, test))
    diffs = np.asarray(diffs)
    corrected = corrected_ttest(diffs, test_fraction=1 / 9).p_value
    naive = float(stats.ttest_1samp(diffs, 0.0).pvalue)
    return corrected, naive


@pytest.mark.slow
def test_the_correction_keeps_the_false_positive_rate_near_its_level():
    """100 null comparisons (equal true performance): the corrected test rejects at 5 % about as often as
    it should; the naive t-test on the same 100 folds (overlapping folds taken as independent) far more."""
    results = np.array([_null_comparison(seed) for seed in range(100)])
    corrected_rate, naive_rate = (results < 0.05).mean(axis=0)
    assert corrected_rate <= 0.10  # 5 % level: the binomial 99th percentile of 100 draws at p = 0.05 is 10
    assert naive_rate >= 2 * max(corrected_rate, 0.05)


def test_the_corrected_test_detects_a_planted_gain():
    """The other side of the correction: when B's features carry clearly more signal (a planted gain of
    ~15 BAC points), the corrected test still finds it in most samples."""
    results = np.array([_null_comparison(seed, gain=0.45)[0] for seed in range(20)])
    assert (results < 0.05).mean() >= 0.8


def test_paired_bootstrap_equals_sklearn_and_dcurves_and_a_loop_over_the_same_resamples():
    from dcurves import dca
    from sklearn.metrics import balanced_accuracy_score

    rng = np.random.default_rng(3)
    y = rng.permutation(np.r_[np.ones(30, int), np.zeros(25, int)])
    da, db = y + rng.normal(0, 1.2, 55) - 0.5, y + rng.normal(0, 0.9, 55) - 0.5
    pa, pb = 1 / (1 + np.exp(-2 * da)), 1 / (1 + np.exp(-2 * db))
    thresholds = np.linspace(0.1, 0.9, 9)
    boot = paired_bootstrap(y, da, db, pa, pb, 300, seed=5, thresholds=thresholds)
    assert boot.bac_a == pytest.approx(balanced_accuracy_score(y, da > 0))
    assert boot.bac_b == pytest.approx(balanced_accuracy_score(y, db > 0))
    frame = pd.DataFrame({"response": y, "a": pa, "b": pb})
    curves = dca(data=frame, outcome="response", modelnames=["a", "b"], thresholds=thresholds)
    net = curves.pivot(index="threshold", columns="model", values="net_benefit")
    np.testing.assert_allclose(boot.net_benefit_a, net["a"], atol=1e-12)
    np.testing.assert_allclose(boot.net_benefit_b, net["b"], atol=1e-12)
    np.testing.assert_allclose(boot.net_benefit_treat_all, net["all"], atol=1e-12)
    # the interval: sklearn on each of the same stratified resamples, one by one
    again = np.random.default_rng(5)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    rows = np.hstack([again.choice(pos, (300, len(pos))), again.choice(neg, (300, len(neg)))])
    diffs = [
        balanced_accuracy_score(y[r], db[r] > 0) - balanced_accuracy_score(y[r], da[r] > 0) for r in rows
    ]
    assert boot.bac_ci95 == pytest.approx([np.percentile(diffs, 2.5), np.percentile(diffs, 97.5)])


def test_holm_adjusts_in_the_given_order():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
