"""Clinical predictors from the user's own participants.tsv columns (``data.clinical``).

The data config declares which columns are clinical predictors and of what kind, with their allowed values::

    clinical:
      madrs_baseline: {kind: numeric, range: [0, 60]}
      bmi:            {kind: numeric, range: [12, 70]}
      prior_failed:   {kind: ordinal, range: [0, 20]}          # an ordered count
      anxious:        {kind: binary}                           # codes 0/1 (default)
      fh_alcohol:     {kind: binary, codes: [no, yes]}         # first code -> 0, second -> 1
      medication:     {kind: categorical, codes: [ssri, snri, other, none]}

Every declared column is validated in every cohort like the contract's columns: a value outside the range or
the code set is an error naming the cohort, the subject and the column; a declared column that a cohort does
not have is an error when the cohort is read (before any feature or model work). A missing value (empty,
``n/a``) is allowed: it is imputed inside the cross-validation folds, from training rows only
(:mod:`src.validation.kernels`, :class:`src.models.impute.FeatureImputer`).

As features (:func:`clinical_features`), numeric, binary and ordinal columns are one column each
(``clin_<name>``); a categorical column is one indicator column per declared code (``clin_<name>=<code>``),
from the declared code set — not from the data, so the coding is the same in every fold and cohort and
fits nothing. A code that the training cohort never had is all-zero in training: its weight is exactly zero
and it shifts no score (:func:`unseen_codes` reports it at evaluation and prediction).

The outcome's own columns (the follow-up score, the response label) can never be predictors: refused by name.
Nor can a copy of them under another name: :func:`check_outcome_copies` refuses, in every cohort with
outcomes, a column whose values nearly determine the follow-up score, the relative reduction or the label
(thresholds :data:`MAX_RANK_CORRELATION`, :data:`MAX_SINGLE_AUC`), unless its declaration says
``allow_outcome_like: true`` (kept in the config, so in every run's logged params).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from src.utils.errors import UserInputError

KINDS: tuple[str, ...] = ("numeric", "binary", "ordinal", "categorical")
# the magnitude a numeric clinical value without a declared range may have: beyond it a value is a broken cell
# (1e308 passes as a number, then overflows the scaling inside the folds) rather than a measurement
MAX_UNDECLARED = 1e9
PREFIX = "clin_"
MISSING = ("", "n/a", "N/A", "NA", "nan", "NaN")  # a missing value, as participants.tsv is read
# columns that are never predictors: identifiers, the label and what defines it, the treatment, the images
_NEVER = ("participant_id", "response", "treatment", "gm_file", "wm_file", "csf_file")


class ClinicalError(UserInputError):
    """A clinical declaration or value is invalid; the message names the cohort, subject and column."""


@dataclass(frozen=True)
class ClinicalVariable:
    """One declared clinical predictor.

    Parameters
    ----------
    name : str
        The participants.tsv column.
    kind : {"numeric", "binary", "ordinal", "categorical"}
    low, high : float, optional
        Allowed range of a numeric or ordinal value (inclusive).
    codes : tuple of str
        Allowed codes: a binary column's two codes (0 then 1), an ordinal column's codes in order (coded
        0, 1, ...), a categorical column's levels. Empty for numeric (and for an ordinal given as numbers).
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    codes: tuple[str, ...] = ()
    allow_outcome_like: bool = False

    @property
    def feature_columns(self) -> list[str]:
        """The feature-table columns of this variable."""
        if self.kind == "categorical":
            return [f"{PREFIX}{self.name}={code}" for code in self.codes]
        return [f"{PREFIX}{self.name}"]


def clinical_variables(
    declared: Mapping[str, Any] | None, outcome_columns: Sequence[str] = ()
) -> tuple[ClinicalVariable, ...]:
    """The ``data.clinical`` declaration parsed and checked (one-line errors naming the column).

    Parameters
    ----------
    declared : mapping
        Column name -> ``{kind, range, codes}``.
    outcome_columns : sequence of str
        The outcome's columns that must not be predictors (the follow-up score): refused by name, as are
        ``response``, ``treatment`` and the identifiers. The baseline score is a pre-treatment value and
        may be declared (baseline severity is a clinical predictor of ketamine response).
    """
    out = []
    for name, spec in (declared or {}).items():
        name = str(name)
        where = f"data.clinical.{name}"
        if name in _NEVER or name in outcome_columns:
            why = "the outcome is derived from it" if name in outcome_columns or name == "response" else ""
            raise ClinicalError(
                f"{where}: column {name!r} cannot be a clinical predictor"
                + (f" ({why}: leakage)" if why else " (an identifier, the treatment or an image path)")
            )
        if not isinstance(spec, Mapping):
            raise ClinicalError(f"{where}: expected a mapping such as {{kind: numeric, range: [0, 60]}}")
        unknown = sorted(set(spec) - {"kind", "range", "codes", "allow_outcome_like"})
        if unknown:
            raise ClinicalError(
                f"{where}: unknown key(s) {unknown} (allowed: kind, range, codes, allow_outcome_like)"
            )
        allow = spec.get("allow_outcome_like", False)
        if not isinstance(allow, bool):
            raise ClinicalError(f"{where}: allow_outcome_like must be true or false, got {allow!r}")
        kind = spec.get("kind")
        if kind not in KINDS:
            raise ClinicalError(f"{where}: kind must be one of {list(KINDS)}, got {kind!r}")
        low = high = None
        if spec.get("range") is not None:
            bounds = list(spec["range"])
            if (
                len(bounds) != 2
                or not all(_is_number(b) for b in bounds)
                or float(bounds[0]) > float(bounds[1])
            ):
                raise ClinicalError(
                    f"{where}: range must be [low, high] with low <= high, got {spec['range']}"
                )
            low, high = float(bounds[0]), float(bounds[1])
        codes = tuple(str(c) for c in (spec.get("codes") or ()))
        if len(set(codes)) != len(codes):
            raise ClinicalError(f"{where}: codes {list(codes)} repeat a value")
        if kind == "binary":
            codes = codes or ("0", "1")
            if len(codes) != 2:
                raise ClinicalError(f"{where}: a binary column has exactly two codes, got {list(codes)}")
        if kind == "categorical" and len(codes) < 2:
            raise ClinicalError(
                f"{where}: a categorical column needs its codes (at least two), got {list(codes)}"
            )
        if kind == "numeric" and codes:
            raise ClinicalError(f"{where}: a numeric column takes a range, not codes")
        if kind in ("binary", "categorical") and low is not None:
            raise ClinicalError(f"{where}: a {kind} column takes codes, not a range")
        if kind == "ordinal" and codes and low is not None:
            raise ClinicalError(f"{where}: an ordinal column takes either ordered codes or a numeric range")
        out.append(ClinicalVariable(name, kind, low, high, codes, allow))
    return tuple(out)


# A predictor this close to the outcome is a copy of it (the follow-up score renamed, the reduction itself, a
# rescaled or noisy copy), not a clinical finding: the strongest pre-treatment predictors of antidepressant or
# ketamine response reported (baseline severity, early improvement aside) reach AUCs of ~0.6-0.75 and rank
# correlations with the follow-up score of ~0.3-0.6, far below these; a measurement of the follow-up itself,
# even with noise, is above them. Both statistics are computed on the cohort's own rows with outcomes.
MAX_RANK_CORRELATION = 0.9
MAX_SINGLE_AUC = 0.95
# rows with a value and an outcome below which a statistic is not judged: chance alone reaches the thresholds
# in small cohorts (a null AUC's SD is ~0.13 at 20 patients, ~0.11 at 30, so 0.95 is ~4 SD away there; a null
# Spearman rho reaches 0.9 with p < 1e-7 at 20). A renamed follow-up score has |rho| = 1 at any size.
MIN_ROWS_FOR_CORRELATION = 20
MIN_ROWS_FOR_AUC = 30


def check_outcome_copies(
    coded: pd.DataFrame,
    variables: Sequence[ClinicalVariable],
    followup: pd.Series,
    reduction: pd.Series,
    label: pd.Series,
    where: str,
    baseline: str | None = None,
) -> list[str]:
    """Refuse a clinical predictor that is a near-copy of the outcome or its ingredients.

    For each declared variable (a categorical one as each of its indicators) the rows with a value and an
    outcome give the absolute Spearman correlation with the follow-up score and with the relative reduction,
    and the single-column AUC for the label (taken either way round). One of them at or above its threshold
    (:data:`MAX_RANK_CORRELATION`, :data:`MAX_SINGLE_AUC`) is a :class:`ClinicalError` naming the column and
    the statistic, unless the variable is declared ``allow_outcome_like: true``; then the finding is returned
    (for a warning) instead. ``coded``: :func:`check_clinical`'s table, indexed like the outcome series;
    ``baseline``: the outcome's baseline column, a pre-treatment value by definition (not checked).
    Cohorts below :data:`MIN_ROWS_FOR_CORRELATION` / :data:`MIN_ROWS_FOR_AUC` rows are not judged by that
    statistic."""
    from scipy.stats import spearmanr
    from sklearn.metrics import roc_auc_score

    allowed = []
    for variable in variables:
        if variable.name == baseline:
            continue  # the outcome's pre-treatment ingredient: a predictor by design, never a copy
        values = coded[variable.name]
        columns = (
            {
                code: (values.astype(str) == code).where(values.notna()).astype(float)
                for code in variable.codes
            }
            if variable.kind == "categorical"
            else {None: values.astype(float)}
        )
        for code, column in columns.items():
            rows = column.notna() & followup.notna() & reduction.notna() & label.notna()
            x = column[rows].to_numpy(float)
            if rows.sum() < MIN_ROWS_FOR_CORRELATION or np.ptp(x) == 0:
                continue
            y = label[rows].to_numpy(int)
            found = []
            for target, series in (("the follow-up score", followup), ("the relative reduction", reduction)):
                rho = abs(float(spearmanr(x, series[rows].to_numpy(float)).statistic))
                if rho >= MAX_RANK_CORRELATION:
                    found.append(f"Spearman |rho| = {rho:.2f} with {target}")
            if rows.sum() >= MIN_ROWS_FOR_AUC and len(np.unique(y)) == 2:
                auc = float(roc_auc_score(y, x))
                if max(auc, 1 - auc) >= MAX_SINGLE_AUC:
                    found.append(f"AUC {max(auc, 1 - auc):.2f} for the response label on its own")
            if not found:
                continue
            name = variable.name if code is None else f"{variable.name}={code}"
            finding = (
                f"{where}: clinical column {name!r} nearly determines the outcome ({'; '.join(found)}; "
                f"thresholds |rho| {MAX_RANK_CORRELATION}, AUC {MAX_SINGLE_AUC})"
            )
            if not variable.allow_outcome_like:
                raise ClinicalError(
                    f"{finding}: a copy of the outcome under another name would leak it into the model. "
                    f"Remove it from data.clinical, or declare it with allow_outcome_like: true if it truly "
                    "is measured before treatment"
                )
            allowed.append(finding)
    return allowed


def _is_number(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def check_clinical(
    participants: pd.DataFrame, variables: Sequence[ClinicalVariable], where: str
) -> pd.DataFrame:
    """The declared clinical columns of ``participants`` (as read: strings), checked and coded.

    Numeric and numeric ordinal values become floats, binary codes 0/1, ordinal codes their rank, categorical
    values stay their (stripped) code; a missing value stays missing (NaN). Raises
    :class:`ClinicalError` naming the subject and column for a column the cohort lacks, a value that is not a
    number, outside the range or not a declared code.
    """
    absent = [v.name for v in variables if v.name not in participants.columns]
    if absent:
        raise ClinicalError(
            f"{where}: participants.tsv has no column(s) {absent} declared as clinical predictors in "
            "data.clinical (every cohort needs every declared column; missing values may be left empty)"
        )
    out = {}
    ids = participants["participant_id"].astype(str).to_numpy()
    for variable in variables:
        raw = participants[variable.name]
        given = raw.notna() & ~raw.astype(str).str.strip().isin(MISSING)
        text = raw.where(given).astype(object).map(lambda v: str(v).strip() if isinstance(v, str) else v)
        if variable.codes:
            known = {code: i for i, code in enumerate(variable.codes)}
            wrong = given & ~text.astype(str).isin(list(known))
            if wrong.any():
                row = int(np.flatnonzero(wrong.to_numpy())[0])
                raise ClinicalError(
                    f"{where}: subject {ids[row]} has {raw.iloc[row]!r} in clinical column {variable.name!r} "
                    f"(declared codes: {list(variable.codes)})"
                )
            if variable.kind == "categorical":
                out[variable.name] = text.where(given)
            else:
                out[variable.name] = text.map(known).where(given).astype(float)
            continue
        values = pd.to_numeric(text, errors="coerce")
        values = values.where(~np.isinf(values))  # "inf", "1e999": not a measurement
        wrong = given & values.isna()
        if wrong.any():
            row = int(np.flatnonzero(wrong.to_numpy())[0])
            raise ClinicalError(
                f"{where}: subject {ids[row]} has non-numeric or infinite value {raw.iloc[row]!r} in "
                f"clinical column {variable.name!r} (a finite number is needed; decimal point, not comma)"
            )
        if variable.low is None and variable.high is None and (values.abs() > MAX_UNDECLARED).any():
            row = int(np.flatnonzero((values.abs() > MAX_UNDECLARED).to_numpy())[0])
            raise ClinicalError(
                f"{where}: subject {ids[row]} has {values.iloc[row]:g} in clinical column {variable.name!r}, "
                f"beyond ±{MAX_UNDECLARED:g} (no range declared): declare its range in data.clinical if "
                "such values are real"
            )
        outside = given & (
            (values < (variable.low if variable.low is not None else -np.inf))
            | (values > (variable.high if variable.high is not None else np.inf))
        )
        if outside.any():
            row = int(np.flatnonzero(outside.to_numpy())[0])
            raise ClinicalError(
                f"{where}: subject {ids[row]} has {values.iloc[row]:g} in clinical column {variable.name!r}, "
                f"outside its declared range [{variable.low:g}, {variable.high:g}]"
            )
        out[variable.name] = values.astype(float)
    return pd.DataFrame(out, index=participants.index)


def clinical_features(participants: pd.DataFrame, variables: Sequence[ClinicalVariable]) -> pd.DataFrame:
    """The clinical feature columns of checked participants (:func:`check_clinical`'s coding): one column per
    numeric, binary or ordinal variable, one indicator per declared code of a categorical one; a missing
    value is NaN in every column of its variable (imputed inside the folds)."""
    columns: dict[str, np.ndarray] = {}
    for variable in variables:
        values = participants[variable.name]
        if variable.kind == "categorical":
            missing = values.isna().to_numpy()
            for code, column in zip(variable.codes, variable.feature_columns, strict=True):
                indicator = (values.astype(str) == code).to_numpy(dtype=float)
                indicator[missing] = np.nan
                columns[column] = indicator
        else:
            columns[variable.feature_columns[0]] = values.to_numpy(dtype=float)
    return pd.DataFrame(columns, index=participants.index)


def is_clinical_column(column: str) -> bool:
    """A feature column that holds a clinical predictor (may hold missing values)."""
    return column.startswith(PREFIX)


def imputed_columns(columns: Sequence[str]) -> list[str]:
    """The feature columns whose missing values are imputed inside the folds: the clinical predictors; a
    missing value anywhere else is refused before training."""
    return [c for c in columns if is_clinical_column(c)]


def unseen_codes(training: Mapping[str, int], table: pd.DataFrame) -> dict[str, int]:
    """Indicator columns of categorical codes that ``training`` (column -> number of training subjects with
    the code) never had, with how many rows of ``table`` have them: those subjects' code carries no weight."""
    out = {}
    for column, count in training.items():
        if count == 0 and column in table.columns:
            hits = int(np.nansum(table[column].to_numpy(dtype=float)))
            if hits:
                out[column] = hits
    return out
