"""Reading the feature tables that ``src.features.build`` writes (one parquet per cohort and feature set).

The one place a feature table is looked up, read and checked before training, evaluation or prediction
use it: a missing table says how to build it; a training table must hold its covariates, outcomes 0/1 and no
missing value (the error names the subject and the column).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from src.data.clinical import is_clinical_column
from src.data.contract import TABLE_META_COLUMNS
from src.utils.errors import MissingInputError, UserInputError


def feature_table_path(features_root: str | Path, feature_set: str, cohort: str) -> Path:
    """``<paths.features>/<feature set>/<cohort>.parquet``."""
    return Path(features_root) / feature_set / f"{cohort}.parquet"


def read_feature_table(path: str | Path, cohort: str | None = None) -> pd.DataFrame:
    """The table at ``path``; a clear error saying how to build it when it is not there."""
    path = Path(path)
    if not path.is_file():
        which = f" (cohort {cohort!r} of the data config)" if cohort else ""
        raise MissingInputError(
            f"feature table {path} not found{which}: build it with `python -m src.features.build "
            f"features={path.parent.name}` (or `dvc repro`), with the same data= as training"
        )
    return pd.read_parquet(path)


def feature_columns(table: pd.DataFrame) -> list[str]:
    """The feature columns of a table: every column that is not a contract meta column."""
    meta = frozenset(TABLE_META_COLUMNS)
    return [c for c in table.columns if c not in meta]


def training_arrays(
    table: pd.DataFrame, covariates: list[str], where: str | Path
) -> tuple[pd.DataFrame, np.ndarray]:
    """(X = covariates + feature columns, y) of a training table, checked: the covariates, ids and outcomes
    present, outcomes 0/1, no missing value (naming the first subject and column concerned) except in the
    clinical predictors (imputed inside the folds)."""
    missing = [c for c in [*covariates, "participant_id", "response"] if c not in table.columns]
    if missing:
        raise UserInputError(f"{where}: column(s) {missing} missing")
    labels = table["response"]
    wrong = ~labels.isin([0, 1])
    if wrong.any():
        raise UserInputError(
            f"{where}: response must be 0 or 1; subject(s) {table.loc[wrong, 'participant_id'].tolist()[:5]} "
            f"have {labels[wrong].unique().tolist()[:5]}"
        )
    X = table[[*covariates, *feature_columns(table)]]
    hole = first_missing(table, X[[c for c in X.columns if not is_clinical_column(c)]])
    if hole is not None:
        count, subject, column = hole
        raise UserInputError(
            f"{where}: {count} missing value(s), e.g. subject {subject}, column {column!r}; rebuild the "
            "table or remove the subject"
        )
    return X, labels.to_numpy(dtype=int)


def continuous_outcome(
    table: pd.DataFrame, where: str | Path, target: str = "percent_reduction"
) -> np.ndarray:
    """The continuous outcome of a training table (its ``outcome`` column, ``data.outcome.target`` when the
    table was built), checked: present (tables built before it existed are refused with the fix), numbers,
    none missing (naming the subject), not constant."""
    if "outcome" not in table.columns:
        raise UserInputError(
            f"{where}: no 'outcome' column (a table built before continuous outcomes existed); rebuild it "
            "with "
            "`python -m src.features.build` (or `dvc repro`)"
        )
    values = pd.to_numeric(table["outcome"], errors="coerce")
    hole = values.isna() | ~np.isfinite(values.to_numpy(dtype=float, na_value=np.nan))
    if hole.any():
        raise UserInputError(
            f"{where}: continuous outcome ({target}) missing for {int(hole.sum())} subject(s), e.g. "
            f"{table.loc[hole, 'participant_id'].iloc[0]}; give it in participants.tsv or remove the subject"
        )
    y = values.to_numpy(dtype=float)
    if np.ptp(y) == 0:
        raise UserInputError(f"{where}: the continuous outcome ({target}) is {y[0]:g} for everyone")
    return y


def first_missing(table: pd.DataFrame, X: pd.DataFrame) -> tuple[int, str, str] | None:
    """(number of missing values in ``X``, the first such subject of ``table``, its column), or None."""
    holes = X.isna().to_numpy()
    if not holes.any():
        return None
    row, column = np.argwhere(holes)[0]
    return int(holes.sum()), str(table["participant_id"].iloc[row]), str(X.columns[column])
