"""Writing and reading the feature tables of ``src.features.build`` (one parquet per cohort and feature set).

The one place a feature table is written, looked up, read and checked before training, evaluation or
prediction use it: a missing table says how to build it; a training table must hold its covariates, outcomes
0/1 and no missing value (the error names the subject and the column).

A table is one column per feature, except a wide one (more than :data:`PACK_ABOVE` feature columns, i.e. a
voxel set): parquet keeps a metadata record per column, so merely opening a 2 mm voxel table with 181 k
columns took ~2 s and ~0.9 GB and reading it ~18 s and 2.2 GB. Such a table is stored *packed*: its meta
columns as usual, its features as one fixed-size list column :data:`PACKED_COLUMN` (one list per subject, in
the stored float type — float32 for voxel maps, which are float32 already, so nothing is rounded) and the
feature names, in order, in the file's schema metadata. :func:`read_feature_table` returns both layouts as
the same wide DataFrame (meta columns, then the features).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from src.data.clinical import is_clinical_column
from src.data.contract import TABLE_META_COLUMNS
from src.utils.errors import MissingInputError, UserInputError
from src.utils.io import atomic_path

PACK_ABOVE = 4096  # feature columns; region, clinical and user tables stay one column per feature
PACKED_COLUMN = "__features__"
_PACKED_NAMES = b"ketamine_trd.feature_columns"


def write_feature_table(table: pd.DataFrame, path: str | Path) -> None:
    """Write ``table`` to ``path`` (parquet, zstd) atomically: one column per feature, or packed (see the
    module docstring) when it has more than :data:`PACK_ABOVE` feature columns, all of them floats."""
    path = Path(path)
    features = feature_columns(table)
    dtypes = set(table[features].dtypes) if features else set()
    packed = len(features) > PACK_ABOVE and dtypes <= {np.dtype(np.float32), np.dtype(np.float64)}
    with atomic_path(path) as tmp:
        if not packed:
            table.to_parquet(tmp, index=False, engine="pyarrow", compression="zstd")
            return
        dtype = np.float32 if dtypes == {np.dtype(np.float32)} else np.float64  # never rounded
        values = table[features].to_numpy(dtype=dtype)
        meta = pa.Table.from_pandas(table.drop(columns=features), preserve_index=False)
        column = pa.FixedSizeListArray.from_arrays(pa.array(values.ravel()), len(features))
        out = meta.append_column(PACKED_COLUMN, column)
        metadata = {**(out.schema.metadata or {}), _PACKED_NAMES: json.dumps(features).encode()}
        # the values uncompressed: float maps barely compress (60 vs 69 MB at 2 mm) and zstd made the read 6x
        # slower (0.73 vs 0.12 s)
        codecs = {name: "zstd" for name in meta.column_names} | {PACKED_COLUMN: "none"}
        pq.write_table(out.replace_schema_metadata(metadata), tmp, compression=codecs)


def _read_parquet(path: Path) -> pd.DataFrame:
    """A feature table in either layout as one wide DataFrame."""
    names = (pq.read_schema(path).metadata or {}).get(_PACKED_NAMES)
    if names is None:
        return pd.read_parquet(path)
    stored = pq.read_table(path)
    columns = json.loads(names)
    packed = stored.column(PACKED_COLUMN).combine_chunks()
    width = packed.type.list_size
    if width != len(columns) or packed.null_count:
        raise UserInputError(
            f"feature table {path}: {width} packed values per subject but {len(columns)} feature names, "
            "or a subject without values; rebuild it with `python -m src.features.build`"
        )
    # one copy of the values, writable, in the stored type (float32 for voxel maps), column-major: pandas
    # keeps a frame's columns as the rows of its block, so selecting columns is then a contiguous copy (~1 s
    # for 181 k columns of a row-major block, 0.02 s of this one)
    values = np.array(packed.flatten().to_numpy(zero_copy_only=False).reshape(len(packed), width), order="F")
    meta = stored.drop_columns([PACKED_COLUMN]).to_pandas()
    return pd.concat([meta, pd.DataFrame(values, columns=columns, copy=False)], axis=1, copy=False)


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
    try:
        return _read_parquet(path)
    except UserInputError:
        raise
    except (pa.ArrowException, OSError, ValueError, KeyError, TypeError) as err:
        # a truncated file, a foreign parquet, a packed table with a damaged row: one line naming the file
        first = (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
        raise UserInputError(
            f"feature table {path} cannot be read ({type(err).__name__}: {first}): damaged or not a "
            "feature table of this project; rebuild it with `python -m src.features.build "
            f"features={path.parent.name}` (or `dvc repro`)"
        ) from None


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
    check_informative_clinical(X, where)
    return X, labels.to_numpy(dtype=int)


def check_informative_clinical(X: pd.DataFrame, where: str | Path) -> None:
    """Refuse a clinical predictor of the training table that carries no information: missing for every
    subject, or one value for all who have one (it would be imputed, scaled and weighted as if it did). The
    indicator of a categorical code nobody in training had is left to :func:`unseen_codes` (a declared
    level, weight exactly 0)."""
    for column in X.columns:
        if not is_clinical_column(column) or "=" in column:
            continue
        given = X[column].dropna()
        name = column.removeprefix("clin_")
        if given.empty:
            raise UserInputError(
                f"{where}: clinical predictor {name!r} is missing for every subject of the training "
                "cohort: it carries no information; remove it from data.clinical"
            )
        if given.nunique() == 1:
            raise UserInputError(
                f"{where}: clinical predictor {name!r} is {given.iloc[0]:g} for every subject of the "
                "training cohort who has a value: it carries no information; remove it from data.clinical"
            )


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
