"""The locked final model: all R x K outer-fold pipelines, decision = their mean, Platt-calibrated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from src.models.linear import AffineDecision
from src.utils.errors import UserInputError
from src.utils.io import atomic_path, write_json_atomic, write_text_atomic

MODEL_FILE = "model.joblib"


class ColumnMismatchError(UserInputError):
    """A table's columns do not match the columns the model was trained on."""


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
    """

    META_COLUMNS = frozenset({"participant_id", "treatment", "response"})

    def __init__(
        self,
        models: list[Pipeline],
        feature_columns: list[str],
        covariates: list[str],
        calibration: tuple[float, float],
        info: dict[str, Any] | None = None,
    ) -> None:
        self.models = models
        self.feature_columns = list(feature_columns)
        self.covariates = list(covariates)
        self.calibration = calibration
        self.info = info or {}

    @classmethod
    def from_result(cls, result: Any, info: dict[str, Any] | None = None) -> EnsembleModel:
        """Lock a :func:`run_nested_cv` result: its fold models, Platt-fitted on OOF ensemble scores."""
        scores = result.ensemble_scores().reshape(-1, 1)
        platt = LogisticRegression(C=np.inf).fit(scores, result.y)
        ids = np.asarray(result.ids)
        # which subjects each fold model never saw: needed for out-of-fold permutation importance
        info = {**(info or {}), "fold_test_ids": [ids[f.test].tolist() for f in result.folds]}
        return cls(
            result.models,
            result.feature_columns,
            result.covariates,
            (float(platt.coef_[0, 0]), float(platt.intercept_[0])),
            info,
        )

    @property
    def input_columns(self) -> list[str]:
        return [*self.covariates, *self.feature_columns]

    def check_columns(self, table: pd.DataFrame) -> pd.DataFrame:
        known = set(self.input_columns) | self.META_COLUMNS  # built once: wide voxel tables
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

    def decision_matrix(self, table: pd.DataFrame) -> np.ndarray:
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

    def predict_proba(self, table: pd.DataFrame) -> np.ndarray:
        """Platt-calibrated probability of the positive class, shape (n, 2) as in scikit-learn."""
        p = self.calibrate(self.decision_function(table))
        return np.column_stack([1 - p, p])

    def calibrate(self, decision: np.ndarray) -> np.ndarray:
        """Platt probability of the positive class for ensemble decision scores already computed."""
        slope, intercept = self.calibration
        return 1.0 / (1.0 + np.exp(-(slope * np.asarray(decision, dtype=float) + intercept)))

    def predict(self, table: pd.DataFrame) -> np.ndarray:
        return (self.decision_function(table) > 0).astype(int)

    def save(self, folder: str | Path, config_yaml: str | None = None) -> Path:
        """Write ``model.joblib``, ``columns.json`` and the resolved ``config.yaml`` atomically."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / MODEL_FILE) as tmp:
            joblib.dump(self, tmp, compress=3)
        write_json_atomic(
            folder / "columns.json", {"covariates": self.covariates, "features": self.feature_columns}
        )
        if config_yaml is not None:
            write_text_atomic(folder / "config.yaml", config_yaml)
        return folder / MODEL_FILE


def load_model(folder: str | Path) -> EnsembleModel:
    """Load a model saved with :meth:`EnsembleModel.save`."""
    path = Path(folder) / MODEL_FILE
    if not path.is_file():
        raise FileNotFoundError(f"no model at {path}")
    model = joblib.load(path)
    columns = json.loads((Path(folder) / "columns.json").read_text())
    if columns["features"] != model.feature_columns:
        raise ValueError(f"{folder}: columns.json does not match the saved model")
    return model
