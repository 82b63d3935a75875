"""The leakage-free classification pipeline: residualise -> scale -> (PCA) -> SVC."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sklearn.decomposition import PCA
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from src.config.checks import SVC_PARAMS
from src.models.residualize import CovariateResidualizer


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
    unknown = set(params) - set(SVC_PARAMS) - {"pca_variance", "pca_components"}
    if unknown:
        raise ValueError(f"unknown model parameter(s) {sorted(unknown)}")
    svc = SVC(**{k: v for k, v in params.items() if k in SVC_PARAMS})
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
            ("svc", svc),
        ]
    )
