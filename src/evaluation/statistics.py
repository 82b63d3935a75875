"""Vectorised label-permutation p-values and stratified bootstrap CIs for fixed predictions.

scikit-learn's metrics take one label vector at a time; 10 000 permutations or bootstrap resamples of a
51-subject cohort are matrix products instead (seconds -> milliseconds), so the two statistics below are
written out. tests/test_evaluation.py checks them against sklearn's metrics.
"""

from __future__ import annotations

import numpy as np
from scipy.stats import rankdata


def _check(y: np.ndarray, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y).astype(int)
    scores = np.asarray(scores, dtype=float)
    if y.shape != scores.shape or y.ndim != 1:
        raise ValueError("labels and scores must be 1-D and of equal length")
    if len(np.unique(y)) != 2:
        raise ValueError("both classes are needed")
    return y, scores


def bac_auc_for_labels(
    labels: np.ndarray, scores: np.ndarray, threshold: float = 0.0
) -> tuple[np.ndarray, np.ndarray]:
    """BAC and AUC of fixed ``scores`` for each row of a (n_sets, n) 0/1 label matrix."""
    labels = np.atleast_2d(labels).astype(float)
    pred = (scores > threshold).astype(float)
    n1 = labels.sum(axis=1)
    n0 = labels.shape[1] - n1
    sens = labels @ pred / n1
    spec = (1 - labels) @ (1 - pred) / n0
    ranks = rankdata(scores)  # ties get average ranks: the Mann-Whitney form of the AUC
    auc = (labels @ ranks - n1 * (n1 + 1) / 2) / (n1 * n0)
    return (sens + spec) / 2, auc


def permutation_pvalues(
    y: np.ndarray, scores: np.ndarray, n: int = 10000, seed: int = 0, threshold: float = 0.0
) -> dict[str, float]:
    """Label-permutation p-values of BAC and AUC with the predictions held fixed.

    p = (1 + #{permuted >= observed}) / (1 + n).
    """
    y, scores = _check(y, scores)
    rng = np.random.default_rng(seed)
    permuted = rng.permuted(np.tile(y, (n, 1)), axis=1)
    bac0, auc0 = bac_auc_for_labels(y, scores, threshold)
    bac, auc = bac_auc_for_labels(permuted, scores, threshold)
    eps = 1e-12
    return {
        "p_bac": float((1 + np.sum(bac >= bac0[0] - eps)) / (1 + n)),
        "p_auc": float((1 + np.sum(auc >= auc0[0] - eps)) / (1 + n)),
        "n_permutations": int(n),
    }


def bootstrap_ci(
    y: np.ndarray,
    scores: np.ndarray,
    n: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    threshold: float = 0.0,
) -> dict[str, tuple[float, float]]:
    """Stratified bootstrap percentile CIs of BAC, sensitivity, specificity, AUC, PPV and NPV.

    Responders and non-responders are resampled separately (class sizes fixed), as the cohort's
    composition is part of the design.
    """
    y, scores = _check(y, scores)
    rng = np.random.default_rng(seed)
    pos, neg = scores[y == 1], scores[y == 0]
    n1, n0 = len(pos), len(neg)
    counts_pos = np.apply_along_axis(np.bincount, 1, rng.integers(0, n1, (n, n1)), minlength=n1).astype(float)
    counts_neg = np.apply_along_axis(np.bincount, 1, rng.integers(0, n0, (n, n0)), minlength=n0).astype(float)
    tp = counts_pos @ (pos > threshold)
    fn = n1 - tp
    tn = counts_neg @ (neg <= threshold)
    fp = n0 - tn
    # pairwise comparison matrix: AUC = P(score_pos > score_neg) + 0.5 P(tie)
    pairs = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    auc = np.einsum("bi,ij,bj->b", counts_pos, pairs, counts_neg) / (n1 * n0)
    with np.errstate(invalid="ignore", divide="ignore"):
        stats = {
            "bac": (tp / n1 + tn / n0) / 2,
            "sensitivity": tp / n1,
            "specificity": tn / n0,
            "auc": auc,
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
        }
    alpha = (1 - level) / 2 * 100
    return {
        k: (float(np.nanpercentile(v, alpha)), float(np.nanpercentile(v, 100 - alpha)))
        for k, v in stats.items()
    }
