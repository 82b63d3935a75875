"""``python -m src.predict +experiment=gm_only input=<path>``: score new patients with the locked model.

The input is one patient's GM map (``.nii``/``.nii.gz``, covariates given as ``patient.age=…
patient.sex=F|M patient.site=… [patient.tiv=…]``), a cohort folder of patients without outcomes
(participants.tsv + derivatives, as the data contract), or a feature table (``.parquet``/``.csv``/``.tsv``).
Images are checked and turned into features exactly as the training cohort's were. The model is the registry
version carrying ``predict.model`` (default: the alias ``src.evaluate`` sets when the external evaluation
passes), else the verified DVC copy of ``${paths.run}/train/model``.

Writes ``${predict.dir}/predictions.csv`` (one row per patient: probability, interval, decision, warnings,
regions) and, with ``predict.card=true``, ``${predict.dir}/cards/<participant_id>.html``.

Example::

    python -m src.predict +experiment=gm_only input=scans/sub-01_label-GM_probseg.nii.gz \
        patient.age=41 patient.sex=F patient.site=exta
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

from src.config.cli import run, start, trained_settings
from src.data.cohorts import discovery_cohort
from src.data.plausibility import PlausibilityBounds
from src.features.tables import read_feature_table
from src.prediction import patient_features, predict_patients
from src.prediction.report import write_outputs
from src.prediction.score import align_unseen_sites, check_settings
from src.tracking.registry import model_for_prediction
from src.utils.errors import UserInputError, user_errors
from src.utils.io import check_writable
from src.utils.logging import status

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@user_errors
def main(cfg: DictConfig) -> pd.DataFrame:
    """Score new patients with the locked model (``python -m src.predict input=<path>``); returns them."""
    config = start(cfg)
    if not config.input:
        raise UserInputError("no input: give a GM map, a cohort folder or a feature table with input=<path>")
    if (Path(config.paths.run) / "train" / "config.yaml").is_file():
        # the patients' features are those the trained model was built on, whatever this command says
        config = trained_settings(config, Path(config.paths.run) / "train")
    settings, data = config.predict, config.data
    check_settings(settings.threshold, settings.coverage)
    out_dir = Path(settings.dir)
    check_writable(out_dir)
    patients = patient_features(
        config.input,
        data=data,
        features=config.features,
        patient=config.patient,
        bounds=data.plausibility or PlausibilityBounds(),
        n_jobs=config.n_jobs,
    )
    status(f"{config.name}: {len(patients)} patient(s) read and checked; scoring ...")
    with tempfile.TemporaryDirectory() as tmp:
        model, source = model_for_prediction(
            config.tracking, settings.model, Path(config.paths.run) / "train", Path(tmp)
        )
    model.checked_inputs(patients, str(config.input))  # columns, numbers, codes: before any alignment
    features_dir = Path(config.paths.features) / config.features.name
    training = features_dir / f"{discovery_cohort(data)}.parquet"
    patients, notes = align_unseen_sites(
        model,
        patients,
        read_feature_table(training) if training.is_file() else None,
        settings.align_unseen_sites,
        method=config.evaluation.alignment_method,
    )
    result = predict_patients(
        model,
        patients,
        settings.threshold,
        settings.coverage,
        where=str(config.input),
        distance_percentile=settings.distance_percentile,
        notes=notes,
    )
    return write_outputs(
        result,
        model,
        patients,
        out_dir=out_dir,
        settings=settings,
        source=source,
        features_dir=features_dir,
        input_path=Path(config.input),
        model_card=Path(config.paths.run) / "evaluate" / "model_card.md",
    )


if __name__ == "__main__":
    run(main, __doc__)
