"""What ``src.predict`` scores, turned into the feature table the model was trained on.

The input is one patient's GM map, a BIDS-style cohort folder of patients without outcomes, or a feature
table. Images go through the same loader checks (grid, confinement), the same plausibility checks
(:mod:`src.data.plausibility`) and the same feature extraction
(:func:`~src.features.extract.build_feature_table` with the experiment's feature set) as the training cohort,
so a patient's features are computed exactly as the training subjects' were.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pandas as pd

from src.config.settings import DataSettings, FeaturesSettings, PatientSettings
from src.data.clinical import ClinicalVariable
from src.data.cohorts import declared_clinical
from src.data.contract import DEFAULT_SPACE
from src.data.loader import Cohort, ImageLayout, load_cohort, single_image_cohort
from src.data.plausibility import PlausibilityBounds, check_gm_maps
from src.features.extract import FeatureSet, build_feature_table
from src.features.tables import read_feature_table
from src.utils.errors import MissingInputError, UserInputError

OUTCOME_COLUMNS = ("response", "outcome", "madrs_baseline", "madrs_24h", "treatment")
TABLE_SUFFIXES = (".parquet", ".csv", ".tsv")


def read_patient_table(path: str | Path) -> pd.DataFrame:
    """A table of patients to score (``.parquet``, ``.csv`` or ``.tsv``): ``participant_id``, the model's
    covariates and feature columns; outcome and treatment columns are optional (and ignored)."""
    path = Path(path)
    if not path.is_file():
        raise MissingInputError(f"input table {path} not found")
    if path.suffix == ".parquet":
        table = read_feature_table(path)  # our feature tables, also packed ones, or a user's parquet
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


def is_image(path: Path) -> bool:
    """``path`` names a NIfTI image (``.nii``, ``.nii.gz``)."""
    return path.name.endswith((".nii", ".nii.gz"))


def _folder_cohort(
    folder: Path,
    data: DataSettings,
    tissues: tuple[str, ...],
    clinical: tuple[ClinicalVariable, ...],
    images_needed: bool,
) -> Cohort:
    """A cohort folder of patients (participants.tsv without outcomes + derivatives), read with the data
    config's layout, pipeline, space and grid policy; its clinical predictors validated."""
    images = ImageLayout(data.layout, data.pipeline, data.space or DEFAULT_SPACE, data.on_grid_mismatch)
    options: dict[str, Any] = {
        "name": folder.name,
        "images": images,
        "outcome": data.outcome,
        "require_outcome": False,
        "clinical": clinical,
    }
    listed = load_cohort(folder, with_images=False, **options)
    if not images_needed:
        return listed
    # TIV: participants.tsv's column, CAT12's reports, or GM + WM + CSF as for training
    tiv_maps = () if "tiv" in listed.participants or images.naming == "cat12" else ("WM", "CSF")
    return load_cohort(folder, tissues=tuple(dict.fromkeys(("GM", *tissues, *tiv_maps))), **options)


def patient_features(
    path: str | Path,
    *,
    data: DataSettings,
    features: FeaturesSettings,
    patient: PatientSettings | None = None,
    bounds: PlausibilityBounds | None = None,
    n_jobs: int = 1,
) -> pd.DataFrame:
    """The feature table of the patients in ``path`` (no outcome columns).

    Parameters
    ----------
    path : path
        A GM map (``.nii``/``.nii.gz``; covariates from ``patient``), a cohort folder, or a feature table.
    data, features : DataSettings, FeaturesSettings
        The experiment's data and feature-set settings.
    patient : PatientSettings, optional
        Covariates of a single image (``participant_id``, ``age``, ``sex``, ``site``, ``tiv``).
    bounds : PlausibilityBounds, optional
        The image plausibility bounds (``data.plausibility``).
    n_jobs : int
        Workers for the feature extraction.

    Returns
    -------
    DataFrame
        One row per patient: ``participant_id``, covariates and feature columns.
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"input {path} not found")
    if path.is_file() and path.suffix in TABLE_SUFFIXES:
        return read_patient_table(path)
    if not (path.is_dir() or is_image(path)):
        raise UserInputError(
            f"input {path}: give a GM map (.nii, .nii.gz), a cohort folder or a feature table "
            f"({', '.join(TABLE_SUFFIXES)})"
        )
    feature_set = FeatureSet.from_settings(features)
    if feature_set.kind == "table":
        raise UserInputError(
            f"input {path}: feature set {feature_set.name!r} comes from regional tables, not images; give "
            "the patients' regional table (input=<table>)"
        )
    clinical = declared_clinical(data) if feature_set.uses_clinical else ()
    if path.is_dir():
        cohort = _folder_cohort(path, data, feature_set.tissues, clinical, feature_set.uses_images)
    elif not feature_set.uses_images:
        raise UserInputError(
            f"input {path}: feature set {feature_set.name!r} holds clinical predictors only; give the "
            "patients' participants.tsv folder or feature table, not an image"
        )
    else:
        patient = patient or PatientSettings()
        row = {k: v for k, v in dataclasses.asdict(patient).items() if k != "clinical"}
        unknown = sorted(set(patient.clinical) - {v.name for v in clinical})
        if unknown:
            raise UserInputError(
                f"patient.clinical: {unknown} are not clinical predictors of feature set "
                f"{feature_set.name!r} "
                f"(declared: {[v.name for v in clinical]})"
            )
        cohort = single_image_cohort(
            path,
            {**row, **patient.clinical},  # the patient's row of participants.tsv
            tissues=feature_set.tissues,
            on_grid_mismatch=data.on_grid_mismatch,
            clinical=clinical,
        )
    if feature_set.uses_images:
        check_gm_maps(cohort, bounds or PlausibilityBounds())
    table, _ = build_feature_table(cohort, feature_set, n_jobs=n_jobs, clinical=clinical)
    return table.drop(columns=[c for c in OUTCOME_COLUMNS if c in table.columns])
