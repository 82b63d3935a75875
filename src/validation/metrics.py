"""Binary classification metrics on decision scores (threshold 0 = the SVC's decision boundary)."""

from __future__ import annotations

import numpy as np
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
