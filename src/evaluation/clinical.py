"""Calibration and decision-curve analysis of predicted response probabilities."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.metrics import brier_score_loss


def calibration_table(
    y: np.ndarray, proba: np.ndarray, n_bins: int = 5, level: float = 0.95
) -> tuple[pd.DataFrame, float]:
    """Reliability table (quantile bins: equal numbers of patients) with Wilson CIs of each bin's observed
    response rate, and the Brier score.

    Columns: ``n``, ``mean_predicted``, ``observed_fraction``, ``observed_low``, ``observed_high``. With
    ~50 patients a bin holds ~10: the CIs say how little a single bin shows.
    """
    # lazy: statsmodels 0.36 s (benchmarks/import_time.py), only for calibration tables
    from statsmodels.stats.proportion import proportion_confint

    y = np.asarray(y, int)
    proba = np.asarray(proba, float)
    # the bins of sklearn's calibration_curve(strategy="quantile"), kept with their counts for the CIs
    edges = np.quantile(proba, np.linspace(0, 1, n_bins + 1))
    bins = np.searchsorted(edges[1:-1], proba)
    rows = []
    for b in np.unique(bins):
        inside = bins == b
        events, count = int(y[inside].sum()), int(inside.sum())
        low, high = proportion_confint(events, count, alpha=1 - level, method="wilson")
        rows.append(
            {
                "n": count,
                "mean_predicted": float(proba[inside].mean()),
                "observed_fraction": events / count,
                "observed_low": float(low),
                "observed_high": float(high),
            }
        )
    return pd.DataFrame(rows), float(brier_score_loss(y, proba))


def decision_curve(y: np.ndarray, proba: np.ndarray, thresholds: np.ndarray | None = None) -> pd.DataFrame:
    """Net benefit of 'give ketamine if predicted P(response) >= pt' vs treat all / treat none
    (``dcurves.dca``; net benefit = TP/n - FP/n * pt / (1 - pt), Vickers & Elkin 2006)."""
    # lazy: dcurves 0.9 s (benchmarks/import_time.py), only for decision curves
    from dcurves import dca

    thresholds = np.linspace(0.05, 0.95, 19) if thresholds is None else np.asarray(thresholds, float)
    curves = dca(
        data=pd.DataFrame({"response": np.asarray(y, int), "model": np.asarray(proba, float)}),
        outcome="response",
        modelnames=["model"],
        thresholds=thresholds,
    )
    net = curves.pivot(index="threshold", columns="model", values="net_benefit")
    return pd.DataFrame(
        {
            "threshold": thresholds,
            "net_benefit_model": net["model"].to_numpy(),
            "net_benefit_treat_all": net["all"].to_numpy(),
            "net_benefit_treat_none": net["none"].to_numpy(),
        }
    )
