"""Treatment specificity: does the model's score predict response better under ketamine than saline?

No reference tool offers this test. Two complementary answers:

* a permutation test of the AUC difference (ketamine - saline): treatment labels are shuffled between the
  pooled patients, each keeping its score and its response, so the null is "the score-response relation
  is the same under both treatments";
* a logistic model of response on score, treatment and score x treatment, with a likelihood-ratio test of
  the interaction (scipy's chi-square; sklearn's unpenalised LogisticRegression for the fits).
"""

from __future__ import annotations

import numpy as np
from scipy.stats import chi2
from sklearn.linear_model import LogisticRegression

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
    """One-sided permutation test of AUC(a) - AUC(b) > 0 by shuffling group membership."""
    y = np.r_[np.asarray(y_a, int), np.asarray(y_b, int)]
    s = np.r_[np.asarray(scores_a, float), np.asarray(scores_b, float)]
    n_a = len(y_a)
    observed = _auc(y_a, scores_a) - _auc(y_b, scores_b)
    rng = np.random.default_rng(seed)
    null = np.empty(n)
    for i in range(n):  # each permutation needs both groups to hold both classes; cheap at these sizes
        idx = rng.permutation(len(y))
        ga, gb = idx[:n_a], idx[n_a:]
        if len(np.unique(y[ga])) < 2 or len(np.unique(y[gb])) < 2:
            null[i] = 0.0
            continue
        null[i] = _auc(y[ga], s[ga]) - _auc(y[gb], s[gb])
    return {
        "auc_a": _auc(y_a, scores_a),
        "auc_b": _auc(y_b, scores_b),
        "difference": observed,
        "p_value": float((1 + np.sum(null >= observed - 1e-12)) / (1 + n)),
        "n_permutations": int(n),
    }


def _loglik(X: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    model = LogisticRegression(C=np.inf, max_iter=1000).fit(X, y)
    p = np.clip(model.predict_proba(X)[:, 1], 1e-12, 1 - 1e-12)
    return float(np.sum(y * np.log(p) + (1 - y) * np.log(1 - p))), np.r_[
        model.intercept_, model.coef_.ravel()
    ]


def interaction_test(y: np.ndarray, scores: np.ndarray, ketamine: np.ndarray) -> dict[str, float]:
    """Likelihood-ratio test of score x treatment in
    ``logit P(response) ~ score + ketamine + score:ketamine``."""
    y = np.asarray(y, int)
    s = (np.asarray(scores, float) - np.mean(scores)) / np.std(scores)
    k = np.asarray(ketamine, float)
    full_ll, coef = _loglik(np.column_stack([s, k, s * k]), y)
    reduced_ll, _ = _loglik(np.column_stack([s, k]), y)
    stat = max(2 * (full_ll - reduced_ll), 0.0)
    return {
        "interaction_log_odds_per_sd": float(coef[3]),
        "score_log_odds_per_sd_saline": float(coef[1]),
        "lr_statistic": stat,
        "p_value": float(chi2.sf(stat, df=1)),
    }
