"""The model card of an evaluated experiment (Mitchell et al. 2019, FAT*: "Model cards for model reporting"),
its sections ordered as TRIPOD+AI asks (Collins et al. 2024, BMJ): model details, intended use and the
population trained on, training data, evaluation data and results with CIs, subgroups, calibration, known
limitations, ethical considerations and caveats, provenance.

Every number comes from the run's own documents (``train/metrics.json``, the evaluation's document and
subgroup tables, the training table's columns); nothing is typed by hand. ``src.evaluate`` writes it to
``evaluate/model_card.md``, attaches it to the registered model version in MLflow and the report shows it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from src.utils.tables import markdown_table

# participants.tsv columns that describe the acquisition, listed in the card's population when present
SCANNER_COLUMNS = ("scanner", "manufacturer", "field_strength", "scanner_model")


def _pct(value: Any) -> str:
    return "–" if value is None or pd.isna(value) else f"{100 * float(value):.1f}"


def _ci(ci: Any, scale: float, decimals: int) -> str:
    if not ci:
        return ""
    return f" ({scale * ci[0]:.{decimals}f}–{scale * ci[1]:.{decimals}f})"


def population(table: pd.DataFrame, participants: pd.DataFrame | None) -> list[str]:
    """The training population as bullet lines: n, ages, sexes, sites, treatments, scanners if recorded."""
    age = table["age"].astype(float)
    sexes = ", ".join(f"{k} {v}" for k, v in table["sex"].value_counts().sort_index().items())
    sites = ", ".join(f"{k} ({v})" for k, v in table["site"].astype(str).value_counts().sort_index().items())
    treatments = ", ".join(sorted(table["treatment"].astype(str).unique())) if "treatment" in table else "–"
    lines = [
        f"- {len(table)} patients, age {age.min():.0f}–{age.max():.0f} (mean {age.mean():.1f})",
        f"- sex: {sexes}",
        f"- sites: {sites}",
        f"- treatment: {treatments}",
    ]
    if participants is not None:
        for column in SCANNER_COLUMNS:
            if column in participants:
                counts = participants[column].astype(str).value_counts().sort_index()
                lines.append(f"- {column}: " + ", ".join(f"{k} ({v})" for k, v in counts.items()))
    return lines


def results_table(cohorts: Mapping[str, Any]) -> pd.DataFrame:
    """BAC, sensitivity, specificity (%) and AUC with their bootstrap 95 % CIs and p per cohort group."""
    rows = []
    for name, r in cohorts.items():
        ci = r.get("ci95") or {}
        rows.append(
            {
                "cohort group": name,
                "n": str(r["n"]),
                "responders": str(r["responders"]),
                "BAC % (95% CI)": _pct(r["bac"]) + _ci(ci.get("bac"), 100, 1),
                "sens %": _pct(r["sensitivity"]) + _ci(ci.get("sensitivity"), 100, 1),
                "spec %": _pct(r["specificity"]) + _ci(ci.get("specificity"), 100, 1),
                "AUC (95% CI)": f"{r['auc']:.2f}" + _ci(ci.get("auc"), 1, 2),
                "p (BAC)": "–" if r.get("p_bac") is None else f"{r['p_bac']:.3g}",
            }
        )
    return pd.DataFrame(rows)


def model_card(
    *,
    config: Any,
    train: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    training_table: pd.DataFrame,
    participants: pd.DataFrame | None,
    subgroups: Mapping[str, pd.DataFrame] | None,
    calibration: Mapping[str, tuple[np.ndarray, np.ndarray]],
    unseen_sites: list[str],
    registry: Mapping[str, Any] | None = None,
    simulated: bool = False,
    n_fold_models: int | None = None,
) -> str:
    """The card as markdown.

    ``train``: ``train/metrics.json``; ``evaluation``: the evaluation's document (``evaluate/metrics.json``);
    ``training_table``: the discovery feature table's meta columns; ``participants``: its participants.tsv;
    ``subgroups``: :func:`~src.evaluation.subgroups.evaluate_subgroups`'s tables; ``calibration``: per cohort
    group (labels, P(response)); ``unseen_sites``: evaluation sites not in training; ``registry``: the MLflow
    training record (model name and version) when tracked; ``n_fold_models``: the locked ensemble's own count
    of fold models. ``config`` is the trained model's own settings (its ``train/config.yaml``), never those of
    the command that writes the card."""
    outcome = config.data.outcome
    model, features, cv = config.model, config.features, config.cv
    prov = evaluation.get("provenance", {})
    git = prov.get("git") or {}
    permutation = train.get("permutation") or {}
    name = (registry or {}).get("registered_model")
    version = (registry or {}).get("model_version")
    lines = [f"# Model card: `{config.name}`", ""]
    if simulated:
        lines += [
            "> **Trained on simulated data** (cohorts the simulator marked: the embedded default or the example "
            "study, with a planted signature): this card shows what the platform reports, not a model of "
            "patients.",
            "",
        ]
    lines += [
        "## Model details",
        "",
        f"- {model.name} on feature set `{features.name}` ({train.get('n_features')} features), covariates "
        f"{', '.join(model.covariates) or 'none'} adjusted inside every training fold",
        f"- trained by repeated nested cross-validation: {cv.repeats} × {cv.outer_folds} outer × "
        f"{cv.inner_folds} inner folds, {cv.n_trials} Optuna trials per outer fold; the locked model is the "
        f"ensemble of the {n_fold_models or cv.repeats * cv.outer_folds} fold models (mean decision score, "
        "Platt-calibrated)",
        f"- registered model: {name} version {version}" if name else "- not registered in MLflow",
        "",
        "## Intended use",
        "",
        "Research only: to study whether pre-treatment grey-matter volume predicts response to one IV ketamine "
        f"infusion (response = at least {100 * outcome.threshold:.0f} % reduction of {outcome.baseline} to "
        f"{outcome.followup}). Not a clinical decision tool, not for treatment allocation, not validated "
        "prospectively. It applies, at most, to patients like those it was trained on:",
        "",
        *population(training_table, participants),
        "",
        "## Training data",
        "",
        f"Cohort `{train.get('cohort')}`: n = {train.get('n')}, {train.get('responders')} responders; "
        f"feature table md5 {prov.get('feature_table_md5') or (train.get('provenance') or {}).get('feature_table_md5')}.",
        "",
        "## Evaluation data and results",
        "",
        "Discovery: the out-of-fold ensemble of the nested CV (never the locked model on its own training "
        f"data), p = permutation test of the whole procedure ({permutation.get('n', 0)} permutations). Other "
        "groups: the locked model, never refitted; p = label permutations with the predictions fixed; "
        "95 % CIs: stratified bootstrap.",
        "",
        markdown_table(results_table(evaluation.get("cohorts", {}))),
        "",
    ]
    spec = evaluation.get("treatment_specificity") or {}
    if spec:
        diff = spec["auc_difference"]
        lines += [
            f"Treatment specificity: AUC external − control {diff['difference']:+.3f} (permutation p = "
            f"{diff['p_value']:.3g}); score × treatment interaction p = {spec['interaction']['p_value']:.3g}.",
            "",
        ]
    lines += ["## Subgroups", ""]
    if subgroups is not None and len(subgroups["heterogeneity"]):
        tests = subgroups["heterogeneity"]
        tested = tests[tests["p"].notna()]
        # the calibrated p (parametric bootstrap in small cells), never the asymptotic one; Holm beside it
        small = tested[tested["p"].astype(float) <= 0.05]  # a Monte Carlo p: rejected at p <= alpha
        holm = "p_holm" in tested
        lines.append(
            f"{len(tested)} heterogeneity tests (score × subgroup, likelihood-ratio statistic, p by "
            f"parametric bootstrap in small cells) over {tests['grouping'].nunique()} groupings; p <= 0.05: "
            + (
                ", ".join(
                    f"{r.grouping} in {r.group} (p = {float(r.p):.3g}"
                    + (f", Holm-adjusted {float(r.p_holm):.3g}" if holm else "")
                    + ")"
                    for r in small.itertuples()
                )
                or "none"
            )
            + ". Per level with CIs: `evaluate/subgroups/` and the report. Many tests: a single small p is a "
            "question for the next cohort, not a finding."
        )
    else:
        lines.append("Not computed.")
    lines += ["", "## Calibration", ""]
    for group, (y, probability) in calibration.items():
        lines.append(
            f"- {group}: observed responder fraction {np.mean(y):.2f}, mean predicted P(response) "
            f"{np.mean(probability):.2f} (n = {len(y)})"
        )
    lines += ["", "## Known limitations", ""]
    limits = []
    if unseen_sites:
        limits.append(
            f"Sites {', '.join(unseen_sites)} were not in training: their scores carry their scanner's offsets "
            "unless aligned (reported separately after site alignment)."
        )
    limits += [
        "The model cannot tell a left-right flipped image from a correct one (the plausibility checks see "
        "volumes, not orientation labels); check orientation before scoring.",
        f"Trained on {train.get('n')} patients from {training_table['site'].nunique()} site(s): estimates of "
        "performance carry the wide intervals above; external cohorts usually score lower than the "
        "discovery cross-validation.",
        "Only the population described under Intended use: other ages, diagnoses, treatments (e.g. "
        "esketamine, repeated infusions) or outcome definitions are outside what was tested.",
    ]
    lines += [f"- {text}" for text in limits]
    lines += [
        "",
        "## Ethical considerations and caveats",
        "",
        "- A predicted non-responder must not be denied treatment on this model's word: it was not built or "
        "tested for that, and false negatives are frequent (see sensitivity).",
        "- Subgroup results are small-sample estimates; absence of detected heterogeneity is not evidence of "
        "equal performance.",
        "- Brain images are identifiable health data: keep scans, feature tables and patient cards under the "
        "data protection rules of their source.",
        "",
        "## Provenance",
        "",
        f"- code: git {git.get('commit')}{' (uncommitted changes)' if git.get('dirty') else ''}",
        f"- model sha256: {prov.get('model_sha256')}",
        f"- model source: {prov.get('model_source')}",
        f"- MLflow training run: {prov.get('mlflow_training_run')}",
        f"- seed: {train.get('seed')}",
        "",
    ]
    return "\n".join(lines)
