"""Paired comparison of two models: does B predict better than A, beyond resampling noise?

* Discovery (the same repeated CV splits for both models): the **corrected repeated-CV t-test** on the
  outer-fold differences (Nadeau & Bengio 2003, with Bouckaert & Frank's 2004 use over repeats: the variance
  of the mean difference is inflated by ``n_test / n_train`` because the folds' training sets overlap) and
  the **Bayesian correlated t-test** with a region of practical equivalence (Corani & Benavoli 2015;
  ``baycomp``).
* An independent cohort scored by both locked models: the paired **DeLong** test of the AUC difference
  (DeLong et al. 1988, in Sun & Xu's 2014 fast form), and a paired bootstrap interval of any difference.
* Several pairs: Holm's correction (``statsmodels``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.stats import rankdata


@dataclass(frozen=True)
class CorrectedTTest:
    """The corrected repeated-CV t-test of the mean fold difference (B - A).

    Attributes
    ----------
    mean, se : float
        Mean of the ``repeats * folds`` differences and its corrected standard error.
    t : float
    df : int
        ``repeats * folds - 1``.
    p_value : float
        Two-sided.
    """

    mean: float
    se: float
    t: float
    df: int
    p_value: float


def corrected_ttest(differences: np.ndarray, test_fraction: float) -> CorrectedTTest:
    """Nadeau & Bengio's corrected resampled t-test over all outer folds of all repeats.

    Parameters
    ----------
    differences : ndarray of shape (repeats * folds,)
        Per outer fold, metric of B minus metric of A on the same test rows.
    test_fraction : float
        ``n_test / n_train`` of a fold (``1 / (folds - 1)`` for k-fold CV).

    Returns
    -------
    CorrectedTTest
        ``se = sqrt((1 / n + test_fraction) * var(d))``: the naive ``1 / n`` alone treats the overlapping
        folds as independent and is far too small (its false-positive rate is shown in the README).
    """
    d = np.asarray(differences, float)
    n = len(d)
    if n < 2:
        raise ValueError("the corrected t-test needs at least two folds")
    var = np.var(d, ddof=1)
    se = float(np.sqrt((1.0 / n + test_fraction) * var))
    mean = float(d.mean())
    if se == 0:
        t = 0.0 if mean == 0 else float(np.sign(mean) * np.inf)
    else:
        t = mean / se
    p = float(2 * stats.t.sf(abs(t), df=n - 1))
    return CorrectedTTest(mean=mean, se=se, t=float(t), df=n - 1, p_value=p)


@dataclass(frozen=True)
class BayesianComparison:
    """Posterior probabilities that A is better, that they are practically equivalent, that B is better."""

    p_a_better: float
    p_equivalent: float
    p_b_better: float
    rope: float


def bayesian_correlated_ttest(
    scores_a: np.ndarray, scores_b: np.ndarray, repeats: int, rope: float
) -> BayesianComparison:
    """The Bayesian correlated t-test (``baycomp.CorrelatedTTest``) on paired outer-fold scores.

    Parameters
    ----------
    scores_a, scores_b : ndarray of shape (repeats * folds,)
        Each model's metric per outer fold, the same folds in the same order.
    repeats : int
        CV repeats (the folds per repeat give the correlation ``rho = 1 / folds``).
    rope : float
        Half-width of the region of practical equivalence, in the metric's units (e.g. 0.01 BAC).

    Returns
    -------
    BayesianComparison
    """
    # lazy: only a comparison needs baycomp
    from baycomp import CorrelatedTTest

    probabilities = CorrelatedTTest.probs(
        np.asarray(scores_a, float), np.asarray(scores_b, float), rope=rope, runs=repeats
    )
    # baycomp returns (P(A better), P(B better)) without a ROPE, the three probabilities with one
    left, equivalent, right = probabilities if rope > 0 else (probabilities[0], 0.0, probabilities[1])
    return BayesianComparison(float(left), float(equivalent), float(right), rope)


@dataclass(frozen=True)
class DeLongTest:
    """Paired DeLong test of AUC(B) - AUC(A) on one cohort."""

    auc_a: float
    auc_b: float
    difference: float
    se: float
    z: float
    p_value: float


def _placements(positive: np.ndarray, negative: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """DeLong's structural components via midranks (Sun & Xu 2014): V10 per positive, V01 per negative."""
    m, n = len(positive), len(negative)
    both = np.concatenate([positive, negative])
    rank_all = rankdata(both)
    rank_pos, rank_neg = rankdata(positive), rankdata(negative)
    auc = (rank_all[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (rank_all[:m] - rank_pos) / n
    v01 = 1.0 - (rank_all[m:] - rank_neg) / m
    return v10, v01, float(auc)


def delong_test(y: np.ndarray, scores_a: np.ndarray, scores_b: np.ndarray) -> DeLongTest:
    """DeLong's test of two correlated AUCs (the same subjects scored by two models).

    No kept Python library implements it (scikit-learn and scipy have the AUC but not its paired variance),
    hence these lines: the midrank form of Sun & Xu (2014), checked in tests/test_comparison.py against a
    direct pairwise implementation of DeLong's placement values and against a paired bootstrap.

    Parameters
    ----------
    y : array of {0, 1}
        Labels of the cohort's subjects.
    scores_a, scores_b : array
        Decision scores of the two models (any monotone scale).

    Returns
    -------
    DeLongTest
    """
    y = np.asarray(y).astype(int)
    a, b = np.asarray(scores_a, float), np.asarray(scores_b, float)
    if len(np.unique(y)) < 2:
        raise ValueError("DeLong's test needs both classes")
    positive, negative = y == 1, y == 0
    v10_a, v01_a, auc_a = _placements(a[positive], a[negative])
    v10_b, v01_b, auc_b = _placements(b[positive], b[negative])
    s10 = np.cov(np.vstack([v10_a, v10_b]))
    s01 = np.cov(np.vstack([v01_a, v01_b]))
    cov = s10 / positive.sum() + s01 / negative.sum()
    var = cov[0, 0] + cov[1, 1] - 2 * cov[0, 1]
    difference = auc_b - auc_a
    se = float(np.sqrt(max(var, 0.0)))
    z = difference / se if se > 0 else (0.0 if difference == 0 else float(np.sign(difference) * np.inf))
    return DeLongTest(auc_a, auc_b, difference, se, float(z), float(2 * stats.norm.sf(abs(z))))


def holm(p_values: list[float]) -> list[float]:
    """Holm-adjusted p-values (``statsmodels.stats.multitest.multipletests``), in the given order."""
    # lazy: statsmodels 0.36 s (benchmarks/import_time.py), only for comparisons of several pairs
    from statsmodels.stats.multitest import multipletests

    return [float(p) for p in multipletests(p_values, method="holm")[1]]


@dataclass(frozen=True)
class PairedBootstrap:
    """B - A on one cohort by a stratified paired bootstrap (subjects resampled within class, both models'
    scores of a subject together): the BAC difference and the net-benefit difference at each threshold.

    Attributes
    ----------
    bac_a, bac_b, bac_difference : float
        BAC of ``decision > 0`` of each model, and B - A.
    bac_ci95 : list of float
        The percentile interval of the bootstrapped differences.
    thresholds : list of float
        Decision thresholds on P(response).
    net_benefit_a, net_benefit_b, net_benefit_difference, net_benefit_ci_low, net_benefit_ci_high : list
        Net benefit (TP/n - FP/n * t / (1 - t)) of each model at each threshold, B - A, its 95 % interval.
    net_benefit_treat_all : list of float
        Treating everyone, for reference (treating no one is 0).
    """

    bac_a: float
    bac_b: float
    bac_difference: float
    bac_ci95: list[float]
    thresholds: list[float]
    net_benefit_a: list[float]
    net_benefit_b: list[float]
    net_benefit_difference: list[float]
    net_benefit_ci_low: list[float]
    net_benefit_ci_high: list[float]
    net_benefit_treat_all: list[float]


def _bac(y_rows: np.ndarray, positive: np.ndarray) -> np.ndarray:
    """BAC of each row of ``positive`` (resamples x subjects, predicted 1) against ``y_rows``."""
    pos = y_rows == 1
    sensitivity = (positive & pos).sum(axis=-1) / pos.sum(axis=-1)
    specificity = (~positive & ~pos).sum(axis=-1) / (~pos).sum(axis=-1)
    return (sensitivity + specificity) / 2


def _net_benefit(y_rows: np.ndarray, proba: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Net benefit of treating where ``proba >= t`` (resamples x thresholds)."""
    treat = proba[..., None] >= thresholds  # resamples x subjects x thresholds
    positive = (y_rows == 1)[..., None]
    n = y_rows.shape[-1]
    true_pos, false_pos = (treat & positive).sum(axis=-2) / n, (treat & ~positive).sum(axis=-2) / n
    return true_pos - false_pos * thresholds / (1 - thresholds)


def paired_bootstrap(
    y: np.ndarray,
    decision_a: np.ndarray,
    decision_b: np.ndarray,
    proba_a: np.ndarray,
    proba_b: np.ndarray,
    n_bootstrap: int,
    seed: int,
    thresholds: np.ndarray | None = None,
) -> PairedBootstrap:
    """B - A in BAC and in net benefit with stratified paired bootstrap intervals (:class:`PairedBootstrap`).

    Written with numpy over all resamples at once: scikit-learn's metric functions validate their inputs
    on every call (~16 ms each), which made 2000 resamples x pairs x cohorts take minutes. The point
    estimates equal ``balanced_accuracy_score`` and ``dcurves.dca`` (tests/test_comparison.py)."""
    y = np.asarray(y, dtype=int)
    thresholds = np.linspace(0.05, 0.95, 19) if thresholds is None else np.asarray(thresholds, float)
    arrays = [np.asarray(v, dtype=float) for v in (decision_a, decision_b, proba_a, proba_b)]
    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    rows = np.hstack([rng.choice(pos, (n_bootstrap, len(pos))), rng.choice(neg, (n_bootstrap, len(neg)))])
    da, db, pa, pb = arrays
    bac = [float(_bac(y, d > 0)) for d in (da, db)]
    boot_bac = _bac(y[rows], db[rows] > 0) - _bac(y[rows], da[rows] > 0)
    net = [_net_benefit(y, p, thresholds) for p in (pa, pb)]
    boot_net = _net_benefit(y[rows], pb[rows], thresholds) - _net_benefit(y[rows], pa[rows], thresholds)
    return PairedBootstrap(
        bac_a=bac[0],
        bac_b=bac[1],
        bac_difference=bac[1] - bac[0],
        bac_ci95=[float(np.percentile(boot_bac, 2.5)), float(np.percentile(boot_bac, 97.5))],
        thresholds=[float(t) for t in thresholds],
        net_benefit_a=net[0].tolist(),
        net_benefit_b=net[1].tolist(),
        net_benefit_difference=(net[1] - net[0]).tolist(),
        net_benefit_ci_low=np.percentile(boot_net, 2.5, axis=0).tolist(),
        net_benefit_ci_high=np.percentile(boot_net, 97.5, axis=0).tolist(),
        net_benefit_treat_all=_net_benefit(y, np.ones(len(y)), thresholds).tolist(),
    )
