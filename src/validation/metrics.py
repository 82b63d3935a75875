"""Metrics: binary classification on decision scores (threshold 0 = the SVC's decision boundary), and the
continuous outcome's (out-of-sample R², correlations, errors)."""

from __future__ import annotations

import numpy as np
from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import balanced_accuracy_score, confusion_matrix, roc_auc_score

METRICS: tuple[str, ...] = ("bac", "sensitivity", "specificity", "auc", "ppv", "npv")


def binary_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.0) -> dict[str, float]:
    """BAC, sensitivity, specificity, AUC, PPV and NPV of ``scores > threshold`` (positive class = 1).

    Undefined values (e.g. PPV with no positive prediction, AUC with one class) are NaN.
    """
    y_true = np.asarray(y_true).astype(int)
    scores = np.asarray(scores, dtype=float)
    pred = (scores > threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y_true, pred, labels=[0, 1]).ravel()
    both = len(np.unique(y_true)) == 2
    return {
        "bac": float(balanced_accuracy_score(y_true, pred)) if both else float("nan"),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "auc": float(roc_auc_score(y_true, scores)) if both else float("nan"),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
    }


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


# relative tolerance for "null >= observed": a permuted statistic equal to the observed one up to floating
# point counts as at least as extreme (scipy's permutation_test uses the same kind of tolerance)
_TIES = 1e-12


def permutation_p_value(observed: float, null: np.ndarray) -> float:
    """One-sided p-value of ``observed`` against a null sample: ``(1 + #{null >= observed}) / (1 + n)``."""
    null = np.asarray(null, float)
    return float((1 + np.sum(null >= observed - _TIES)) / (1 + len(null)))


# the continuous outcome's metrics (src.validation.regression); "bac" & co. join them when the outcome has a
# responder threshold (the BAC of the thresholded predictions against the thresholded outcome)
REGRESSION_METRICS: tuple[str, ...] = ("r2", "pearson_r", "spearman_r", "mae", "rmse")
# the inner loop's objectives for a continuous outcome (higher is better)
REGRESSION_OBJECTIVES: tuple[str, ...] = ("neg_mae", "neg_rmse", "r2", "pearson")


def out_of_sample_r2(y_true: np.ndarray, predicted: np.ndarray, reference: np.ndarray | float) -> float:
    """``1 - SSE / sum((y - reference)^2)`` with ``reference`` the mean of each subject's *training* rows:
    the baseline a model has to beat is predicting the training mean, which is all it could know. The
    test rows' own mean (``sklearn.metrics.r2_score``) is information no model had; with it, a model
    that predicts the training mean exactly scores below 0 only by the shift between the folds' means
    and a useless model can look less bad than it is (Poldrack, Huckins & Varoquaux 2020, JAMA Psychiatry)."""
    y_true, predicted = np.asarray(y_true, float), np.asarray(predicted, float)
    reference = np.broadcast_to(np.asarray(reference, float), y_true.shape)
    total = float(np.sum((y_true - reference) ** 2))
    return 1.0 - float(np.sum((y_true - predicted) ** 2)) / total if total > 0 else float("nan")


def regression_metrics(
    y_true: np.ndarray,
    predicted: np.ndarray,
    reference: np.ndarray | float,
    responder_cut: float | None = None,
) -> dict[str, float]:
    """R² against the training means ``reference`` (:func:`out_of_sample_r2`), Pearson and Spearman r,
    MAE and RMSE; with ``responder_cut``, also :func:`binary_metrics` of ``predicted - cut`` against
    ``y_true >= cut`` (the BAC, sensitivity, specificity and AUC of the thresholded predictions)."""
    y_true, predicted = np.asarray(y_true, float), np.asarray(predicted, float)
    error = y_true - predicted
    varies = np.ptp(y_true) > 0 and np.ptp(predicted) > 0
    out = {
        "r2": out_of_sample_r2(y_true, predicted, reference),
        "pearson_r": float(pearsonr(y_true, predicted).statistic) if varies else float("nan"),
        "spearman_r": float(spearmanr(y_true, predicted).statistic) if varies else float("nan"),
        "mae": float(np.mean(np.abs(error))),
        "rmse": float(np.sqrt(np.mean(error**2))),
    }
    if responder_cut is not None:
        # >= cut is a responder (the label's rule); > 0 of the shifted score is binary_metrics' rule, so the
        # cut is moved by a hair to count a prediction exactly at it as a responder too
        responders = (y_true >= responder_cut - 1e-9).astype(int)
        out.update(binary_metrics(responders, predicted - responder_cut + 1e-9))
    return out


def regression_score(objective: str, y_true: np.ndarray, predicted: np.ndarray, train_mean: float) -> float:
    """One inner split's score of ``objective`` (higher is better): ``neg_mae``, ``neg_rmse``, ``r2``
    (against the split's training mean) or ``pearson``. Plain numpy: it runs once per split per trial."""
    error = y_true - predicted
    if objective == "neg_mae":
        return -float(np.mean(np.abs(error)))
    if objective == "neg_rmse":
        return -float(np.sqrt(np.mean(error**2)))
    if objective == "r2":
        return out_of_sample_r2(y_true, predicted, train_mean)
    if objective == "pearson":
        if np.ptp(predicted) == 0 or np.ptp(y_true) == 0:
            return 0.0  # a constant prediction carries no ranking: no better than chance
        return float(np.corrcoef(y_true, predicted)[0, 1])
    raise ValueError(f"unknown regression objective {objective!r} (one of {REGRESSION_OBJECTIVES})")
