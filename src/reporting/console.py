"""The few lines each command prints when it is done (results go to files; this is the at-a-glance view).

Rounding: proportions to 3 decimals, p-values to 3 significant digits (``< 0.001`` below), a spread only
when there is more than one repeat.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from src.evaluation.continuous import continuous_table
from src.evaluation.results import CohortResult
from src.utils.tables import markdown_table


def p_text(p: float | None, n: int | None = None) -> str:
    """``p = 0.0123`` (3 significant digits; ``p < 0.001`` below). With ``n`` permutations, the smallest p a
    permutation test can give, 1/(n+1), is said to be that."""
    if p is None:
        return "p = –"
    if n is not None and p <= 1 / (n + 1) + 1e-12:
        return f"p = {p:.2g}, the smallest possible with {n} permutations"
    return f"p = {p:.3g}" if p >= 0.001 else "p < 0.001"


def training_summary(
    name: str, document: Mapping[str, Any], resumed_folds: int = 0, resumed_permutations: int = 0
) -> list[str]:
    """Train: sample, CV scheme, ensemble and per-repeat metrics, the permutation test."""
    if (document.get("outcome") or {}).get("kind") == "continuous":
        return _regression_summary(name, document, resumed_folds, resumed_permutations)
    cv, ens, rep = document["cv"], document["ensemble"], document["repeats"]
    lines = [
        f"{name}: n={document['n']} ({document['responders']} responders), {cv['repeats']}x{cv['outer_folds']} "
        f"outer x {cv['inner_folds']} inner folds, {cv['n_trials']} trials"
        + (f", {resumed_folds} fold(s) resumed from a checkpoint" if resumed_folds else ""),
        f"  ensemble  BAC {ens['bac']:.3f}  sens {ens['sensitivity']:.3f}  spec {ens['specificity']:.3f}  "
        f"AUC {ens['auc']:.3f}",
    ]
    bac = rep["bac"]
    if cv["repeats"] > 1:
        lines.append(
            f"  repeats   BAC {bac['mean']:.3f} ± {bac['sd']:.3f} (SD) [{bac['q025']:.3f}, {bac['q975']:.3f}]  "
            f"AUC {rep['auc']['mean']:.3f}"
        )
    perm = document.get("permutation")
    if perm:
        resumed = f", {resumed_permutations} resumed from a checkpoint" if resumed_permutations else ""
        lines.append(
            f"  permutation {p_text(perm['p_value'], perm['n'])} (n = {perm['n']}; mean BAC over "
            f"{perm['repeats']} repeat(s){resumed})"
        )
    return lines


def _regression_summary(
    name: str, document: Mapping[str, Any], resumed_folds: int, resumed_permutations: int
) -> list[str]:
    """Train, continuous outcome: R² (against the training-fold means), r, MAE; the thresholded BAC."""
    cv, ens, rep, outcome = document["cv"], document["ensemble"], document["repeats"], document["outcome"]
    lines = [
        f"{name}: n={document['n']}, outcome {outcome['target']} (mean {outcome['mean']:.1f}, SD "
        f"{outcome['sd']:.1f}), {cv['repeats']}x{cv['outer_folds']} outer x {cv['inner_folds']} inner folds, "
        f"{cv['n_trials']} trials, objective {outcome['objective']}"
        + (f", {resumed_folds} fold(s) resumed from a checkpoint" if resumed_folds else ""),
        f"  ensemble  R² {ens['r2']:.3f}  r {ens['pearson_r']:.3f}  rho {ens['spearman_r']:.3f}  "
        f"MAE {ens['mae']:.2f}  RMSE {ens['rmse']:.2f}",
    ]
    if "bac" in ens:
        lines.append(
            f"  responders (>= {outcome['responder_cut']:g})  BAC {ens['bac']:.3f}  sens {ens['sensitivity']:.3f}  "
            f"spec {ens['specificity']:.3f}  AUC {ens['auc']:.3f}"
        )
    if cv["repeats"] > 1:
        r2 = rep["r2"]
        lines.append(
            f"  repeats   R² {r2['mean']:.3f} ± {r2['sd']:.3f} (SD) [{r2['q025']:.3f}, {r2['q975']:.3f}]  "
            f"r {rep['pearson_r']['mean']:.3f}  MAE {rep['mae']['mean']:.2f}"
        )
    perm = document.get("permutation")
    if perm:
        resumed = f", {resumed_permutations} resumed from a checkpoint" if resumed_permutations else ""
        lines.append(
            f"  permutation {p_text(perm['p_value'], perm['n'])} (n = {perm['n']}; "
            f"{perm['statistic'].replace('_', ' ')} over {perm['repeats']} repeat(s){resumed})"
        )
    return lines


def shard_summary(name: str, shard: Mapping[str, Any]) -> list[str]:
    """A permutation shard: which shard, how many permutations, where it was written."""
    (i, of), resumed = shard["shard"], shard["resumed"]
    return [
        f"{name}: permutation shard {i}/{of}: {len(shard['values'])} of {shard['n']} permutations"
        + (f" ({resumed} resumed from a checkpoint)" if resumed else ""),
        f"  written   {shard['path']}",
    ]


def evaluation_summary(
    name: str, table: pd.DataFrame, specificity: Mapping[str, Any], aligned: Mapping[str, CohortResult]
) -> list[str]:
    """Evaluate: the paper table, the treatment-specificity tests, the site-aligned results."""
    columns = [
        "cohort",
        "n",
        "responders",
        "BAC",
        "BAC 95% CI",
        "sens",
        "spec",
        "AUC",
        "p (BAC)",
        "paper BAC",
        "paper AUC",
    ]
    lines = [
        f"{name}: locked model on the evaluation cohorts",
        markdown_table(table[columns]),
        "(– : the paper reports no value for that cohort group, or the test was not run)",
    ]
    if not specificity:
        lines.append(
            "treatment specificity: not tested (the data config has no external or no control cohort)"
        )
    else:
        diff = specificity["auc_difference"]
        lines.append(
            f"treatment specificity: AUC external {diff['auc_a']:.3f} vs control {diff['auc_b']:.3f}, "
            f"difference {diff['difference']:.3f}, permutation {p_text(diff['p_value'])}; "
            f"score x treatment interaction {p_text(specificity['interaction']['p_value'])}"
        )
    for cohort, r in aligned.items():
        lines.append(f"  site-aligned {cohort}: BAC {100 * r.bac:.1f}, AUC {r.auc:.3f}, {p_text(r.p_bac)}")
    return lines


def continuous_summary(continuous: Mapping[str, Any]) -> list[str]:
    """Evaluate, a regressor: the continuous outcome per cohort group and the treatment interaction."""
    columns = ["cohort", "n", "R²", "r", "r 95% CI", "MAE", "p (r)", "calibration slope", "slope 95% CI"]
    lines = [
        "continuous outcome (R² against the training mean; discovery: out of fold):",
        markdown_table(continuous_table(continuous["results"])[columns]),
    ]
    if continuous.get("interaction"):
        i = continuous["interaction"]
        lines.append(
            f"treatment specificity (continuous): predicted x treatment interaction {i['coefficient']:.2f} per SD "
            f"[{i['ci95'][0]:.2f}, {i['ci95'][1]:.2f}], {p_text(i['p_value'])}"
        )
    return lines
