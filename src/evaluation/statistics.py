"""Permutation p-values and bootstrap CIs of fixed predictions, on ``scipy.stats``.

* :func:`~src.validation.metrics.permutation_p_value` is the one place the p-value of a permutation test
  is written (``(1 + #{null >= observed}) / (1 + n)``, Phipson & Smyth 2010): the whole-procedure test of
  training (whose null comes from re-running the nested CV, which no library does) uses it directly.
* :func:`permutation_pvalues` (labels shuffled, predictions fixed) is :func:`scipy.stats.permutation_test`
  with ``permutation_type="pairings"`` and a vectorised statistic; scipy's p-value is the same formula.
* :func:`bootstrap_ci` is :func:`scipy.stats.bootstrap` with the responders and non-responders passed as two
  samples, so each is resampled on its own (class sizes fixed, as in the design): BCa intervals, or
  percentile ones for a statistic whose bootstrap distribution is degenerate (e.g. sensitivity 1.0 in every
  resample), where BCa is undefined.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy.stats import bootstrap, permutation_test, rankdata


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
    """BAC and AUC of fixed ``scores`` for each row of a (n_sets, n) 0/1 label matrix.

    The statistic of the permutation tests, vectorised over label sets (scikit-learn's metrics take one
    label vector at a time: 10 000 permutations would be 10 000 calls)."""
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
    """Label-permutation p-values of BAC and AUC with the predictions held fixed (one-sided, greater)."""
    y, scores = _check(y, scores)

    def test(which: int) -> float:
        def statistic(labels: np.ndarray, axis: int = -1) -> np.ndarray:
            flat = labels.reshape(-1, labels.shape[-1])
            return bac_auc_for_labels(flat, scores, threshold)[which].reshape(labels.shape[:-1])

        # the same seed for both statistics: BAC and AUC are tested on the same permutations
        return permutation_test(
            (y,),
            statistic,
            permutation_type="pairings",
            n_resamples=n,
            alternative="greater",
            vectorized=True,
            rng=np.random.default_rng(seed),
        ).pvalue

    return {"p_bac": float(test(0)), "p_auc": float(test(1)), "n_permutations": int(n)}


_STATISTICS = ("bac", "sensitivity", "specificity", "auc", "ppv", "npv")


def bootstrap_ci(
    y: np.ndarray,
    scores: np.ndarray,
    n: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    threshold: float = 0.0,
) -> dict[str, tuple[float, float]]:
    """Stratified bootstrap CIs (BCa; percentile where BCa is undefined) of BAC, sensitivity, specificity,
    AUC, PPV and NPV.

    Responders and non-responders are resampled separately (class sizes fixed), as the cohort's
    composition is part of the design.
    """
    y, scores = _check(y, scores)

    def statistic(pos: np.ndarray, neg: np.ndarray, axis: int = -1) -> np.ndarray:
        n1, n0 = pos.shape[-1], neg.shape[-1]
        tp = (pos > threshold).sum(-1)
        tn = (neg <= threshold).sum(-1)
        fp = n0 - tn
        fn = n1 - tp
        # AUC = P(score_pos > score_neg) + 0.5 P(tie), over all pairs
        pairs = (pos[..., :, None] > neg[..., None, :]) + 0.5 * (pos[..., :, None] == neg[..., None, :])
        with np.errstate(invalid="ignore", divide="ignore"):
            values = [
                (tp / n1 + tn / n0) / 2,
                tp / n1,
                tn / n0,
                pairs.mean(axis=(-2, -1)),
                tp / (tp + fp),
                tn / (tn + fn),
            ]
        return np.stack([np.asarray(v, float) for v in values])

    samples = (scores[y == 1], scores[y == 0])
    kwargs = dict(n_resamples=n, confidence_level=level, vectorized=True, batch=500)
    with warnings.catch_warnings():
        # BCa is undefined for a degenerate statistic: NaN here, the percentile interval below
        warnings.simplefilter("ignore")
        bca = bootstrap(samples, statistic, method="BCa", rng=np.random.default_rng(seed), **kwargs)
        low, high = bca.confidence_interval
        if np.isnan(low).any() or np.isnan(high).any():
            pct = bootstrap(
                samples, statistic, method="percentile", rng=np.random.default_rng(seed), **kwargs
            )
            low = np.where(np.isnan(low), pct.confidence_interval.low, low)
            high = np.where(np.isnan(high), pct.confidence_interval.high, high)
    return {name: (float(lo), float(hi)) for name, lo, hi in zip(_STATISTICS, low, high, strict=True)}
