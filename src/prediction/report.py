"""What ``src.predict`` writes and prints: ``predictions.csv`` (one row per patient), one HTML card per
patient, and a few lines per patient on the console."""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pandas as pd

from src.config.settings import PredictSettings
from src.data.clinical import PREFIX
from src.interpretation.regions import paint_features, read_feature_regions
from src.prediction.card import headline, patient_card
from src.prediction.score import local_attribution, modality_shares, top_regions
from src.utils.io import atomic_path, file_md5, shown_path
from src.utils.provenance import git_state
from src.validation.ensemble import EnsembleModel


def _input_hash(path: Path) -> str:
    """md5 of the input file (of participants.tsv for a cohort folder; its images are checked one by one)."""
    target = path / "participants.tsv" if path.is_dir() else path
    return file_md5(target) if target.is_file() else "n/a"


def provenance_rows(model: EnsembleModel, source: str, input_path: Path) -> list[tuple[str, str]]:
    """Where a prediction came from: the model (source, experiment, training data), the input, the code."""
    git = git_state()
    return [
        ("model", source),
        ("experiment", str(model.info.get("experiment"))),
        ("training feature table md5", str(model.info.get("feature_table_md5"))),
        ("fold models", str(len(model.models))),
        ("input", f"{shown_path(input_path)} (md5 {_input_hash(input_path)})"),
        ("code", f"{git.get('commit')}{' (uncommitted changes)' if git.get('dirty') else ''}"),
        ("scored", time.strftime("%Y-%m-%d %H:%M:%S")),
    ]


def write_outputs(
    result: pd.DataFrame,
    model: EnsembleModel,
    patients: pd.DataFrame,
    *,
    out_dir: Path,
    settings: PredictSettings,
    source: str,
    features_dir: Path,
    input_path: Path,
    model_card: Path | None = None,
) -> pd.DataFrame:
    """Add each patient's top regions to ``result`` (:func:`predict_patients`), write ``predictions.csv``
    and the cards (linking ``model_card`` when it exists), print the summary; return the table written."""
    regions = read_feature_regions(features_dir)
    names = dict(zip(regions["column"], regions["name"], strict=True)) if regions is not None else {}
    names.update({c: f"{c.removeprefix(PREFIX)} (clinical)" for c in model.clinical_columns})
    values, method = local_attribution(model, patients)
    if values is not None:
        result = pd.concat([result, top_regions(values, names).reset_index(drop=True)], axis=1)
        if model.clinical_columns and model.imaging_columns and model.is_linear:
            result = pd.concat([result, modality_shares(model, values).reset_index(drop=True)], axis=1)
    out_dir.mkdir(parents=True, exist_ok=True)
    # each run its own dated file (a second run never overwrites the first's); the latest also under the
    # stable name
    stamp = time.strftime("%Y%m%d-%H%M%S")
    dated = out_dir / f"predictions-{stamp}.csv"
    for n in range(2, 1000):  # two runs within one second
        if not dated.exists():
            break
        dated = out_dir / f"predictions-{stamp}-{n}.csv"
    for target in (dated, out_dir / "predictions.csv"):
        with atomic_path(target) as tmp:
            result.to_csv(tmp, index=False)
    threshold, coverage = settings.threshold, settings.coverage
    cards = out_dir / "cards"
    if settings.card:
        cards.mkdir(exist_ok=True)
        provenance = provenance_rows(model, source, input_path)
        card_link = None
        if model_card is not None and model_card.is_file():
            card_link = Path(os.path.relpath(model_card.resolve(), cards.resolve())).as_posix()
        for i, row in result.iterrows():
            contributions = None if values is None else values.iloc[i]
            brain = None
            if contributions is not None:
                painted = pd.DataFrame(
                    {
                        "feature": contributions.index,
                        "mean_weight": contributions.values,
                        "cvr": contributions.values,
                    }
                )
                brain = paint_features(painted, features_dir)[0].get("weight")
            card = patient_card(
                row.to_dict(),
                threshold=threshold,
                coverage=coverage,
                provenance=provenance,
                contributions=contributions,
                names=names,
                brain=brain,
                attribution=method,
                simulated=bool(model.info.get("simulated")),
                model_card=card_link,
                decision_zero=None if model.is_regression else float(model.calibrate(np.zeros(1))[0]),
            )
            with atomic_path(cards / f"{row['participant_id']}.html") as tmp:
                tmp.write_text(card, encoding="utf-8")
    _print(result, threshold, coverage, source, dated, cards if settings.card else None)
    return result


def _print(
    result: pd.DataFrame, threshold: float, coverage: float, source: str, written: Path, cards: Path | None
) -> None:
    print(f"model: {source}")
    for _, row in result.iterrows():
        print(
            f"{row.participant_id}: P(response) = {row.probability:.2f} "
            f"[{round(100 * coverage)} % of fold models: {row.interval_low:.2f}-{row.interval_high:.2f}], "
            f"{headline(row, threshold)} (fold agreement {row.fold_agreement:.0%})"
        )
        if "predicted_outcome" in result:
            print(
                f"    predicted outcome {row.predicted_outcome:.1f} [{round(100 * coverage)} % of fold "
                f"models: {row.predicted_low:.1f}-{row.predicted_high:.1f}]"
            )
        if row.warnings:
            print(f"    warning: {row.warnings}")
        if "towards_response" in result:
            print(f"    towards response: {row.towards_response or '-'}")
            print(f"    towards non-response: {row.towards_non_response or '-'}")
        if "contribution_imaging" in result:
            print(
                f"    by modality: imaging {row.contribution_imaging:+.3f}, clinical "
                f"{row.contribution_clinical:+.3f} (their sum + the model's offset = the decision score)"
            )
    print(f"  written   {written} (the latest also as {written.with_name('predictions.csv').name})")
    if cards is not None:
        print(f"            {cards}/<participant_id>.html")
