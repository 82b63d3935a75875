"""The regression sibling: repeated nested CV of a support-vector (or kernel ridge) regressor.

:class:`NestedCVRegressor` is :class:`~src.validation.estimator.NestedCVClassifier` for a continuous outcome
(the percentage MADRS reduction, a follow-up score, days to relapse): the same kernel-space engine
(:func:`~src.validation.nested_cv.run_nested_cv`; one Gram matrix per inner split, each Optuna trial one
libsvm epsilon-SVR fit or one kernel-ridge solve on it), the same preprocessing inside every training split
(covariate regression, scaling, PCA; the target standardised with the training rows' mean and SD), the same
locked ensemble (the mean of the R x K fold models' predictions) and the same permutation test
(``clone(estimator).fit(X, y_permuted)``). The outer and inner splits are shuffled K-fold (there are no
classes to stratify on), seeded as the classifier's.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import RegressorMixin

from src.models.search_space import SearchSpace
from src.validation.estimator import DEFAULT_CATEGORICAL, DEFAULT_COVARIATES, DEFAULT_CV, NestedCVBase
from src.validation.metrics import REGRESSION_OBJECTIVES, regression_score
from src.validation.nested_cv import CVConfig, RegressionCVResult, run_nested_cv


def default_regression_space() -> SearchSpace:
    """The linear epsilon-SVR of ``conf/model/svr_linear.yaml`` (tests keep the two equal)."""
    return SearchSpace(
        params={
            "C": {
                "type": "float",
                "low": 1.0e-4,
                "high": 1.0,
                "log": True,
                "grid": [1.0e-4, 1.0e-3, 1.0e-2, 1.0e-1, 1.0],
            },
            "epsilon": {
                "type": "float",
                "low": 0.05,
                "high": 1.0,
                "log": True,
                "grid": [0.05, 0.1, 0.5, 1.0],
            },
        },
        fixed={"estimator": "svr", "kernel": "linear"},
    )


class NestedCVRegressor(RegressorMixin, NestedCVBase):
    """Repeated nested CV of a regressor of a continuous outcome, locked as the mean of its fold models.

    For each repeat and shuffled outer fold, an Optuna study on the outer-training rows maximises the mean
    ``objective`` over inner folds (default: the negative mean absolute error); the best parameters are
    refitted on the outer-training rows and predict the outer-test rows once. The model is
    ``residualise -> scale -> [PCA] -> epsilon-SVR | kernel ridge`` (``search_space.fixed["estimator"]``) on
    the target standardised inside the training rows, so ``C``, ``epsilon`` and ``alpha`` are in SD units.

    Parameters
    ----------
    search_space : SearchSpace, optional
        Needs ``fixed["estimator"]`` in ``svr``/``kernel_ridge``; default: :func:`default_regression_space`.
    objective : {"neg_mae", "neg_rmse", "r2", "pearson"}
        The inner loop's objective (``r2`` against each inner split's training mean); also the statistic
        of the permutation test (:meth:`cv_statistic`).
    responder_cut : float, optional
        The outcome value at and above which a patient responds (50 for the percentage reduction): the
        metrics then include the BAC & co. of the thresholded predictions, and the locked model gives
        P(response) from its out-of-fold residuals (:func:`~src.validation.ensemble.residual_model`).
    cv, covariates, categorical, random_state, n_jobs, checkpoint, keep_models, progress
        See :class:`~src.validation.estimator.NestedCVBase`.

    Attributes
    ----------
    result_ : RegressionCVResult
    oof_prediction_ : ndarray of shape (n_samples, cv.repeats)
        Out-of-fold predicted outcome of every subject in every repeat (also as ``oof_decision_``).
    ensemble_ : EnsembleModel or None
    coef_ : ndarray of shape (n_features,)
        Linear models only: the mean fold weight of each feature (outcome units per unit of its
        covariate-adjusted value).
    """

    def __init__(
        self,
        search_space: SearchSpace | None = None,
        cv: CVConfig = DEFAULT_CV,
        covariates: Sequence[str] = DEFAULT_COVARIATES,
        categorical: Sequence[str] = DEFAULT_CATEGORICAL,
        random_state: int = 0,
        n_jobs: int = 1,
        checkpoint: str | Path | None = None,
        keep_models: bool = True,
        progress: bool = False,
        objective: str = "neg_mae",
        responder_cut: float | None = None,
    ) -> None:
        super().__init__(
            search_space, cv, covariates, categorical, random_state, n_jobs, checkpoint, keep_models, progress
        )
        self.objective = objective
        self.responder_cut = responder_cut

    def _run(self, X: pd.DataFrame, y: np.ndarray, ids: Sequence[str] | None) -> RegressionCVResult:
        if self.objective not in REGRESSION_OBJECTIVES:
            raise ValueError(f"objective must be one of {REGRESSION_OBJECTIVES}, got {self.objective!r}")
        result = run_nested_cv(
            X,
            y,
            self.search_space if self.search_space is not None else default_regression_space(),
            self.cv,
            int(self.random_state),
            covariates=list(self.covariates),
            categorical=list(self.categorical),
            ids=ids,
            n_jobs=self.n_jobs,
            progress=self.progress,
            keep_models=self.keep_models,
            checkpoint=self.checkpoint,
            objective=self.objective,
            responder_cut=self.responder_cut,
        )
        if not isinstance(result, RegressionCVResult):
            raise ValueError("NestedCVRegressor needs a regression model: search_space.fixed['estimator']")
        return result

    def _target(self, y: Any) -> np.ndarray:
        return np.asarray(y, dtype=float)

    @property
    def oof_prediction_(self) -> np.ndarray:
        """(n_samples, repeats) out-of-fold predicted outcomes."""
        return self.oof_decision_

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """The mean of the fold models' predicted outcomes."""
        return self._locked().decision_function(X)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """P(outcome below / at or above ``responder_cut``) from the out-of-fold residual model, (n, 2)."""
        return self._locked().predict_proba(X)

    def cv_statistic(self, repeats: int | None = None) -> float:
        """The permutation test's statistic: the mean over the first ``repeats`` repeats of the per-repeat
        ``objective`` of the out-of-fold predictions (R² against each subject's training-fold mean)."""
        return cv_statistic(self.result_, self.objective, repeats)


def cv_statistic(result: RegressionCVResult, objective: str, repeats: int | None = None) -> float:
    """Mean over the first ``repeats`` repeats of ``objective`` (higher is better) of ``result``'s out-of-fold
    predictions (:func:`oof_statistic`)."""
    return oof_statistic(result.y, result.decision_matrix(), result.training_means(), objective, repeats)


def oof_statistic(
    y: np.ndarray, predicted: np.ndarray, means: np.ndarray, objective: str, repeats: int | None = None
) -> float:
    """Mean over the first ``repeats`` columns (repeats) of ``objective`` of the out-of-fold ``predicted``
    outcomes (subjects x repeats); ``r2`` against each subject's training-fold mean (``means``)."""
    repeats = int(repeats or predicted.shape[1])
    values = []
    for r in range(repeats):
        if objective == "r2":
            # one reference per subject (its fold's training mean), not one per repeat: as the result's metric
            error, baseline = y - predicted[:, r], y - means[:, r]
            values.append(1.0 - float(error @ error) / float(baseline @ baseline))
        else:
            values.append(regression_score(objective, y, predicted[:, r], float(y.mean())))
    return float(np.mean(values))
