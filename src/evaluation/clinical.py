"""Calibration and decision-curve analysis of predicted response probabilities."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.calibration import calibration_curve
from sklearn.metrics import brier_score_loss


def calibration_table(y: np.ndarray, proba: np.ndarray, n_bins: int = 5) -> tuple[pd.DataFrame, float]:
    """Reliability curve (quantile bins) and Brier score."""
    frac_pos, mean_pred = calibration_curve(y, proba, n_bins=n_bins, strategy="quantile")
    table = pd.DataFrame({"mean_predicted": mean_pred, "observed_fraction": frac_pos})
    return table, float(brier_score_loss(y, proba))


def decision_curve(y: np.ndarray, proba: np.ndarray, thresholds: np.ndarray | None = None) -> pd.DataFrame:
    """Net benefit of 'give ketamine if predicted P(response) >= pt' vs treat all / treat none.

    Net benefit = TP/n - FP/n * pt / (1 - pt) (Vickers & Elkin 2006); treat-all uses every patient as
    predicted positive; treat-none is 0. No kept library implements DCA, hence the few lines here.
    """
    y = np.asarray(y, int)
    proba = np.asarray(proba, float)
    thresholds = np.linspace(0.05, 0.95, 19) if thresholds is None else np.asarray(thresholds)
    n, prevalence = len(y), y.mean()
    rows = []
    for pt in thresholds:
        treat = proba >= pt
        tp, fp = np.sum(treat & (y == 1)), np.sum(treat & (y == 0))
        odds = pt / (1 - pt)
        rows.append(
            {
                "threshold": float(pt),
                "net_benefit_model": tp / n - fp / n * odds,
                "net_benefit_treat_all": prevalence - (1 - prevalence) * odds,
                "net_benefit_treat_none": 0.0,
            }
        )
    return pd.DataFrame(rows)
