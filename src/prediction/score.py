"""Per-patient prediction: calibrated probability, an interval from the fold models, the decision.

The locked model is the ensemble of the R x K outer-fold models of the nested CV. A patient's decision score
is their mean; the probability is its Platt calibration, fitted at train time on the *out-of-fold* ensemble
scores of the discovery cohort (never on scores of subjects a model was trained on). The interval shows how
much the fold models disagree about this patient: the central ``coverage`` range of the R x K fold scores,
mapped through the same calibration. It is a spread of models trained on different subsets of the
discovery cohort (an ensemble/bootstrap-like spread), not a confidence interval of a population quantity.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from src.data.clinical import PREFIX
from src.models.harmonize import SiteAligner
from src.utils.errors import UserInputError
from src.validation.ensemble import EnsembleModel


def top_regions(values: pd.DataFrame, names: dict[str, str] | None = None, k: int = 3) -> pd.DataFrame:
    """The ``k`` features pushing each patient's score most towards response and towards non-response, as
    ``"<region> (+0.42)"``, from per-feature ``values`` (:meth:`EnsembleModel.contributions` of a linear
    model, :meth:`EnsembleModel.occlusion` of another)."""
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
    return pd.DataFrame(rows, index=values.index)


def modality_shares(model: EnsembleModel, values: pd.DataFrame) -> pd.DataFrame:
    """Each patient's decision score split by modality: the summed contributions (:meth:`EnsembleModel.
    contributions` of a linear model) of the imaging columns and of the clinical predictors."""
    return pd.DataFrame(
        {
            "contribution_imaging": values[model.imaging_columns].sum(axis=1),
            "contribution_clinical": values[model.clinical_columns].sum(axis=1),
        },
        index=values.index,
    )


def local_attribution(
    model: EnsembleModel, table: pd.DataFrame, max_features: int = 2000
) -> tuple[pd.DataFrame | None, str]:
    """(per-feature values, how they were computed): a linear model's exact contributions; for other models
    the occlusion attribution when there are at most ``max_features`` features (it costs one ensemble
    evaluation per feature); (None, why) otherwise or for models without a covariate model."""
    if model.adjustment is None:
        return None, "no regional attribution: the model was saved before the covariate model existed"
    if model.is_linear:
        return model.contributions(table)[0], "contribution = mean fold weight x covariate-adjusted value"
    if len(model.feature_columns) > max_features:
        return (
            None,
            f"no regional attribution: occlusion of {len(model.feature_columns)} features is too slow",
        )
    return model.occlusion(table), (
        "occlusion: drop of the decision score when a region is set to what the covariates predict for it "
        "(non-linear model: the values do not add up to the score)"
    )


def covariate_warnings(model: EnsembleModel, table: pd.DataFrame, skip: tuple[str, ...] = ()) -> list[str]:
    """Per patient, where their covariates leave the training cohort's: a numeric covariate outside the
    training range, a category (sex, site) never seen in training. An unseen site gets the reference site's
    covariate adjustment: its scanner offset is not removed, so its scores may be shifted."""
    ranges = model.info.get("training_covariates") or {}
    out = []
    for _, row in table.iterrows():
        notes = []
        for name, allowed in ranges.items():
            if name in skip:
                continue
            value = row.get(name)
            if isinstance(allowed[0], str):
                if str(value) not in allowed:
                    notes.append(f"{name} {value!r} not in training ({', '.join(allowed)})")
            elif not allowed[0] <= float(value) <= allowed[1]:
                notes.append(
                    f"{name} {float(value):g} outside the training range {allowed[0]:g}-{allowed[1]:g}"
                )
        notes += clinical_notes(model, row)
        out.append("; ".join(notes))
    return out


def clinical_notes(model: EnsembleModel, row: pd.Series) -> list[str]:
    """A patient's clinical predictors that the model cannot use as given: a missing value (each fold model
    puts its training mean in its place) and a categorical code no training patient had (no weight)."""
    notes = []
    counts = model.info.get("clinical_training_counts") or {}
    unseen = [c for c, n in counts.items() if n == 0 and row.get(c) == 1]
    if unseen:
        notes.append(
            f"clinical code(s) {', '.join(c.removeprefix(PREFIX) for c in unseen)} never seen in "
            "training: they carry no weight"
        )
    missing = sorted(
        {c.removeprefix(PREFIX).split("=")[0] for c in model.clinical_columns if pd.isna(row.get(c))}
    )
    if missing:
        notes.append(f"clinical value(s) missing, imputed with the training mean: {', '.join(missing)}")
    return notes


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
    notes: list[str] | None = None,
) -> pd.DataFrame:
    """One row per patient: ``participant_id``, ``decision_score`` (mean fold score), ``probability``
    (calibrated P(response)), ``interval_low``/``interval_high`` (the fold models' central ``coverage`` range,
    calibrated), ``fold_agreement`` (share of fold models on the side of the decision), for a regressor
    ``predicted_outcome`` with ``predicted_low``/``predicted_high`` (the fold models' central range; its
    decision score is the prediction minus the responder threshold, its probability that of the residual
    model, :func:`~src.validation.ensemble.residual_model`), ``distance`` and
    ``distance_percentile`` (to the training cohort, :meth:`EnsembleModel.distance_percentile`; a warning at
    or above ``distance_percentile``), ``warnings`` and ``prediction``
    (``responder`` when the probability reaches ``threshold``) and ``call`` (:func:`call_of`: the same, or
    ``uncertain (leans ...)``; the words the console and the card show)."""
    check_settings(threshold, coverage)
    model.checked_inputs(table, where)
    folds = model.decision_matrix(table)  # (patients, R x K)
    decision = folds.mean(axis=1)
    tail = 100 * (1 - coverage) / 2
    low, high = np.percentile(folds, [tail, 100 - tail], axis=1)
    probability = model.calibrate(decision)
    continuous = {}
    if model.is_regression:
        # a regressor's fold scores are predicted outcomes: shown as they are, and shifted by the responder
        # threshold into decision scores (>= the threshold responds), as the evaluation does
        continuous = {"predicted_outcome": decision, "predicted_low": low, "predicted_high": high}
        cut = model.info["outcome"].get("responder_cut")
        if cut is None:
            raise UserInputError(
                "this continuous model's outcome has no responder threshold: no P(response) to give; its "
                "predictions are EnsembleModel.decision_function (see docs)"
            )
        folds, decision = folds - cut, decision - cut
    distance, percentile = model.distance_percentile(table)
    distance_notes = [
        f"features farther from the training cohort than {p:.0f} % of its subjects (Mahalanobis {d:.1f}): "
        "check the scan, its preprocessing and its site"
        if p >= distance_percentile
        else ""
        for d, p in zip(distance, percentile, strict=True)
    ]
    positive = probability >= threshold
    prediction = np.where(positive, "responder", "non-responder")
    interval_low, interval_high = model.calibrate(low), model.calibrate(high)
    return pd.DataFrame(
        {
            "participant_id": table["participant_id"].astype(str).to_numpy(),
            "decision_score": decision,
            "probability": probability,
            "interval_low": interval_low,
            "interval_high": interval_high,
            "fold_agreement": np.mean((folds > 0) == (decision > 0)[:, None], axis=1),
            **continuous,
            "prediction": prediction,
            # the words the console, the card and the server show, from the same rule
            "call": [
                call_of(str(p), lo, hi, threshold)
                for p, lo, hi in zip(prediction, interval_low, interval_high, strict=True)
            ],
            "distance": distance,
            "distance_percentile": percentile,
            "warnings": [
                "; ".join(filter(None, parts))
                for parts in zip(
                    notes or [""] * len(table),
                    # the unseen-site policy's notes (when given) say what happened to a new site
                    covariate_warnings(model, table, skip=("site",) if notes is not None else ()),
                    distance_notes,
                    strict=True,
                )
            ],
        }
    )


def call_of(prediction: str, interval_low: float, interval_high: float, threshold: float) -> str:
    """The one decision rule's words: ``prediction`` (``responder`` when P(response) reaches ``threshold``,
    else ``non-responder``), or ``uncertain (leans <prediction>)`` when the fold models' interval of
    P(response) reaches across the threshold (models trained on other subsets disagree about the side)."""
    if interval_low < threshold <= interval_high:
        return f"uncertain (leans {prediction})"
    return prediction


def align_unseen_sites(
    model: EnsembleModel,
    table: pd.DataFrame,
    training: pd.DataFrame | None,
    min_scans: int | None,
    method: str = "location_scale",
) -> tuple[pd.DataFrame, list[str]]:
    """The documented policy for patients from a site (scanner) the model was not trained on.

    The fold models' covariate adjustment knows only the training sites: an unseen site gets the reference
    site's adjustment, so its scanner offset stays in the features. When the input holds at least
    ``min_scans`` patients of that site, their features are aligned to the training cohort with those scans
    alone, never outcomes (:class:`~src.models.harmonize.SiteAligner`, as the evaluation's site-aligned
    results, ``method`` as ``evaluation.alignment_method``); otherwise (or with ``min_scans=None``, or
    without the ``training`` table) they are scored as they are and the note says the score may be shifted.
    Returns (table, one note per patient).
    """
    seen = set((model.info.get("training_covariates") or {}).get("site", []))
    notes = [""] * len(table)
    if "site" not in model.covariates or not seen:
        return table, notes
    sites = table["site"].astype(str).to_numpy()
    out, aligner = table.copy(), None
    for site in model.unseen_levels(table).get("site", []):
        rows = sites == site
        count = int(rows.sum())
        if min_scans is not None and count >= min_scans and training is not None and model.imaging_columns:
            aligner = aligner or SiteAligner(
                model.imaging_columns, min_site_size=min_scans, method=method
            ).fit(training)
            out.loc[rows, model.imaging_columns] = aligner.transform(table.loc[rows])[model.imaging_columns]
            note = f"site {site!r} not in training: aligned to it with its {count} unlabelled scans here"
        else:
            why = (
                "no site alignment (predict.align_unseen_sites=null)"
                if min_scans is None
                else "no training table to align it to"
                if training is None
                else f"{count} scan(s) from it in this input, {min_scans} needed to align it"
            )
            note = f"site {site!r} not in training: its scores may be shifted by its scanner ({why})"
        for i in np.flatnonzero(rows):
            notes[i] = note
    return out, notes
