"""The engine's former inner loop, kept as the reference the kernel-space loop must reproduce.

Per inner split it fits the residualiser and the scaler once (and PCA with all components, truncated per
trial) and then fits ``SVC`` on the feature arrays for every trial, through scikit-learn's public API.
:func:`reference_engine` swaps it in for :class:`~src.validation.nested_cv.InnerKernels`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import pandas as pd
from sklearn import config_context
from sklearn.base import clone
from sklearn.decomposition import PCA
from sklearn.model_selection import StratifiedKFold
from sklearn.svm import SVC

from src.models.linear import AffineDecision
from src.models.pipeline import SVC_PARAMS, build_pipeline
from src.validation import nested_cv
from src.validation.nested_cv import _n_components, balanced_accuracy


class FeatureSpaceInnerCache:
    """Preprocessed inner-fold arrays of one outer-training part; each trial fits SVC on them."""

    def __init__(
        self,
        X: pd.DataFrame,
        y: np.ndarray,
        rows: np.ndarray,
        splitter: StratifiedKFold,
        covariates: Sequence[str],
        categorical: Sequence[str],
        use_pca: bool,
        objective: str = "balanced_accuracy",  # the former engine classified only
        features: np.ndarray | None = None,  # the engine's shared matrix; the former one made its own
    ) -> None:
        self.features = X.drop(columns=list(covariates)).to_numpy(dtype=float)
        self._y_all = y
        self.covariates, self.categorical = covariates, categorical
        X, y = X.iloc[rows], y[rows]
        self.y = y
        preprocess = build_pipeline({"kernel": "linear"}, covariates, categorical)[:2]  # residualise + scale
        self.folds = []
        for a, b in splitter.split(np.zeros(len(y)), y):
            pre = clone(preprocess).fit(X.iloc[a], y[a])
            za, zb = pre.transform(X.iloc[a]), pre.transform(X.iloc[b])
            cumsum = None
            if use_pca:
                pca = PCA(svd_solver="full").fit(za)
                za, zb = pca.transform(za), pca.transform(zb)
                cumsum = np.cumsum(pca.explained_variance_ratio_)
            self.folds.append((a, b, za, zb, cumsum))

    def linear_refit(self, X: pd.DataFrame, train: np.ndarray, params: dict[str, Any]) -> AffineDecision:
        """The former refit: the whole pipeline (PCA by SVD of the rows x features matrix), then its
        affine form."""
        pipeline = build_pipeline(params, self.covariates, self.categorical)
        return AffineDecision.from_pipeline(pipeline.fit(X.iloc[train], self._y_all[train]))

    def score(self, params: dict[str, Any]) -> list[float]:
        svc_params = {k: v for k, v in params.items() if k in SVC_PARAMS}
        scores = []
        with config_context(assume_finite=True, skip_parameter_validation=True):
            for a, b, za, zb, cumsum in self.folds:
                if cumsum is not None:
                    m = _n_components(params, cumsum, za.shape[1])
                    za, zb = za[:, :m], zb[:, :m]
                svc = SVC(**svc_params).fit(za, self.y[a])
                scores.append(balanced_accuracy(self.y[b], svc.predict(zb)))
        return scores


@contextlib.contextmanager
def reference_engine() -> Iterator[None]:
    """Run :func:`~src.validation.nested_cv.run_nested_cv` with the former inner loop (``n_jobs=1``)."""
    kernels = nested_cv.InnerKernels
    nested_cv.InnerKernels = FeatureSpaceInnerCache
    try:
        yield
    finally:
        nested_cv.InnerKernels = kernels
