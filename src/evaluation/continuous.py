"""The locked regressor on the evaluation cohorts: what it says about the continuous outcome itself.

Beside the responder metrics of its thresholded predictions (:mod:`src.evaluation.locked` treats
``predicted - cut`` as the decision score, so the paper table, ROC, calibration of P(response) and the
decision curve are the classifier's), a continuous model is judged on the outcome it predicts:

- R² against the mean outcome of the patients the model was trained on (the discovery cohort: all a
  locked model knows; the out-of-fold predictions use each fold's training mean), Pearson and Spearman r,
  MAE and RMSE, with bootstrap 95 % CIs (subjects resampled, predictions fixed) and permutation p-values
  (the outcome permuted against the fixed predictions: r > 0, MAE below chance);
- calibration of the predicted change: the OLS line of observed on predicted (slope 1 and intercept 0 when
  calibrated; slope < 1: predictions too extreme), with 95 % CIs, and calibration-in-the-large (mean
  observed - mean predicted);
- treatment specificity: the predicted x treatment interaction in the linear model of the observed
  outcome over the external ketamine and control cohorts (``outcome ~ predicted * ketamine``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from src.validation.metrics import REGRESSION_METRICS, regression_metrics

CI_METRICS = ("r2", "pearson_r", "mae", "rmse")


def calibration_line(observed: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """OLS ``observed = intercept + slope * predicted`` with 95 % CIs, and calibration-in-the-large."""
    # lazy: statsmodels 0.36 s (benchmarks/import_time.py), only for the evaluation's linear models
    import statsmodels.api as sm

    fit = sm.OLS(np.asarray(observed, float), sm.add_constant(np.asarray(predicted, float))).fit()
    (low_i, high_i), (low_s, high_s) = fit.conf_int(0.05)
    return {
        "slope": float(fit.params[1]),
        "slope_ci95": [float(low_s), float(high_s)],
        "intercept": float(fit.params[0]),
        "intercept_ci95": [float(low_i), float(high_i)],
        "in_the_large": float(np.mean(observed) - np.mean(predicted)),
    }


def bootstrap_intervals(
    observed: np.ndarray, predicted: np.ndarray, reference: float, n: int, seed: int
) -> dict[str, tuple[float, float]]:
    """Percentile 95 % intervals of R², r, MAE and RMSE over ``n`` resamples of the subjects (scipy's
    paired bootstrap; predictions fixed, as the locked model's are)."""
    out: dict[str, tuple[float, float]] = {}
    for name in CI_METRICS:

        def statistic(y: np.ndarray, f: np.ndarray, name: str = name) -> float:
            return regression_metrics(y, f, reference)[name]

        result = stats.bootstrap(
            (observed, predicted),
            statistic,
            paired=True,
            vectorized=False,
            n_resamples=n,
            method="percentile",
            rng=np.random.default_rng(seed),
        )
        low, high = result.confidence_interval
        out[name] = (float(low), float(high))
    return out


def permutation_p_values(observed: np.ndarray, predicted: np.ndarray, n: int, seed: int) -> dict[str, float]:
    """p of Pearson r > 0 and of MAE below what the same predictions reach against a permuted outcome
    (scipy's ``permutation_test`` over pairings; ``n`` permutations)."""

    def correlation(y: np.ndarray) -> float:
        return float(np.corrcoef(y, predicted)[0, 1])

    def negative_mae(y: np.ndarray) -> float:
        return -float(np.mean(np.abs(y - predicted)))

    out = {}
    for name, statistic in (("p_pearson_r", correlation), ("p_mae", negative_mae)):
        result = stats.permutation_test(
            (observed,),
            statistic,
            permutation_type="pairings",
            n_resamples=n,
            alternative="greater",
            vectorized=False,
            rng=np.random.default_rng(seed),
        )
        out[name] = float(result.pvalue)
    return out


def continuous_result(
    observed: Any,
    predicted: Any,
    reference: Any,
    cut: float | None,
    n_perm: int,
    n_boot: int,
    seed: int,
    p_value: float | None = None,
) -> dict[str, Any]:
    """One cohort group: n, the metrics (:func:`~src.validation.metrics.regression_metrics`; ``reference``:
    the training mean(s) R² is computed against), their CIs, permutation p-values and the calibration line.
    ``n_perm=0`` (the discovery cohort) leaves the p-values to ``p_value``: the permutation test of the whole
    nested CV."""
    observed, predicted = np.asarray(observed, float), np.asarray(predicted, float)
    reference = np.broadcast_to(np.asarray(reference, float), observed.shape)
    metrics = regression_metrics(observed, predicted, reference, cut)
    out: dict[str, Any] = {
        "n": len(observed),
        **{k: metrics[k] for k in REGRESSION_METRICS},
        "observed_mean": float(observed.mean()),
        "predicted_mean": float(predicted.mean()),
        "reference_mean": float(reference.mean()),
        "calibration": calibration_line(observed, predicted),
        "ci95": bootstrap_intervals(observed, predicted, float(reference.mean()), n_boot, seed)
        if n_boot
        else {},
    }
    if n_perm:
        out.update(permutation_p_values(observed, predicted, n_perm, seed))
    else:
        out["p_procedure"] = p_value
    return out


def interaction(
    observed: np.ndarray, predicted: np.ndarray, ketamine: np.ndarray
) -> dict[str, float | list[float]]:
    """``observed ~ predicted + ketamine + predicted:ketamine`` (OLS; predicted standardised, so effects are
    per SD): the interaction's coefficient, 95 % CI and p. A signature specific to the drug predicts the
    outcome under ketamine and not under the control treatment: a positive interaction."""
    # lazy: statsmodels 0.36 s (benchmarks/import_time.py), only for the evaluation's linear models
    import statsmodels.api as sm

    predicted = np.asarray(predicted, float)
    s = (predicted - predicted.mean()) / predicted.std()
    k = np.asarray(ketamine, float)
    fit = sm.OLS(np.asarray(observed, float), sm.add_constant(np.column_stack([s, k, s * k]))).fit()
    low, high = fit.conf_int(0.05)[3]
    return {
        "coefficient": float(fit.params[3]),
        "ci95": [float(low), float(high)],
        "p_value": float(fit.pvalues[3]),
        "slope_ketamine": float(fit.params[1] + fit.params[3]),
        "slope_control": float(fit.params[1]),
    }


def continuous_table(results: Mapping[str, Mapping[str, Any]]) -> pd.DataFrame:
    """One row per cohort group: n, R², r, rho, MAE, RMSE with CIs, p-values, the calibration line."""
    rows = []
    for name, r in results.items():
        ci, calibration = r.get("ci95") or {}, r["calibration"]
        rows.append(
            {
                "cohort": name,
                "n": r["n"],
                "R²": r["r2"],
                "R² 95% CI": _ci(ci.get("r2")),
                "r": r["pearson_r"],
                "r 95% CI": _ci(ci.get("pearson_r")),
                "rho": r["spearman_r"],
                "MAE": r["mae"],
                "MAE 95% CI": _ci(ci.get("mae")),
                "RMSE": r["rmse"],
                "p (r)": r.get("p_pearson_r"),
                "p (MAE)": r.get("p_mae"),
                # the discovery cohort's: the permutation test of the whole nested CV (its objective)
                "p (nested CV)": r.get("p_procedure"),
                "calibration slope": calibration["slope"],
                "slope 95% CI": _ci(calibration["slope_ci95"]),
                "calibration intercept": calibration["intercept"],
                "in the large": calibration["in_the_large"],
            }
        )
    return pd.DataFrame(rows)


def _ci(ci: Any) -> str:
    return "" if not ci else f"{ci[0]:.2f} to {ci[1]:.2f}"


def predicted_vs_observed(
    observed: np.ndarray,
    predicted: np.ndarray,
    ax: Any,
    label: str,
    cut: float | None = None,
    colour: str | None = None,
) -> None:
    """A continuous outcome's scatter of observed on predicted with the identity line (and, with a responder
    threshold, its lines: the four quadrants are the confusion matrix of the thresholded predictions)."""
    observed, predicted = np.asarray(observed, float), np.asarray(predicted, float)
    ax.scatter(predicted, observed, s=14, alpha=0.7, label=label, color=colour)
    low = float(min(observed.min(), predicted.min()))
    high = float(max(observed.max(), predicted.max()))
    ax.plot([low, high], [low, high], color="black", lw=1, ls="--", label="identity")
    if cut is not None:
        ax.axhline(cut, color="grey", lw=0.8, ls=":")
        ax.axvline(cut, color="grey", lw=0.8, ls=":")
    ax.set(xlabel="predicted", ylabel="observed")
