"""``python -m src.predict +experiment=gm_only input=<table>``: score new patients with the locked model.

The input is a feature table of patients without outcomes (``.parquet``, ``.csv`` or ``.tsv``: participant_id,
the model's covariates and feature columns, e.g. built by ``src.features.build`` or exported from the same
regional pipeline as training). The model is the verified DVC copy of ``${paths.run}/train/model`` (its
sha256 checked against the one training recorded). Writes ``${predict.dir}/predictions.csv``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
import pandas as pd
from omegaconf import DictConfig

from src.interpretation.regions import read_feature_regions
from src.models.linear import AffineDecision
from src.prediction import predict_patients, read_patient_table
from src.prediction.score import check_settings, top_regions
from src.utils.checks import check_config, check_writable
from src.utils.errors import UserInputError, user_errors
from src.utils.io import atomic_path
from src.utils.logging import configure_logging
from src.validation.ensemble import load_trained_model

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@user_errors
def main(cfg: DictConfig) -> pd.DataFrame:
    configure_logging(bool(cfg.verbose))
    check_config(cfg)
    if not cfg.input:
        raise UserInputError("no input: give the patients' feature table with input=<path>")
    check_settings(float(cfg.predict.threshold), float(cfg.predict.coverage))
    table = read_patient_table(cfg.input)
    out_dir = Path(cfg.predict.dir)
    check_writable(out_dir)
    model = load_trained_model(Path(cfg.paths.run) / "train")
    result = predict_patients(
        model,
        table,
        float(cfg.predict.threshold),
        float(cfg.predict.coverage),
        where=str(cfg.input),
        distance_percentile=float(cfg.predict.distance_percentile),
    )
    if model.adjustment is not None and all(isinstance(m, AffineDecision) for m in model.models):
        regions = read_feature_regions(Path(cfg.paths.features) / cfg.features.name)
        names = dict(zip(regions["column"], regions["name"], strict=True)) if regions is not None else None
        result = pd.concat([result, top_regions(model, table, names).reset_index(drop=True)], axis=1)
    out_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_dir / "predictions.csv") as tmp:
        result.to_csv(tmp, index=False)
    coverage = int(round(100 * float(cfg.predict.coverage)))
    for row in result.itertuples():
        print(
            f"{row.participant_id}: P(response) = {row.probability:.2f} "
            f"[{coverage} % of fold models: {row.interval_low:.2f}-{row.interval_high:.2f}], "
            f"{row.prediction} (fold agreement {row.fold_agreement:.0%})"
        )
        if row.warnings:
            print(f"    warning: {row.warnings}")
        if "towards_response" in result:
            print(f"    towards response: {row.towards_response or '-'}")
            print(f"    towards non-response: {row.towards_non_response or '-'}")
    print(f"  written   {out_dir / 'predictions.csv'}")
    return result


if __name__ == "__main__":
    main()
