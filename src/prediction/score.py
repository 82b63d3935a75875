"""Per-patient prediction: calibrated probability, an interval from the fold models, the decision.

The locked model is the ensemble of the R x K outer-fold models of the nested CV. A patient's decision score
is their mean; the probability is its Platt calibration, fitted at train time on the *out-of-fold* ensemble
scores of the discovery cohort (never on scores of subjects a model was trained on). The interval shows how
much the fold models disagree about this patient: the central ``coverage`` range of the R x K fold scores,
mapped through the same calibration. It is a spread of models trained on different subsets of the
discovery cohort (an ensemble/bootstrap-like spread), not a confidence interval of a population quantity.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from src.utils.errors import MissingInputError, UserInputError
from src.validation.ensemble import EnsembleModel

OUTCOME_COLUMNS = ("response", "madrs_baseline", "madrs_24h", "treatment")


def read_patient_table(path: str | Path) -> pd.DataFrame:
    """A table of patients to score (``.parquet``, ``.csv`` or ``.tsv``): ``participant_id``, the model's
    covariates and feature columns; outcome and treatment columns are optional (and ignored)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"input table {path} not found")
    if path.suffix == ".parquet":
        table = pd.read_parquet(path)
    elif path.suffix in (".csv", ".tsv"):
        table = pd.read_csv(path, sep="\t" if path.suffix == ".tsv" else ",", dtype={"participant_id": str})
    else:
        raise UserInputError(f"input {path}: a .parquet, .csv or .tsv table is needed, got '{path.suffix}'")
    if "participant_id" not in table.columns:
        raise UserInputError(f"input {path}: no participant_id column")
    duplicated = table["participant_id"][table["participant_id"].duplicated()].tolist()
    if duplicated:
        raise UserInputError(f"input {path}: duplicate participant_id {duplicated[:5]}")
    return table.drop(columns=[c for c in OUTCOME_COLUMNS if c in table.columns])


def top_regions(
    model: EnsembleModel, table: pd.DataFrame, names: dict[str, str] | None = None, k: int = 3
) -> pd.DataFrame:
    """The ``k`` features pushing each patient's score most towards response and towards non-response, as
    ``"<region> (+0.42)"``, from :meth:`EnsembleModel.contributions` (linear models only)."""
    values, _ = model.contributions(table)
    names = names or {}
    rows = []
    for _, row in values.iterrows():
        ordered = row.sort_values()
        rows.append(
            {
                "towards_response": "; ".join(
                    f"{names.get(c, c)} ({v:+.3f})" for c, v in ordered[::-1].head(k).items() if v > 0
                ),
                "towards_non_response": "; ".join(
                    f"{names.get(c, c)} ({v:+.3f})" for c, v in ordered.head(k).items() if v < 0
                ),
            }
        )
    return pd.DataFrame(rows, index=table.index)


def covariate_warnings(model: EnsembleModel, table: pd.DataFrame) -> list[str]:
    """Per patient, where their covariates leave the training cohort's: a numeric covariate outside the
    training range, a category (sex, site) never seen in training. An unseen site gets the reference site's
    covariate adjustment: its scanner offset is not removed, so its scores may be shifted."""
    ranges = model.info.get("training_covariates") or {}
    out = []
    for _, row in table.iterrows():
        notes = []
        for name, allowed in ranges.items():
            value = row.get(name)
            if isinstance(allowed[0], str):
                if str(value) not in allowed:
                    notes.append(f"{name} {value!r} not in training ({', '.join(allowed)})")
            elif not allowed[0] <= float(value) <= allowed[1]:
                notes.append(
                    f"{name} {float(value):g} outside the training range {allowed[0]:g}-{allowed[1]:g}"
                )
        out.append("; ".join(notes))
    return out


def check_settings(threshold: float, coverage: float) -> None:
    """``predict.threshold`` and ``predict.coverage`` are probabilities strictly between 0 and 1."""
    for key, value in (("predict.threshold", threshold), ("predict.coverage", coverage)):
        if not 0 < value < 1:
            raise UserInputError(f"config key {key}={value}: must lie strictly between 0 and 1")


def predict_patients(
    model: EnsembleModel,
    table: pd.DataFrame,
    threshold: float = 0.5,
    coverage: float = 0.95,
    where: str = "input",
    distance_percentile: float = 99.0,
) -> pd.DataFrame:
    """One row per patient: ``participant_id``, ``decision_score`` (mean fold score), ``probability``
    (calibrated P(response)), ``interval_low``/``interval_high`` (the fold models' central ``coverage`` range,
    calibrated), ``fold_agreement`` (share of fold models on the side of the decision), ``distance`` and
    ``distance_percentile`` (to the training cohort, :meth:`EnsembleModel.distance_percentile`; a warning at
    or above ``distance_percentile``), ``warnings`` and ``prediction``
    (``responder`` when the probability reaches ``threshold``)."""
    check_settings(threshold, coverage)
    model.checked_inputs(table, where)
    folds = model.decision_matrix(table)  # (patients, R x K)
    decision = folds.mean(axis=1)
    tail = 100 * (1 - coverage) / 2
    low, high = np.percentile(folds, [tail, 100 - tail], axis=1)
    probability = model.calibrate(decision)
    distance, percentile = model.distance_percentile(table)
    distance_notes = [
        f"features farther from the training cohort than {p:.0f} % of its subjects (Mahalanobis {d:.1f}): "
        "check the scan, its preprocessing and its site"
        if p >= distance_percentile
        else ""
        for d, p in zip(distance, percentile, strict=True)
    ]
    positive = probability >= threshold
    return pd.DataFrame(
        {
            "participant_id": table["participant_id"].astype(str).to_numpy(),
            "decision_score": decision,
            "probability": probability,
            "interval_low": model.calibrate(low),
            "interval_high": model.calibrate(high),
            "fold_agreement": np.mean((folds > 0) == (decision > 0)[:, None], axis=1),
            "prediction": np.where(positive, "responder", "non-responder"),
            "distance": distance,
            "distance_percentile": percentile,
            "warnings": [
                "; ".join(filter(None, [note, far]))
                for note, far in zip(covariate_warnings(model, table), distance_notes, strict=True)
            ],
        }
    )
