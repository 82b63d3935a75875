"""Simulated clinical predictors with a known relation to the response and to the imaging signature.

Each variable (``data.simulation.clinical.variables``) is drawn from a latent normal per subject::

    z = shift + shared * s + sqrt(1 - shared^2) * e,    shift = d * (response - 1/2)

``d`` is the variable's Cohen's d between responders and non-responders in that cohort's treatment (``d`` for
ketamine cohorts, scaled by the cohort's ``signature_scale`` as the imaging signature is; ``d_saline`` for the
control cohort: placebo response), ``s`` the subject's imaging-signature score (the within-class standardised
projection of its regional GM biology on the planted signature's optimal direction, :func:`signature_scores`)
and ``shared`` the variable's within-class correlation with it (the component clinical and imaging data
share). A numeric variable is ``mean + sd * z``, clipped and rounded; a binary one is ``z`` above the normal
quantile of its prevalence; an ordinal one a rounded, clipped numeric; a categorical one drawn from its
probabilities (no relation to response). Values are then removed completely at random at ``missing``.

:func:`fusion_truth` states what the ground truth predicts: the AUC of the population-optimal linear rule on
the imaging signature alone, on the clinical variables alone and on both, from a large draw of the same
generative model (no learning noise: the best any model can do; a model learned on 99 patients does worse,
most of all on 120 imaging features).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.metrics import roc_auc_score

_POPULATION = 200_000  # subjects per class of the ground-truth draw


def signature_direction(cholesky: np.ndarray, signature: pd.DataFrame) -> tuple[np.ndarray, float]:
    """The optimal (LDA) direction of the planted signature in regional log-GM units of the regional SD
    (``R^-1 delta``, ``R`` the regional correlation) and the discovery cohort's Mahalanobis distance
    ``D = sqrt(delta' R^-1 delta)`` between responders and non-responders."""
    delta = np.zeros(cholesky.shape[0])
    delta[signature["position"].to_numpy()] = (signature["sign"] * signature["effect_size"]).to_numpy()
    correlation = cholesky @ cholesky.T
    direction = np.linalg.solve(correlation, delta)
    return direction, float(np.sqrt(delta @ direction))


def signature_scores(
    biology: np.ndarray, cholesky: np.ndarray, signature: pd.DataFrame, sd: float
) -> np.ndarray:
    """Each subject's imaging-signature score: its regional biological variation (log scale, before age, site
    and the planted shift) projected on the signature direction, unit variance within class."""
    direction, _ = signature_direction(cholesky, signature)
    spread = float(np.sqrt(direction @ (cholesky @ cholesky.T) @ direction)) * sd
    return biology @ direction / spread if spread > 0 else np.zeros(len(biology))


def _effect(variable: Mapping[str, Any], treatment: str, scale: float) -> float:
    if treatment == "ketamine":
        return float(variable.get("d", 0.0)) * scale
    return float(variable.get("d_saline", 0.0))


def simulate_clinical(
    participants: pd.DataFrame,
    scores: np.ndarray,
    spec: Mapping[str, Any],
    clinical: Mapping[str, Any],
    seed: list[int],
) -> pd.DataFrame:
    """The clinical columns of one cohort (see the module docstring); ``scores`` from
    :func:`signature_scores`, ``spec`` the cohort's simulation entry, ``clinical`` the simulation's
    ``clinical`` section."""
    rng = np.random.default_rng(seed)
    n = len(participants)
    response = participants["response"].to_numpy(dtype=float)
    scale = float(spec.get("signature_scale", 1.0))
    out = {}
    for name, variable in clinical["variables"].items():
        kind = variable["kind"]
        noise = rng.standard_normal(n)
        if kind == "categorical":
            codes = list(variable["codes"])
            values: Any = np.asarray(codes, dtype=object)[
                rng.choice(len(codes), size=n, p=np.asarray(variable["probabilities"], float))
            ]
        else:
            shared = float(variable.get("shared", 0.0))
            z = (
                _effect(variable, spec["treatment"], scale) * (response - 0.5)
                + shared * scores
                + np.sqrt(1.0 - shared**2) * noise
            )
            if kind == "binary":
                values = (z > norm.ppf(1.0 - float(variable["prevalence"]))).astype(int).astype(object)
            else:
                raw = np.clip(
                    float(variable["mean"]) + float(variable["sd"]) * z, variable["min"], variable["max"]
                )
                decimals = int(variable.get("decimals", 0))
                values = np.round(raw, decimals).astype(object if decimals else int).astype(object)
        missing = rng.random(n) < float(variable.get("missing", 0.0))
        column = pd.Series(values, index=participants.index, dtype=object)
        column[missing] = "n/a"
        out[name] = column
    return pd.DataFrame(out, index=participants.index)


def fusion_truth(
    cholesky: np.ndarray, signature: pd.DataFrame, clinical: Mapping[str, Any], seed: int
) -> dict:
    """The ground truth of fusion in the discovery cohort (ketamine, full signature): the AUC of the
    population-optimal linear rule (LDA fitted and scored on a draw of 2 x 200 000 subjects of the generative
    model) on the imaging signature score, on the clinical variables, and on both; the expected gain of fusion
    is their difference. The imaging score's AUC is also the closed form ``Phi(D / sqrt 2)``."""
    _, distance = signature_direction(cholesky, signature)
    rng = np.random.default_rng([seed, 20261130])
    response = np.r_[np.ones(_POPULATION), np.zeros(_POPULATION)]
    scores = rng.standard_normal(2 * _POPULATION) + distance * (response - 0.5)
    people = pd.DataFrame({"response": response.astype(int)})
    columns = []
    for name, variable in clinical["variables"].items():
        if variable["kind"] == "categorical":
            continue  # drawn without relation to response: adds nothing to the optimal rule
        shared = float(variable.get("shared", 0.0))
        z = (
            float(variable.get("d", 0.0)) * (response - 0.5)
            + shared * (scores - distance * (response - 0.5))
            + np.sqrt(1.0 - shared**2) * rng.standard_normal(len(response))
        )
        if variable["kind"] == "binary":
            z = (z > norm.ppf(1.0 - float(variable["prevalence"]))).astype(float)
        else:  # the rounding and clipping of the written values, as there
            z = np.round(
                np.clip(
                    float(variable["mean"]) + float(variable["sd"]) * z, variable["min"], variable["max"]
                ),
                int(variable.get("decimals", 0)),
            )
        people[name] = z
        columns.append(name)

    def optimal_auc(X: np.ndarray) -> float:
        lda = LinearDiscriminantAnalysis().fit(X, response)
        return float(roc_auc_score(response, lda.decision_function(X)))

    imaging = float(roc_auc_score(response, scores))
    clinical_auc = optimal_auc(people[columns].to_numpy()) if columns else 0.5
    fused = optimal_auc(np.column_stack([scores, people[columns].to_numpy()])) if columns else imaging
    return {
        "description": "AUC of the population-optimal linear rule in the discovery cohort (no learning "
        "noise: an upper bound for a model learned on the discovery cohort, the imaging one most of all)",
        "imaging_mahalanobis_d": round(distance, 4),
        "auc_imaging": round(imaging, 4),
        "auc_imaging_closed_form": round(float(norm.cdf(distance / np.sqrt(2.0))), 4),
        "auc_clinical": round(clinical_auc, 4),
        "auc_fused": round(fused, 4),
        "gain_over_imaging": round(fused - imaging, 4),
        "gain_over_clinical": round(fused - clinical_auc, 4),
        "variables": {name: dict(variable) for name, variable in clinical["variables"].items()},
    }
