"""The locked final model: all R x K outer-fold pipelines, decision = their mean, Platt-calibrated."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
import scipy.stats
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.calibration import CalibratedClassifierCV
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import Pipeline

from src.data.clinical import imputed_columns, is_clinical_column
from src.data.contract import SEXES, TABLE_META_COLUMNS
from src.features.tables import first_missing
from src.models.linear import AffineDecision
from src.models.residualize import CovariateResidualizer, unseen_levels
from src.utils.errors import MissingInputError, UserInputError
from src.utils.io import atomic_path, file_sha256, write_json_atomic, write_text_atomic
from src.validation.nested_cv import RegressionCVResult

log = logging.getLogger(__name__)

MODEL_FILE = "model.skops"  # ensembles that must stay objects (e.g. RBF pipelines)
LINEAR_MODEL_FILE = "model.npz"  # linear ensembles: plain arrays + JSON
LEGACY_MODEL_FILE = "model.joblib"
LINEAR_FORMAT = "ketamine-trd/linear-ensemble/1"
# The only non-scikit-learn/numpy types a model file may hold. skops rebuilds objects of listed types from
# their state and refuses anything else: loading a model never runs code from the file (pickle would).
TRUSTED_TYPES: list[str] = [
    "src.models.linear.AffineDecision",
    "src.models.pipeline.TargetScaledRegressor",
    "src.models.residualize.CovariateResidualizer",
    "src.validation.ensemble.EnsembleModel",
]


class ModelIntegrityError(UserInputError):
    """A model file that is not the one training wrote (hash mismatch) or holds types we do not trust."""


class ColumnMismatchError(UserInputError):
    """A table's columns do not match the columns the model was trained on."""


class _Scores(ClassifierMixin, BaseEstimator):
    """A fitted 'classifier' whose decision function is its single input column: lets scikit-learn's
    calibration wrap decision scores that were computed elsewhere (the out-of-fold ensemble scores)."""

    def __init__(self) -> None:
        self.classes_ = np.array([0, 1])

    def fit(self, X: np.ndarray, y: np.ndarray) -> _Scores:  # pragma: no cover - frozen, never refitted
        return self

    def decision_function(self, X: np.ndarray) -> np.ndarray:
        return np.asarray(X, float)[:, 0]

    def predict(self, X: np.ndarray) -> np.ndarray:
        return (self.decision_function(X) > 0).astype(int)


def residual_model(result: RegressionCVResult) -> tuple[tuple[float, float], dict[str, Any]]:
    """P(response) of a regressor from its out-of-fold residuals: the outcome of a patient with predicted
    outcome ``f`` is taken as ``f + e``, ``e ~ N(mu, sigma^2)`` with the mean and SD of the residuals of the
    out-of-fold ensemble predictions (observed - predicted), so ``P(outcome >= cut) = Phi((f + mu - cut) /
    sigma)``, kept as (slope, intercept) = ``(1 / sigma, (mu - cut) / sigma)``. Assumes residuals that are
    roughly normal and do not depend on ``f``; the evaluation's calibration of the predicted outcome shows
    whether that holds. Without a responder threshold the pair is the residuals' (1 / sigma, mu / sigma)."""
    residuals = result.y - result.ensemble_scores()
    mu, sigma = float(residuals.mean()), float(residuals.std(ddof=1))
    sigma = sigma if sigma > 0 else 1.0
    cut = result.responder_cut
    outcome = {
        "kind": "continuous",
        "objective": result.objective,
        "responder_cut": cut,
        "residual_mean": mu,
        "residual_sd": sigma,
        "link": "probit",
    }
    return (1.0 / sigma, (mu - (cut if cut is not None else 0.0)) / sigma), outcome


def platt_scaling(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(slope, intercept) of Platt's sigmoid ``P = 1 / (1 + exp(-(slope * score + intercept)))`` fitted on
    decision scores: scikit-learn's ``CalibratedClassifierCV(FrozenEstimator(.), method="sigmoid")``, i.e.
    Platt (1999) with its smoothed targets. Kept as two numbers, so a saved model holds no pickle."""
    y = np.asarray(y, int)
    calibrated = CalibratedClassifierCV(FrozenEstimator(_Scores()), method="sigmoid")
    calibrated.fit(np.asarray(scores, float).reshape(-1, 1), y)
    sigmoid = calibrated.calibrated_classifiers_[0].calibrators[0]  # P = expit(-(a * score + b))
    slope, intercept = -float(sigmoid.a_), -float(sigmoid.b_)
    if slope < 0:
        # out-of-fold scores rank the classes the wrong way round (a model worse than chance): a negative
        # slope would turn every decision around, i.e. use the model inverted on the strength of its own
        # failure. The calibrated answer of a model without discrimination is the base rate (slope 0, with
        # Platt's smoothed targets), and a locked model never has a negative slope (check_consistent).
        rate = (int(y.sum()) + 1) / (len(y) + 2)
        log.warning(
            "out-of-fold decision scores rank the classes the wrong way round (Platt slope %.3g): the "
            "calibrated probability is the base rate %.2f for every patient",
            slope,
            rate,
        )
        return 0.0, float(np.log(rate / (1 - rate)))
    return slope, intercept


class EnsembleModel:
    """Ensemble of fitted pipelines; scores a feature table with the training columns.

    Parameters
    ----------
    models : list of Pipeline or AffineDecision
        The outer-fold models (each: residualise -> scale -> [PCA] -> SVC; linear ones in their exact
        affine form).
    feature_columns, covariates : list of str
        Columns every table to score must hold (other columns, e.g. participant_id, are ignored; an
        unknown feature column is an error, so a table from another atlas cannot be scored by mistake).
    calibration : (slope, intercept)
        Platt scaling of the ensemble decision, fitted on out-of-fold ensemble scores.
    adjustment : CovariateResidualizer, optional
        The covariate model of the whole training cohort (features ~ covariates), used only to explain a
        prediction (:meth:`contributions`), never to make it.
    """

    def __init__(
        self,
        models: list[Pipeline],
        feature_columns: list[str],
        covariates: list[str],
        calibration: tuple[float, float],
        info: dict[str, Any] | None = None,
        adjustment: CovariateResidualizer | None = None,
        distance: dict[str, np.ndarray] | None = None,
    ) -> None:
        self.models = models
        self.feature_columns = list(feature_columns)
        self.covariates = list(covariates)
        self.calibration = calibration
        self.info = info or {}
        self.adjustment = adjustment
        self.distance = distance
        self._share_feature_names()

    def _share_feature_names(self) -> None:
        """Every linear fold's design refers to the ensemble's one list of feature names (fold models are
        serialised without them, see ``AffineDecision.__getstate__``, and get them back here)."""
        names_in = np.asarray([*self.covariates, *self.feature_columns], dtype=object)
        for model in self.models:
            if isinstance(model, AffineDecision):
                model.residualizer.feature_columns_ = self.feature_columns
                model.residualizer.feature_names_in_ = names_in

    def __getstate__(self) -> dict[str, Any]:
        """State for skops/pickle: the linear folds without their feature names, which the ensemble holds
        once (100 voxel folds x 2 x 22k names made MLflow's skops copy 350 MB and minutes to write)."""
        state = dict(self.__dict__)
        state["models"] = [_without_feature_names(m) for m in self.models]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:  # skops and pickle rebuild through here
        # files written before these existed have none
        self.__dict__.update({"adjustment": None, "distance": None, **state})
        self._share_feature_names()

    @classmethod
    def from_result(
        cls, result: Any, info: dict[str, Any] | None = None, training: pd.DataFrame | None = None
    ) -> EnsembleModel:
        """Lock a :func:`run_nested_cv` result: its fold models, Platt-fitted on OOF ensemble scores. With the
        ``training`` table (covariates + features), the covariate model that :meth:`contributions` uses."""
        if isinstance(result, RegressionCVResult):
            calibration, outcome = residual_model(result)
            info = {**(info or {}), "outcome": outcome}
        else:
            calibration = platt_scaling(result.ensemble_scores(), result.y)
        ids = np.asarray(result.ids)
        # which subjects each fold model never saw: needed for out-of-fold permutation importance
        info = {
            **(info or {}),
            "fold_test_ids": [ids[f.test].tolist() for f in result.folds],
            # each fold's tuned parameters: the weight permutation test refits the folds with them
            "fold_params": [dict(f.best_params) for f in result.folds],
        }
        if training is not None:  # what a new patient is compared with (src.predict warns outside it)
            info["training_covariates"] = {
                c: sorted(map(str, training[c].astype(str).unique()))
                if c in result.categorical
                else [float(training[c].min()), float(training[c].max())]
                for c in result.covariates
            }
            # per clinical indicator column, the training patients with that code (0: an unseen code)
            info["clinical_training_counts"] = {
                c: int(np.nansum(training[c].to_numpy(float)))
                for c in imputed_columns(result.feature_columns)
                if "=" in c
            }
        return cls(
            result.models,
            result.feature_columns,
            result.covariates,
            calibration,
            info,
            *explanation_models(training, result),
        )

    @property
    def input_columns(self) -> list[str]:
        """Covariates, then features: the columns a table to score must hold."""
        return [*self.covariates, *self.feature_columns]

    def unseen_levels(self, table: pd.DataFrame) -> dict[str, list[str]]:
        """Levels of each categorical covariate in ``table`` (e.g. a scanner site) that the training cohort
        did not have: their adjustment is the reference level's."""
        seen = self.info.get("training_covariates") or {}
        # categorical covariates are recorded as their levels (strings), numeric ones as [min, max]
        categorical = {n: v for n, v in seen.items() if v and all(isinstance(x, str) for x in v)}
        return unseen_levels(table, categorical)

    @property
    def clinical_columns(self) -> list[str]:
        """The clinical predictor columns (may be missing: each fold model imputes its training mean)."""
        return imputed_columns(self.feature_columns)

    @property
    def imaging_columns(self) -> list[str]:
        """The feature columns that are not clinical predictors (what site alignment may touch)."""
        clinical = set(self.clinical_columns)
        return [c for c in self.feature_columns if c not in clinical]

    @property
    def categorical_covariates(self) -> list[str]:
        """The covariates coded as categories (sex, site), as the fold models' residualiser codes them."""
        first = self.models[0]
        design = first.residualizer if isinstance(first, AffineDecision) else first.named_steps["residualize"]
        return list(design.categorical)

    @property
    def is_linear(self) -> bool:
        """Every fold model is linear (an exact affine form: weights, contributions, weight maps)."""
        return bool(self.models) and all(isinstance(m, AffineDecision) for m in self.models)

    def check_columns(self, table: pd.DataFrame) -> pd.DataFrame:
        """``table``'s model columns in the model's order; an error naming the missing and unexpected ones."""
        known = set(self.input_columns) | set(TABLE_META_COLUMNS)  # built once: wide voxel tables
        present = set(table.columns)
        missing = [c for c in self.input_columns if c not in present]
        unexpected = [c for c in table.columns if c not in known]
        if missing or unexpected:
            raise ColumnMismatchError(
                f"table columns do not match the model's: {len(missing)} missing (e.g. {missing[:5]}), "
                f"{len(unexpected)} unexpected (e.g. {unexpected[:5]}); the model was trained on "
                f"{len(self.feature_columns)} feature columns + covariates {self.covariates}"
            )
        return table[self.input_columns]

    def checked_inputs(self, table: pd.DataFrame, where: str) -> pd.DataFrame:
        """:meth:`check_columns`, and no missing value in the model's columns; errors start with ``where``
        (the cohort, the file) and name the columns or the first subject concerned."""
        try:
            X = self.check_columns(table)
        except ColumnMismatchError as err:
            raise ColumnMismatchError(f"{where}: {err}") from None
        categorical = self.categorical_covariates
        # only columns that are not numeric already can hold text (a voxel table has 10^5 numeric columns)
        for column in X.columns[[not pd.api.types.is_numeric_dtype(t) for t in X.dtypes]]:
            if column in categorical:
                continue
            numbers = pd.to_numeric(X[column], errors="coerce")
            text = numbers.isna() & X[column].notna()
            if text.any():
                row = int(np.flatnonzero(text.to_numpy())[0])
                raise ColumnMismatchError(
                    f"{where}: subject {table['participant_id'].iloc[row]} has non-numeric value "
                    f"{X[column].iloc[row]!r} in column {column!r} (a number is needed; decimal point, not "
                    f"comma); {int(text.sum())} such value(s)"
                )
        if "sex" in categorical:
            codes = X["sex"].astype(str).str.strip()
            wrong = X["sex"].notna() & ~codes.isin(SEXES)
            if wrong.any():
                row = int(np.flatnonzero(wrong.to_numpy())[0])
                raise ColumnMismatchError(
                    f"{where}: subject {table['participant_id'].iloc[row]} has unknown sex code "
                    f"{X['sex'].iloc[row]!r} in column 'sex' (allowed: {list(SEXES)}, as in participants.tsv)"
                )
        # a clinical predictor may be missing: each fold model fills it with its training mean
        hole = first_missing(table, X[[c for c in X.columns if not is_clinical_column(c)]])
        if hole is not None:
            count, subject, column = hole
            raise ColumnMismatchError(
                f"{where}: subject {subject} has no value in column {column!r} ({count} missing value(s) in "
                "the model's columns)"
            )
        return X

    def decision_matrix(self, table: pd.DataFrame) -> np.ndarray:
        """(n_rows, n_fold_models) decision scores of every fold model."""
        X = self.check_columns(table)
        features = X[self.feature_columns].to_numpy(dtype=float)
        return np.column_stack(
            [
                m.decision_function(X, features) if isinstance(m, AffineDecision) else m.decision_function(X)
                for m in self.models
            ]
        )

    def decision_function(self, table: pd.DataFrame) -> np.ndarray:
        """Mean decision score of the fold models (> 0: positive class)."""
        return self.decision_matrix(table).mean(axis=1)

    @property
    def is_regression(self) -> bool:
        """Whether the fold models predict a continuous outcome (their mean is the predicted outcome)."""
        return (self.info.get("outcome") or {}).get("kind") == "continuous"

    def predict_proba(self, table: pd.DataFrame) -> np.ndarray:
        """Calibrated probability of the positive class (a regressor's: of response), shape (n, 2)."""
        p = self.calibrate(self.decision_function(table))
        return np.column_stack([1 - p, p])

    def calibrate(self, decision: np.ndarray) -> np.ndarray:
        """Probability of the positive class for ensemble scores already computed: Platt's sigmoid of a
        classifier's decision; for a regressor, P(outcome >= responder threshold) of its residual model
        (:func:`residual_model`: ``Phi(slope * predicted + intercept)``)."""
        slope, intercept = self.calibration
        linear = slope * np.asarray(decision, dtype=float) + intercept
        if self.is_regression:
            if self.info["outcome"].get("responder_cut") is None:
                raise ValueError("this regression model's outcome has no responder threshold: no P(response)")
            return scipy.stats.norm.cdf(linear)
        return 1.0 / (1.0 + np.exp(-linear))

    def contributions(self, table: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
        """Each feature's share of a linear ensemble's decision score: (contributions, base) with
        ``contributions.sum(axis=1) + base == decision_function(table)``.

        Contribution of feature j = mean fold weight of j x the patient's covariate-adjusted value of j
        (the value minus what age, sex, TIV and site predict for it in the training cohort). Positive:
        pushes towards response. ``base`` holds the rest (fold intercepts, and the difference between the
        fold models' own covariate adjustments and the whole-cohort one).
        """
        if self.adjustment is None or not self.is_linear:
            raise UserInputError("regional contributions need a linear model trained with this version")
        X = self.check_columns(table)
        weights = np.mean([m.weights for m in self.models], axis=0)
        adjusted = self.adjustment.transform(X)
        values = adjusted * weights
        return pd.DataFrame(values, columns=self.feature_columns, index=table.index), (
            self.decision_function(table) - values.sum(axis=1)
        )

    def occlusion(self, table: pd.DataFrame) -> pd.DataFrame:
        """Local attribution for any ensemble (e.g. RBF): per patient and feature, the drop of the decision
        score when that feature is replaced by what the patient's covariates predict for it (their adjusted
        value set to 0, i.e. "this region as expected for their age, sex, TIV and site"). Positive: the
        region's actual volume pushes the score towards response. Unlike :meth:`contributions` the values do
        not add up to the score (features interact in a non-linear model); one ensemble evaluation per
        feature per patient."""
        if self.adjustment is None:
            raise UserInputError(
                "local attribution needs a model trained with this version (covariate model)"
            )
        X = self.check_columns(table).reset_index(drop=True)
        expected = X[self.feature_columns].to_numpy(float) - self.adjustment.transform(X)
        n = len(self.feature_columns)
        out = np.empty((len(X), n))
        for i in range(len(X)):
            block = X.iloc[np.full(n, i)].reset_index(drop=True)
            values = block[self.feature_columns].to_numpy(float)
            values[np.arange(n), np.arange(n)] = expected[i]
            block[self.feature_columns] = values
            out[i] = self.decision_function(X.iloc[[i]])[0] - self.decision_function(block)
        return pd.DataFrame(out, columns=self.feature_columns, index=table.index)

    def distance_percentile(self, table: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """(distance, percentile): each row's Mahalanobis distance to the training cohort (see
        :func:`explanation_models`) and the share (%) of training subjects, scored out of sample, who were
        closer. NaN without a distance model (models trained before it existed)."""
        if self.distance is None or self.adjustment is None:
            nan = np.full(len(table), np.nan)
            return nan, nan
        distance = mahalanobis(self.adjustment, self.distance, self.check_columns(table))
        reference = self.distance["reference"]
        return distance, 100.0 * np.searchsorted(reference, distance, side="right") / len(reference)

    def predict(self, table: pd.DataFrame) -> np.ndarray:
        """1 where the ensemble decision score is > 0, else 0; a regressor's predicted outcome."""
        if self.is_regression:
            return self.decision_function(table)
        return (self.decision_function(table) > 0).astype(int)

    def save(self, folder: str | Path, config_yaml: str | None = None) -> str:
        """Write the model file, ``columns.json`` and the resolved ``config.yaml`` atomically; return the
        model file's sha256, to be recorded and verified before every load.

        A linear ensemble (every fold model in its affine form) is written as ``model.npz``: arrays and
        JSON only, readable with numpy alone and loaded without pickle. Other ensembles (e.g. RBF
        pipelines) are written as ``model.skops`` with :data:`TRUSTED_TYPES`. Both are byte-reproducible.
        """
        # lazy: skops 0.9 s (benchmarks/import_time.py), only for object (RBF) model files
        import skops.io as sio

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        linear = self.is_linear
        name, stale = (LINEAR_MODEL_FILE, MODEL_FILE) if linear else (MODEL_FILE, LINEAR_MODEL_FILE)
        with atomic_path(folder / name) as tmp:
            tmp.write_bytes(linear_npz(self) if linear else canonical_skops(sio.dumps(self)))
        (folder / stale).unlink(missing_ok=True)  # one model file per folder
        write_json_atomic(
            folder / "columns.json", {"covariates": self.covariates, "features": self.feature_columns}
        )
        if config_yaml is not None:
            write_text_atomic(folder / "config.yaml", config_yaml)
        return file_sha256(folder / name)


DISTANCE_COMPONENTS = 10


def _distance_axes(
    training: pd.DataFrame, covariates: list[str], categorical: list[str], impute: list[str]
) -> tuple[CovariateResidualizer, dict[str, np.ndarray]]:
    """The covariate model of ``training`` and the principal axes of its adjusted, standardised features."""
    adjustment = CovariateResidualizer(covariates, categorical, impute).fit(training)
    z = np.asarray(adjustment.transform(training), dtype=float)  # a new array: standardised in place
    mean, scale = z.mean(axis=0), z.std(axis=0)
    scale[scale == 0] = 1.0
    z -= mean
    z /= scale
    singular, axes = _principal_axes(z, DISTANCE_COMPONENTS)
    return adjustment, {
        "mean": mean,
        "scale": scale,
        "axes": axes,
        "variances": singular[: len(axes)] ** 2 / (len(z) - 1),
    }


def _principal_axes(z: np.ndarray, most: int) -> tuple[np.ndarray, np.ndarray]:
    """(singular values, the first ``<= most`` right singular vectors with real variance) of ``z``.

    The covariate model leaves n - (design columns) degrees of freedom: axes beyond the residuals' rank have
    (numerically) zero variance and would blow the distance up, so only axes with real variance are kept. A
    matrix much wider than tall (voxels: 99 x 181 k) is decomposed through its n x n Gram matrix, as kernel
    PCA does (``z z' = U S^2 U'``, axes ``S^-1 U' z``): the same leading axes (tests/test_predict.py checks
    them against the SVD) for ~0.3 s instead of the thin SVD's 10 s, and no p-sized workspace."""
    n, p = z.shape
    if p <= 4 * n:
        _, singular, axes = np.linalg.svd(z, full_matrices=False)
        rank = int(np.sum(singular > singular[0] * 1e-8)) if len(singular) and singular[0] > 0 else 0
        return singular, axes[: max(1, min(most, rank))]
    eigenvalues, vectors = np.linalg.eigh(z @ z.T)
    order = np.argsort(eigenvalues)[::-1]
    eigenvalues, vectors = np.clip(eigenvalues[order], 0.0, None), vectors[:, order]
    singular = np.sqrt(eigenvalues)
    # eigenvalues are exact to ~1e-16 of the largest: a null-space axis shows as ~1e-8 of the top singular
    # value, so the cut is at 1e-6 here (variance 1e-12 of the top axis's: zero for a distance)
    rank = int(np.sum(singular > singular[0] * 1e-6)) if singular[0] > 0 else 0
    k = max(1, min(most, rank))
    axes = vectors[:, :k].T @ z
    axes /= np.where(singular[:k] > 0, singular[:k], 1.0)[:, None]
    return singular, axes


def mahalanobis(
    adjustment: CovariateResidualizer, axes: dict[str, np.ndarray], table: pd.DataFrame
) -> np.ndarray:
    """Mahalanobis distance of the rows' covariate-adjusted, standardised features to a training cohort, in
    the space of its first principal components."""
    z = (adjustment.transform(table) - axes["mean"]) / axes["scale"]
    scores = z @ axes["axes"].T
    return np.sqrt(np.sum(scores**2 / axes["variances"], axis=1))


def explanation_models(
    training: pd.DataFrame | None, result: Any
) -> tuple[CovariateResidualizer | None, dict[str, np.ndarray] | None]:
    """What explains a new patient's prediction and places them relative to the training cohort (never what
    makes the prediction): the whole cohort's covariate model, and its principal axes with ``reference``, each
    training subject's distance from the axes (and covariate model) fitted *without* them in the first
    repeat's outer folds — a patient is compared with subjects the axes had not seen (in-sample distances
    would be optimistic). (None, None) without the training table."""
    if training is None:
        return None, None
    covariates, categorical = list(result.covariates), list(result.categorical)
    impute = imputed_columns(result.feature_columns)
    adjustment, axes = _distance_axes(training, covariates, categorical, impute)
    reference = np.full(len(training), np.nan)
    for fold in (f for f in result.folds if f.repeat == 0):
        fold_adjustment, fold_axes = _distance_axes(
            training.iloc[fold.train], covariates, categorical, impute
        )
        reference[fold.test] = mahalanobis(fold_adjustment, fold_axes, training.iloc[fold.test])
    return adjustment, {**axes, "reference": np.sort(reference)}


def _without_feature_names(model: Any) -> Any:
    if not isinstance(model, AffineDecision):
        return model
    design = copy.copy(model.residualizer)
    design.feature_columns_ = None
    design.feature_names_in_ = None
    return dataclasses.replace(model, residualizer=design)


def linear_npz(model: EnsembleModel) -> bytes:
    """A linear ensemble as an ``.npz`` archive: ``weights`` (models x features), ``covariate_weights``
    (models x design columns), ``intercepts`` (models) and ``meta.json`` (columns, covariate coding with
    each fold's training levels, calibration, provenance). Fold ``i`` decides
    ``x . weights[i] - design_i(covariates) . covariate_weights[i] + intercepts[i]``, the design being
    ``[1, numeric covariates, one-hot(categorical) without the first training level]``.
    Written by hand rather than with ``np.savez`` so that entries carry no timestamp (reproducible bytes)."""
    folds: list[AffineDecision] = model.models  # type: ignore[assignment]
    design = folds[0].residualizer
    meta = {
        "format": LINEAR_FORMAT,
        "feature_columns": model.feature_columns,
        "covariates": list(design.covariates),
        "categorical": list(design.categorical),
        "levels": [m.residualizer.levels_ for m in folds],
        "design_columns": [_design_columns(m.residualizer) for m in folds],
        "calibration": list(model.calibration),
        "info": model.info,
    }
    if model.adjustment is not None:
        meta["adjustment_levels"] = model.adjustment.levels_
        meta["adjustment_impute"] = list(model.adjustment.impute)
    arrays = {
        "weights": np.vstack([m.weights for m in folds]),
        "covariate_weights": np.vstack([np.asarray(m.covariate_weights, float) for m in folds]),
        "intercepts": np.asarray([m.intercept for m in folds], dtype=float),
    }
    impute = list(getattr(design, "impute", ()))
    if impute:  # each fold's training means of the columns that may be missing (clinical predictors)
        meta["impute"] = impute
        arrays["fill"] = np.vstack([m.residualizer.fill_ for m in folds])
        if model.adjustment is not None:
            arrays["adjustment_fill"] = model.adjustment.fill_
    if model.adjustment is not None:  # the whole-cohort covariate model (design x features)
        arrays["adjustment_coef"] = model.adjustment.coef_
    if model.distance is not None:  # principal axes + out-of-sample reference distances (src.predict)
        arrays.update({f"distance_{k}": v for k, v in model.distance.items()})
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        entries = [("meta.json", json.dumps(meta, sort_keys=True, default=_json_number).encode())]
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(array, dtype=float), allow_pickle=False)
            entries.append((f"{name}.npy", buffer.getvalue()))
        for name, content in entries:
            _write_entry(target, name, content)
    return out.getvalue()


def _design_columns(residualizer: CovariateResidualizer) -> list[str]:
    columns = ["intercept"]
    for name in residualizer.covariates:
        if name in residualizer.categorical:
            columns += [f"{name}={level}" for level in residualizer.levels_[name][1:]]
        else:
            columns.append(name)
    return columns


def _json_number(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _write_entry(target: zipfile.ZipFile, name: str, content: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    info.external_attr = 0o644 << 16
    target.writestr(info, content)


def read_linear_npz(path: str | Path) -> EnsembleModel:
    """Rebuild a linear ensemble from :func:`linear_npz`'s file; numpy refuses object arrays
    (``allow_pickle=False``), so nothing in the file can run code."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            meta = json.loads(archive["meta.json"])
            weights, covariate_weights, intercepts = (
                np.asarray(archive[name], dtype=float)
                for name in ("weights", "covariate_weights", "intercepts")
            )
            distance = {
                name.removeprefix("distance_"): np.asarray(archive[name], dtype=float)
                for name in archive.files
                if name.startswith("distance_")
            } or None
            adjustment_coef, fill, adjustment_fill = (
                np.asarray(archive[name], dtype=float) if name in archive.files else None
                for name in ("adjustment_coef", "fill", "adjustment_fill")
            )
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise ModelIntegrityError(f"model file {path} is not a linear ensemble archive ({err})") from err
    n_models, n_features = weights.shape
    if (
        meta.get("format") != LINEAR_FORMAT
        or n_features != len(meta["feature_columns"])
        or intercepts.shape != (n_models,)
        or covariate_weights.shape[0] != n_models
        or len(meta["levels"]) != n_models
    ):
        raise ModelIntegrityError(
            f"model file {path}: arrays and meta.json do not agree ({meta.get('format')})"
        )
    impute = list(meta.get("impute", []))
    positions = [meta["feature_columns"].index(c) for c in impute if c in meta["feature_columns"]]
    if len(positions) != len(impute) or (impute and (fill is None or fill.shape != (n_models, len(impute)))):
        raise ModelIntegrityError(f"model file {path}: the imputation arrays and meta.json do not agree")
    folds = []
    for i in range(n_models):
        # design only (names are shared by EnsembleModel): only what an affine model keeps
        design = CovariateResidualizer.from_parts(
            meta["covariates"],
            meta["categorical"],
            meta["levels"][i],
            [],
            impute_positions=positions,
            fill=fill[i] if impute else None,
            impute=impute,
        )
        design.n_features_in_ = len(meta["covariates"]) + n_features
        # no covariates: nothing is regressed out and the fold has no design at all
        if covariate_weights.shape[1] != (len(_design_columns(design)) if meta["covariates"] else 0):
            raise ModelIntegrityError(f"model file {path}: fold {i} has a design of the wrong width")
        folds.append(AffineDecision(weights[i], covariate_weights[i], float(intercepts[i]), design))
    adjustment = None
    if adjustment_coef is not None:
        adjustment = CovariateResidualizer.from_parts(
            meta["covariates"],
            meta["categorical"],
            meta["adjustment_levels"],
            [*meta["covariates"], *meta["feature_columns"]],
            adjustment_coef,
            impute_positions=[meta["feature_columns"].index(c) for c in meta.get("adjustment_impute", [])],
            fill=adjustment_fill,
            impute=meta.get("adjustment_impute", []),
        )
    slope, intercept = meta["calibration"]
    return EnsembleModel(
        folds,
        meta["feature_columns"],
        meta["covariates"],
        (float(slope), float(intercept)),
        meta["info"],
        adjustment,
        distance,
    )


def model_file(folder: str | Path) -> Path:
    """The model file of a saved model folder (``model.npz`` or ``model.skops``)."""
    folder = Path(folder)
    for name in (LINEAR_MODEL_FILE, MODEL_FILE):
        if (folder / name).is_file():
            return folder / name
    return folder / MODEL_FILE


def canonical_skops(data: bytes) -> bytes:
    """The same skops file with reproducible bytes: skops names its arrays and memo entries after
    ``id()`` of the objects, and zip entries carry the current time, so two dumps of one model differ.
    Here ids are renumbered in order of appearance and timestamps fixed, so that the same config gives a
    byte-identical model file (and sha256) whatever run made it, resumed from checkpoints or not. No skops
    option does this."""
    source = zipfile.ZipFile(io.BytesIO(data))
    schema = json.loads(source.read("schema.json"))
    ids: dict[str, int] = {}

    def renumber(old: Any) -> int:
        return ids.setdefault(str(old), len(ids))

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            out = {k: walk(v) for k, v in node.items()}
            if node.get("__loader__") == "JsonNode":
                # a str/int/float: whether two equal values are one object or two (a string read from a
                # config or from a checkpoint) changes nothing once loaded, so each gets its own number
                out["__id__"] = renumber(f"json-{len(ids)}")  # a key no skops id can have
            elif "__id__" in out:
                out["__id__"] = renumber(node["__id__"])
            if isinstance(node.get("file"), str) and "." in node["file"]:
                stem, ext = node["file"].split(".", 1)
                out["file"] = f"{renumber(stem)}.{ext}"
            return out
        if isinstance(node, list):
            return [walk(v) for v in node]
        return node

    schema = walk(schema)
    names = {name: name for name in source.namelist() if name != "schema.json"}
    for name in names:
        stem, ext = name.split(".", 1)
        names[name] = f"{renumber(stem)}.{ext}"
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        entries = [("schema.json", json.dumps(schema, sort_keys=True).encode())]
        entries += sorted((new, source.read(old)) for old, new in names.items())
        for name, content in entries:
            _write_entry(target, name, content)
    return out.getvalue()


def read_model_file(path: str | Path, sha256: str | None = None) -> EnsembleModel:
    """Load a model file (``model.npz`` or ``model.skops``): its sha256 checked against ``sha256`` (when
    given) and, for skops, its types against :data:`TRUSTED_TYPES`, *before* anything is built from it.

    Raises
    ------
    ModelIntegrityError
        The file's hash differs from the recorded one (both named), it holds untrusted types (listed), or it
        is not a model file of this project.
    """
    path = Path(path)
    if sha256 is not None:
        if not is_sha256(sha256):
            raise ModelIntegrityError(
                f"model file {path}: the recorded hash {sha256!r} is not a sha256; refusing to load it"
            )
        actual = file_sha256(path)
        if actual != sha256:
            raise ModelIntegrityError(
                f"model file {path} has sha256 {actual}, but training recorded {sha256}: the file was "
                "replaced or corrupted; refusing to load it"
            )
    if path.suffix == ".npz":
        return check_consistent(read_linear_npz(path), path)
    # lazy, and only here: importing skops costs 1-1.7 s (its trusted-type discovery walks every scikit-learn
    # module; benchmarks/import_time.py), which a linear model's .npz never needs
    import skops.io as sio

    untrusted = sorted(set(sio.get_untrusted_types(file=path)) - set(TRUSTED_TYPES))
    if untrusted:
        raise ModelIntegrityError(f"model file {path} holds types this project does not trust: {untrusted}")
    model = sio.load(path, trusted=TRUSTED_TYPES)
    if not isinstance(model, EnsembleModel):
        raise ModelIntegrityError(f"model file {path} holds a {type(model).__name__}, not an EnsembleModel")
    return check_consistent(model, path)


def is_sha256(value: Any) -> bool:
    """``value`` is a sha256 hex digest (64 lower-case hex digits)."""
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


def check_consistent(model: EnsembleModel, path: str | Path) -> EnsembleModel:
    """Refuse a model that no training run of this project can have written, whatever its hash says.

    The hash proves only that the file is the one whose hash was recorded beside it; someone who can edit
    the file can edit the record too. What training guarantees is checked here: at least one fold model,
    unique feature names, a Platt calibration of two finite numbers with a slope >= 0 (a larger decision
    score never means a lower probability: a negated calibration flips every decision and prints its
    intervals upside down), and a sorted, finite reference of training distances.
    """
    problems = []
    if not model.models:
        problems.append("no fold models")
    if len(set(model.feature_columns)) != len(model.feature_columns):
        problems.append("duplicate feature names")
    try:
        slope, intercept = (float(v) for v in model.calibration)
    except (TypeError, ValueError):
        slope, intercept = float("nan"), float("nan")
    if not (np.isfinite(slope) and np.isfinite(intercept)):
        problems.append(f"calibration {model.calibration!r} is not two finite numbers")
    elif slope < 0:
        problems.append(f"calibration slope {slope:g} is negative (P would fall as scores rise)")
    reference = (model.distance or {}).get("reference")
    if reference is not None:
        reference = np.asarray(reference, float)
        if not np.all(np.isfinite(reference)) or np.any(np.diff(reference) < 0):
            problems.append("the training distance reference is not sorted and finite")
    if problems:
        raise ModelIntegrityError(
            f"model file {path} is internally inconsistent ({'; '.join(problems)}): training does not write "
            "such a model; refusing to use it"
        )
    return model


def train_metrics(train_dir: str | Path) -> dict[str, Any]:
    """The ``metrics.json`` of a training output folder (its provenance holds the model's sha256)."""
    path = Path(train_dir) / "metrics.json"
    if not path.is_file():
        raise MissingInputError(f"{path} not found: train first (`python -m src.train` or `dvc repro`)")
    try:
        metrics = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelIntegrityError(f"{path} is not valid JSON ({err}): train again") from err
    if not isinstance(metrics, dict):
        raise ModelIntegrityError(f"{path} does not hold a mapping: train again")
    return metrics


def recorded_sha256(train_dir: str | Path) -> str:
    """The model sha256 that training recorded in ``metrics.json``; a missing, null or malformed hash is an
    error (a model is never used unverified)."""
    path = Path(train_dir) / "metrics.json"
    provenance = train_metrics(train_dir).get("provenance")
    sha256 = provenance.get("model_sha256") if isinstance(provenance, dict) else None
    if not is_sha256(sha256):
        raise ModelIntegrityError(
            f"{path}: provenance.model_sha256 is {sha256!r}, not a sha256, so the model in "
            f"{Path(train_dir) / 'model'} cannot be verified; refusing to use it (train again)"
        )
    return sha256


def load_trained_model(train_dir: str | Path) -> tuple[EnsembleModel, str]:
    """The locked model of a training output folder, verified against the sha256 its metrics.json records
    (which must be there), and that hash."""
    sha256 = recorded_sha256(train_dir)
    return load_model(Path(train_dir) / "model", sha256), sha256


def load_model(folder: str | Path, sha256: str | None = None, allow_pickle: bool = False) -> EnsembleModel:
    """Load a model saved with :meth:`EnsembleModel.save` (verified with :func:`read_model_file`).

    A legacy ``model.joblib`` (pickle: loading it can run any code the file holds) is refused unless
    ``allow_pickle`` is set explicitly, for a model you made yourself.
    """
    folder = Path(folder)
    path = model_file(folder)
    if path.is_file():
        model = read_model_file(path, sha256)
    elif (folder / LEGACY_MODEL_FILE).is_file():
        if not allow_pickle:
            raise ModelIntegrityError(
                f"{folder / LEGACY_MODEL_FILE} is a pickle (from an older version): loading it could run "
                "code. Retrain, or load it with allow_pickle=True only if you made it yourself"
            )
        model = joblib.load(folder / LEGACY_MODEL_FILE)
    else:
        raise MissingInputError(f"no model at {path}: train first (`python -m src.train` or `dvc repro`)")
    columns = json.loads((folder / "columns.json").read_text())
    if columns["features"] != model.feature_columns:
        raise ModelIntegrityError(f"{folder}: columns.json does not match the saved model")
    return model
