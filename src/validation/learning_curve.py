"""Does more data still help? The whole nested CV rerun on stratified subsamples of the discovery cohort.

Each point of the curve is one draw: a stratified subsample of ``fraction`` of the cohort (scikit-learn's
:class:`~sklearn.model_selection.StratifiedShuffleSplit`; the whole cohort at 1.0) and a complete nested CV
on it with its own outer and inner splits (a seed derived from the run's seed, the fraction and the draw), so
no subject of a subsample's test folds ever tuned or trained its model. scikit-learn's
:func:`~sklearn.model_selection.learning_curve` grows the training set of one fixed split and scores a
fitted estimator; here the estimator *is* the nested CV, and what is measured is its out-of-fold result on
the subsample, so the loop is written out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
from joblib import delayed
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedShuffleSplit
from tqdm.auto import tqdm

from src.utils.parallel import run_parallel
from src.validation.permutation import fitted_statistic, permutation_cv, statistic_name
from src.validation.regression import NestedCVRegressor
from src.validation.seeds import Stream, derive_seed


def strata(y: np.ndarray) -> np.ndarray:
    """What a subsample is stratified on: a binary label itself, a continuous outcome's quartile."""
    y = np.asarray(y)
    if len(np.unique(y)) <= 2:
        return y
    return pd.qcut(y, 4, labels=False, duplicates="drop")


def subsample(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Sorted row indices of a subsample of ``fraction`` of ``y`` stratified on :func:`strata` (all rows at
    1.0)."""
    n = len(y)
    if fraction >= 1.0:
        return np.arange(n)
    size = int(round(fraction * n))
    split = StratifiedShuffleSplit(n_splits=1, train_size=size, random_state=seed)
    rows, _ = next(split.split(np.zeros(n), strata(y)))
    return np.sort(rows)


def _one_draw(
    estimator: Any, X: pd.DataFrame, y: np.ndarray, fraction: float, draw: int, seed: int
) -> dict[str, Any]:
    rows = subsample(y, fraction, derive_seed(seed, Stream.LEARNING_CURVE, int(round(1000 * fraction)), draw))
    fitted = clone(estimator).set_params(
        random_state=derive_seed(seed, Stream.LEARNING_CURVE, int(round(1000 * fraction)), draw, 1),
        n_jobs=1,
        keep_models=False,
        checkpoint=None,
        progress=False,
    )
    fitted.fit(X.iloc[rows].reset_index(drop=True), y[rows])
    row = {"fraction": fraction, "n": len(rows), "draw": draw, "statistic": fitted_statistic(fitted)}
    if not isinstance(fitted, NestedCVRegressor):  # a classifier: mean per-repeat BAC and AUC
        decision = fitted.oof_decision_
        row["bac"] = row["statistic"]
        row["auc"] = float(
            np.mean([roc_auc_score(y[rows], decision[:, r]) for r in range(decision.shape[1])])
        )
    return row


def learning_curve(
    estimator: Any,
    X: pd.DataFrame,
    y: np.ndarray,
    fractions: Sequence[float],
    draws: int,
    *,
    repeats: int = 1,
    seed: int = 0,
    n_jobs: int = 1,
    progress: bool = False,
) -> pd.DataFrame:
    """One row per (fraction, draw): n, the procedure's statistic (mean per-repeat BAC of a classifier, the
    objective of a regressor: :func:`~src.validation.permutation.fitted_statistic`) and a classifier's mean
    per-repeat AUC, each from a full nested CV of ``repeats`` repeats on the subsample. The draws run on
    ``n_jobs`` workers; the values do not depend on it."""
    y = np.asarray(y)
    base = clone(estimator).set_params(cv=permutation_cv(estimator.cv, repeats))
    tasks = [(f, d) for f in sorted(fractions) for d in range(draws)]
    jobs = (delayed(_one_draw)(base, X, y, f, d, seed) for f, d in tasks)
    rows = []
    with tqdm(total=len(tasks), desc="learning curve", disable=not progress) as bar:
        for row in run_parallel(jobs, n_jobs, shared=(X, y)):
            rows.append(row)
            bar.update()
    table = pd.DataFrame(rows)
    table.attrs["statistic"] = statistic_name(estimator)
    return table


def curve_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per fraction: n, draws, mean and SD (across draws) of BAC and AUC (or of the statistic)."""
    metrics = [m for m in ("bac", "auc") if m in table] or ["statistic"]
    grouped = table.groupby("fraction")
    out = grouped.agg(n=("n", "first"), draws=("draw", "count")).reset_index()
    for metric in metrics:
        out[f"{metric}_mean"] = grouped[metric].mean().to_numpy()
        out[f"{metric}_sd"] = grouped[metric].std(ddof=1).fillna(0.0).to_numpy()
    return out
