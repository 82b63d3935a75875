"""The report's "Does the scan add anything?" section: the paired comparison of the reported experiments
(``python -m src.compare``), and on simulated data what the ground truth predicts for the gain of fusion."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm
from scipy.stats import t as t_distribution

from src.config.settings import ExperimentConfig
from src.evaluation.model_comparison import comparison_table

INTRO = (
    "Paired comparisons (python -m src.compare) on the same discovery splits: the mean outer-fold difference "
    "B - A with the corrected repeated-CV t-test (Nadeau & Bengio; Bouckaert & Frank) and the Bayesian "
    "correlated t-test (P(A better), P(equivalent within the ROPE), P(B better)); on each evaluation group, "
    "DeLong's test of the AUC difference and the BAC and net-benefit differences with stratified paired "
    "bootstrap 95 % intervals. p Holm: adjusted over the pairs."
)


def modality(config: ExperimentConfig) -> str:
    """``imaging``, ``clinical`` or ``fused`` (both blocks in one model, early or late fusion)."""
    features = config.features
    if features.kind == "clinical":
        return "clinical"
    return "fused" if features.clinical else "imaging"


@dataclass
class FusionSection:
    """What the section shows: the comparison table and figure, and the ground-truth sentences."""

    table: pd.DataFrame
    figure: Path | None
    notes: list[str]


def fusion_section(
    configs: dict[str, ExperimentConfig],
    discovery_auc: dict[str, float],
    folder: Path,
    ground_truth: Path | None,
) -> FusionSection | None:
    """The section for the experiments in ``configs`` (name -> settings), from the comparison ``folder``
    (``comparison.json``, ``comparison.png``); None when it was not run. ``discovery_auc``: each experiment's
    out-of-fold ensemble AUC; ``ground_truth``: the simulation's ``ground_truth.json`` (its ``fusion``)."""
    document_path = folder / "comparison.json"
    if not document_path.is_file():
        return None
    document = json.loads(document_path.read_text())
    table = comparison_table(document)
    shown = table.astype(object).map(lambda v: f"{v:.3f}" if isinstance(v, float) and v == v else v)
    figure = folder / "comparison.png"
    notes = fusion_notes(configs, discovery_auc, document, ground_truth)
    return FusionSection(shown.fillna("–"), figure if figure.is_file() else None, notes)


def combined_auc(auc_a: float, auc_b: float) -> float:
    """The AUC of the best linear combination of two scores that are normal within class with equal
    variances and independent given the class, from their own AUCs: ``Phi(sqrt(d_a^2 + d_b^2) / sqrt 2)`` with
    ``d = sqrt 2 Phi^-1(AUC)`` (binormal model): what fusing two learned models with unrelated errors could
    reach; a component the modalities share makes it less."""
    distances = [np.sqrt(2.0) * norm.ppf(min(max(a, 0.5), 1 - 1e-9)) for a in (auc_a, auc_b)]
    return float(norm.cdf(np.hypot(*distances) / np.sqrt(2.0)))


def _discovery_difference(
    document: dict[str, Any], base: str, fused: str
) -> tuple[float, float, float] | None:
    """Fused - base in discovery AUC (mean outer-fold difference) with its corrected 95 % interval."""
    for pair in document["pairs"]:
        if {pair["a"], pair["b"]} == {base, fused}:
            test = pair["discovery"]["auc"]["corrected_ttest"]
            sign = 1.0 if pair["b"] == fused else -1.0
            half = float(t_distribution.ppf(0.975, test["df"])) * test["se"]
            low, high = sorted((sign * (test["mean"] - half), sign * (test["mean"] + half)))
            return sign * test["mean"], low, high
    return None


def fusion_notes(
    configs: dict[str, ExperimentConfig],
    discovery_auc: dict[str, float],
    document: dict[str, Any],
    ground_truth: Path | None,
) -> list[str]:
    """Sentences on the measured gain of fusion (discovery AUC, with its corrected interval), what two
    independent modalities with the measured AUCs could reach, and on simulated data whether the ground
    truth's gain lies inside the measured interval."""
    by_kind: dict[str, list[str]] = {}
    for name, config in configs.items():
        by_kind.setdefault(modality(config), []).append(name)
    if not all(by_kind.get(k) for k in ("imaging", "clinical", "fused")):
        return []
    imaging, clinical = by_kind["imaging"][0], by_kind["clinical"][0]
    truth = _fusion_truth(ground_truth)
    notes = []
    for fused in by_kind["fused"]:
        parts = []
        for base, truth_key in ((imaging, "gain_over_imaging"), (clinical, "gain_over_clinical")):
            measured = _discovery_difference(document, base, fused)
            if measured is None:
                continue
            gain, low, high = measured
            text = f"over {base} {gain:+.3f} (95 % interval {low:+.3f} to {high:+.3f})"
            if truth:
                inside = "inside" if low <= truth[truth_key] <= high else "outside"
                text += f"; ground truth {truth[truth_key]:+.3f}, {inside} the interval"
            parts.append(text)
        bound = combined_auc(discovery_auc[imaging], discovery_auc[clinical])
        notes.append(
            f"Discovery AUC gained by {fused} (mean outer-fold difference): {'; '.join(parts)}. For reference, "
            f"two modalities with the measured AUCs ({imaging} {discovery_auc[imaging]:.3f}, {clinical} "
            f"{discovery_auc[clinical]:.3f}) whose scores are independent within class would combine to "
            f"{bound:.3f} (binormal model); {fused} reached {discovery_auc[fused]:.3f}."
        )
    if truth:
        notes.append(
            "Ground truth (ground_truth.json): the population-optimal linear rule, no learning noise, reaches "
            f"AUC {truth['auc_imaging']:.3f} on the imaging signature, {truth['auc_clinical']:.3f} on the "
            f"clinical variables and {truth['auc_fused']:.3f} on both. Models learned on 99 patients reach "
            "less, the imaging one most of all (120 features)."
        )
    return notes


def _fusion_truth(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.is_file():
        return None
    return json.loads(path.read_text()).get("fusion")


def comparison_folder(root: Path, names: Sequence[str]) -> Path:
    """Where ``src.compare`` wrote the comparison of ``names`` (in that order)."""
    return root / "-".join(names)
