"""Treatment specificity: does the model's score predict response better under ketamine than saline?

Two complementary answers:

* a permutation test of the AUC difference (ketamine - saline) — :func:`scipy.stats.permutation_test`
  with ``permutation_type="independent"``: treatment labels are shuffled between the pooled patients, each
  keeping its score and its response, so the null is "the score-response relation is the same under both
  treatments";
* a logistic model of response on score, treatment and score x treatment (statsmodels ``Logit``, with Wald
  CIs), and a likelihood-ratio test of the interaction.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import chi2, permutation_test

from src.evaluation.statistics import bac_auc_for_labels


def _auc(y: np.ndarray, scores: np.ndarray) -> float:
    return float(bac_auc_for_labels(y, scores)[1][0])


def auc_difference_test(
    y_a: np.ndarray,
    scores_a: np.ndarray,
    y_b: np.ndarray,
    scores_b: np.ndarray,
    n: int = 10000,
    seed: int = 0,
) -> dict[str, float]:
    """One-sided permutation test of AUC(a) - AUC(b) > 0 by shuffling group membership.

    Both groups must hold both classes. A permuted split that leaves a group with one class has no AUC
    difference: it counts as not exceeding the observed one (with >= 20 patients per group this is
    vanishingly rare).
    """
    y = np.r_[np.asarray(y_a, int), np.asarray(y_b, int)]
    s = np.r_[np.asarray(scores_a, float), np.asarray(scores_b, float)]
    for name, labels in (("first", y_a), ("second", y_b)):
        if len(np.unique(labels)) < 2:
            raise ValueError(f"the {name} group has only one class: its AUC is undefined")

    def difference(idx_a: np.ndarray, idx_b: np.ndarray) -> float:
        ya, yb = y[idx_a.astype(int)], y[idx_b.astype(int)]
        if ya.min() == ya.max() or yb.min() == yb.max():
            return -np.inf
        return _auc(ya, s[idx_a.astype(int)]) - _auc(yb, s[idx_b.astype(int)])

    n_a = len(y_a)
    result = permutation_test(
        (np.arange(n_a), np.arange(n_a, len(y))),
        difference,
        permutation_type="independent",
        n_resamples=n,
        alternative="greater",
        rng=np.random.default_rng(seed),
    )
    return {
        "auc_a": _auc(y_a, scores_a),
        "auc_b": _auc(y_b, scores_b),
        "difference": float(result.statistic),
        "p_value": float(result.pvalue),
        "n_permutations": int(n),
    }


def interaction_test(y: np.ndarray, scores: np.ndarray, ketamine: np.ndarray) -> dict[str, float]:
    """Likelihood-ratio test of score x treatment in
    ``logit P(response) ~ score + ketamine + score:ketamine`` (score standardised: effects per SD)."""
    # lazy: statsmodels 0.36 s (benchmarks/import_time.py), only for the interaction test
    import statsmodels.api as sm

    y = np.asarray(y, int)
    s = (np.asarray(scores, float) - np.mean(scores)) / np.std(scores)
    k = np.asarray(ketamine, float)
    full = sm.Logit(y, sm.add_constant(np.column_stack([s, k, s * k]))).fit(disp=0)
    reduced = sm.Logit(y, sm.add_constant(np.column_stack([s, k]))).fit(disp=0)
    stat = max(2 * (full.llf - reduced.llf), 0.0)
    low, high = full.conf_int()[3]
    return {
        "interaction_log_odds_per_sd": float(full.params[3]),
        "interaction_ci95": (float(low), float(high)),
        "score_log_odds_per_sd_saline": float(full.params[1]),
        "lr_statistic": float(stat),
        "p_value": float(chi2.sf(stat, df=1)),
    }
