"""The leakage-free pipelines: residualise -> scale -> (PCA) -> SVC, and the regression siblings
(epsilon-SVR, kernel ridge) on the target standardised inside the same training rows."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.compose import TransformedTargetRegressor
from sklearn.decomposition import PCA
from sklearn.kernel_ridge import KernelRidge
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, SVR

from src.config.checks import REGRESSION_PARAMS, SVC_PARAMS, check_estimator_name
from src.models.residualize import CovariateResidualizer

REGRESSORS = ("svr", "kernel_ridge")


def is_regressor(params: Mapping[str, Any]) -> bool:
    """Whether ``params`` describe a regression model (``estimator: svr | kernel_ridge``)."""
    return params.get("estimator", "svc") in REGRESSORS


class TargetScaledRegressor(TransformedTargetRegressor):
    """A regression pipeline fitted on the target standardised with its training rows' mean and SD
    (``TransformedTargetRegressor`` with a ``StandardScaler``), predictions in the outcome's units.

    ``decision_function`` is ``predict``: the ensemble averages its fold models' scores, which for a
    regression fold model are predicted outcomes."""

    def decision_function(self, X: Any) -> np.ndarray:
        """The predicted outcome (what the ensemble averages)."""
        return self.predict(X)


def build_pipeline(
    params: Mapping[str, Any],
    covariates: Sequence[str] = ("age", "sex", "tiv", "site"),
    categorical: Sequence[str] = ("sex", "site"),
    impute: Sequence[str] = (),
) -> Pipeline:
    """The full pipeline for one hyperparameter set.

    Parameters
    ----------
    params : mapping
        SVC parameters (``C``, ``kernel``, ``gamma``, ``class_weight``) and optionally ``pca_variance``
        (fraction of variance kept, in (0, 1)) or ``pca_components`` (int).
    covariates, categorical, impute : sequence of str
        Passed to :class:`CovariateResidualizer` (``impute``: the feature columns whose missing values it
        fills with their training means).
    """
    unknown = set(params) - set(SVC_PARAMS) - set(REGRESSION_PARAMS) - {"pca_variance", "pca_components"}
    if unknown:
        raise ValueError(f"unknown model parameter(s) {sorted(unknown)}")
    check_estimator_name(params.get("estimator"))
    if is_regressor(params):
        return build_regression_pipeline(params, covariates, categorical, impute)
    svc = SVC(**{k: v for k, v in params.items() if k in SVC_PARAMS})
    return _pipeline(svc, params, covariates, categorical, impute)


def build_regression_pipeline(
    params: Mapping[str, Any],
    covariates: Sequence[str] = ("age", "sex", "tiv", "site"),
    categorical: Sequence[str] = ("sex", "site"),
    impute: Sequence[str] = (),
) -> TargetScaledRegressor:
    """residualise -> scale -> [PCA] -> epsilon-SVR (``estimator: svr``; ``C``, ``epsilon``, ``kernel``,
    ``gamma``) or kernel ridge (``estimator: kernel_ridge``; ``alpha``, ``kernel``, ``gamma``), fitted on
    the target standardised inside the training rows (:class:`TargetScaledRegressor`)."""
    kernel_params = {k: v for k, v in params.items() if k in ("kernel", "gamma", "degree", "coef0")}
    if params["estimator"] == "kernel_ridge":
        if kernel_params.get("gamma") in ("scale", "auto"):
            raise ValueError("kernel ridge takes a numeric gamma (not 'scale' or 'auto')")
        model: Any = KernelRidge(alpha=float(params.get("alpha", 1.0)), **kernel_params)
    else:
        svr = {k: v for k, v in params.items() if k in ("C", "epsilon", "tol", "max_iter")}
        model = SVR(**svr, **kernel_params)
    pipeline = _pipeline(model, params, covariates, categorical, impute, last="regressor")
    return TargetScaledRegressor(regressor=pipeline, transformer=StandardScaler())


def _pipeline(
    model: Any,
    params: Mapping[str, Any],
    covariates: Sequence[str],
    categorical: Sequence[str],
    impute: Sequence[str],
    last: str = "svc",
) -> Pipeline:
    pca: Any = "passthrough"
    if params.get("pca_variance") is not None:
        pca = PCA(n_components=float(params["pca_variance"]), svd_solver="full")
    elif params.get("pca_components") is not None:
        pca = PCA(n_components=int(params["pca_components"]), svd_solver="full")
    return Pipeline(
        [
            (
                "residualize",
                CovariateResidualizer(
                    covariates=tuple(covariates), categorical=tuple(categorical), impute=tuple(impute)
                ),
            ),
            ("scale", StandardScaler()),
            ("pca", pca),
            (last, model),
        ]
    )
