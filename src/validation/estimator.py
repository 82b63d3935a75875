"""The method as one scikit-learn estimator: repeated nested CV whose fitted model is the fold ensemble.

:class:`NestedCVClassifier` is to this project what nilearn's ``Decoder`` is to nilearn (CV bagging of the
best fold models) and ``GridSearchCV`` to scikit-learn: its constructor takes the settings, ``fit(X, y)``
runs the repeated nested CV (:func:`~src.validation.nested_cv.run_nested_cv`, the kernel-space engine,
unchanged) and locks the R x K outer-fold models into one ensemble, and ``decision_function`` /
``predict_proba`` / ``predict`` are that ensemble's. A permutation of the whole procedure is
``clone(estimator).fit(X, y_permuted)`` (:func:`~src.validation.permutation.permutation_test`).

Siblings (a regression estimator for continuous outcomes, a stacking estimator over feature blocks) take
the same settings and reuse the engine; see :class:`NestedCVBase`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from src.models.search_space import SearchSpace, default_search_space
from src.validation.ensemble import EnsembleModel
from src.validation.nested_cv import CVConfig, FoldResult, NestedCVResult, run_nested_cv

DEFAULT_COVARIATES = ("age", "sex", "tiv", "site")
DEFAULT_CATEGORICAL = ("sex", "site")
DEFAULT_CV = CVConfig()  # NeuroMiner's 10 x 10 outer folds, 5 inner folds, 30 TPE trials


class NestedCVBase(BaseEstimator):
    """Settings and fitted state shared by the nested-CV estimators (this classifier; later its regression
    and stacking siblings). A sibling overrides :meth:`_run` (the engine call) and :meth:`_lock` (how fold
    models become one model); everything else — settings, ``clone``, permutations, checkpoints — is here.

    Parameters
    ----------
    search_space : SearchSpace, optional
        The Optuna search space of the inner loop and the fixed parameters (``conf/model/*.yaml``);
        default: the linear SVC of ``conf/model/svc_linear.yaml``.
    cv : CVConfig
        Outer repeats and folds, inner folds, trials and sampler (``conf/cv/*.yaml``).
    covariates : sequence of str
        Columns of ``X`` regressed out of the features inside every training split (and dropped).
    categorical : sequence of str
        Those of ``covariates`` that are categories (dummy-coded; e.g. sex, site).
    random_state : int
        The one seed: splits, samplers and permutations derive their seeds from it and their coordinates,
        so results do not depend on ``n_jobs`` or on the order in which folds finish.
    n_jobs : int
        Workers over outer folds (-1: all cores); results are identical for any value.
    checkpoint : path, optional
        A JSON-lines file of finished outer folds: a fit interrupted after k folds resumes at k.
    keep_models : bool
        Keep and lock the fold models (``False``: only out-of-fold scores, as a permutation needs).
    progress : bool
        A progress bar over outer folds.
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
    ) -> None:
        self.search_space = search_space
        self.cv = cv
        self.covariates = covariates
        self.categorical = categorical
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.checkpoint = checkpoint
        self.keep_models = keep_models
        self.progress = progress

    def _run(self, X: pd.DataFrame, y: np.ndarray, ids: Sequence[str] | None) -> NestedCVResult:
        return run_nested_cv(
            X,
            y,
            self.search_space if self.search_space is not None else default_search_space(),
            self.cv,
            int(self.random_state),
            covariates=list(self.covariates),
            categorical=list(self.categorical),
            ids=ids,
            n_jobs=self.n_jobs,
            progress=self.progress,
            keep_models=self.keep_models,
            checkpoint=self.checkpoint,
        )

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "result_")

    def _target(self, y: Any) -> np.ndarray:
        """``y`` as the engine takes it (a sibling with a continuous outcome makes it float)."""
        return np.asarray(y)

    def fit(
        self,
        X: pd.DataFrame,
        y: Any,
        *,
        ids: Sequence[str] | None = None,
        info: dict[str, Any] | None = None,
    ) -> NestedCVBase:
        """Run the repeated nested CV on ``X``, ``y`` and lock the fold models.

        Parameters
        ----------
        X : DataFrame
            Covariate columns and feature columns (not modified).
        y : array-like
            The outcome: 0/1 labels (1 = the positive class) for a classifier, numbers for a regressor.
        ids : sequence of str, optional
            Subject identifiers in the order of ``y`` (out-of-fold tables, the locked model's record of which
            subjects each fold model never saw).
        info : dict, optional
            Metadata recorded in the locked model (experiment, seed, data name, feature-table md5).

        Returns
        -------
        self
        """
        if not isinstance(X, pd.DataFrame):
            raise TypeError(
                "X must be a DataFrame with the covariate columns "
                f"{list(self.covariates)} and the feature columns, got {type(X).__name__}"
            )
        self.result_ = self._run(X, self._target(y), ids)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        self.n_features_in_ = X.shape[1]
        self.oof_decision_ = self.result_.decision_matrix()
        self.ensemble_ = self._lock(X, info)
        return self

    def _lock(self, X: pd.DataFrame, info: dict[str, Any] | None) -> EnsembleModel | None:
        if not self.keep_models:
            return None
        # the training table also gives the covariate model that explains a new patient's prediction
        return EnsembleModel.from_result(self.result_, info=info, training=X)

    def _locked(self) -> EnsembleModel:
        """The locked ensemble; :class:`~sklearn.exceptions.NotFittedError` before ``fit`` (every sibling
        alike), ``AttributeError`` after a fit that kept no fold models."""
        check_is_fitted(self)
        if self.ensemble_ is None:
            raise AttributeError("fitted with keep_models=False: out-of-fold results only, no locked model")
        return self.ensemble_

    @property
    def coef_(self) -> np.ndarray:
        """Mean fold weight of each feature (linear fold models only)."""
        ensemble = self._locked()
        if not ensemble.is_linear:
            raise AttributeError("coef_ is only available for linear fold models")
        return np.mean([m.weights for m in ensemble.models], axis=0)

    @property
    def folds_(self) -> list[FoldResult]:
        """One :class:`~src.validation.nested_cv.FoldResult` per (repeat, outer fold), in that order."""
        check_is_fitted(self)
        return self.result_.folds

    @property
    def cv_results_(self) -> pd.DataFrame:
        """Every Optuna trial of every outer fold's study: repeat, fold, number, value (mean inner score),
        params_*, user_attrs_inner_scores (empty when ``keep_models=False``)."""
        check_is_fitted(self)
        return self.result_.trials()

    @property
    def best_params_(self) -> list[dict[str, Any]]:
        """The tuned parameters of each outer fold's model, in the order of :attr:`folds_`."""
        check_is_fitted(self)
        return [dict(f.best_params) for f in self.result_.folds]


class NestedCVClassifier(ClassifierMixin, NestedCVBase):
    """Repeated nested CV of a support-vector classifier, locked as the ensemble of its outer-fold models.

    For each repeat and stratified outer fold, an Optuna study on the outer-training rows maximises the
    mean balanced accuracy over stratified inner folds; the best parameters are refitted on the
    outer-training rows and score the outer-test rows once. Covariate regression, scaling and PCA are
    fitted inside every training split. The fitted model is the mean decision score of all R x K fold
    models, with Platt scaling fitted on the out-of-fold ensemble scores.

    ``X`` is a DataFrame holding the covariate columns (by name) and the feature columns; ``y`` holds 0/1
    labels (1 = the positive class). scikit-learn's ``check_estimator`` does not apply: it feeds unnamed
    numeric arrays, while this estimator needs its named covariates (age, sex, TIV, site) beside the features
    to adjust for them inside the folds. ``clone``, ``get_params``/``set_params``, unmodified inputs and
    fitted-state checks follow scikit-learn's contract (tests/test_estimator.py).

    Parameters
    ----------
    search_space, cv, covariates, categorical, random_state, n_jobs, checkpoint, keep_models, progress
        See :class:`NestedCVBase`.

    Attributes
    ----------
    result_ : NestedCVResult
        Everything the engine produced (folds, out-of-fold scores, trials; metrics by repeat).
    folds_ : list of FoldResult
    cv_results_ : DataFrame
        The trials of every study.
    best_params_ : list of dict
        Each fold model's tuned parameters.
    oof_decision_ : ndarray of shape (n_samples, cv.repeats)
        Out-of-fold decision scores of every subject in every repeat.
    ensemble_ : EnsembleModel or None
        The locked model (None with ``keep_models=False``); what ``model.npz``/``model.skops`` hold.
    calibration_ : tuple of float
        Platt (slope, intercept) of the ensemble decision.
    coef_ : ndarray of shape (n_features,)
        Linear models only: the mean fold weight of each feature, per unit of its covariate-adjusted value
        (scaling and PCA carried back: the decision is ``adjusted features @ weights + intercept``).
    classes_ : ndarray
        ``[0, 1]``.
    feature_names_in_ : ndarray of str
        The columns of ``X`` at fit (covariates and features).
    n_features_in_ : int
    """

    @property
    def classes_(self) -> np.ndarray:
        """``[0, 1]`` once fitted (0/1 labels, 1 = the positive class)."""
        check_is_fitted(self)
        return np.array([0, 1])

    @property
    def calibration_(self) -> tuple[float, float]:
        """Platt (slope, intercept) of the locked ensemble's decision score."""
        return self._locked().calibration

    def decision_function(self, X: pd.DataFrame) -> np.ndarray:
        """Mean decision score of the fold models (> 0: the positive class)."""
        return self._locked().decision_function(X)

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        """Platt-calibrated probabilities, shape (n_samples, 2)."""
        return self._locked().predict_proba(X)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        """1 where the ensemble decision score is > 0 (as the out-of-fold predictions), else 0."""
        return (self.decision_function(X) > 0).astype(int)
