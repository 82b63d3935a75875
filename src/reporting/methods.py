"""A methods section in the TRIPOD+AI structure (Collins et al., BMJ 2024), written from the resolved config and
the run's own numbers, so the text always describes what was actually run. No reference tool generates
TRIPOD+AI prose from a pipeline config, hence this module.

Each entry is ``(item, heading, text)``; items that the pipeline cannot know (ethics approval, funding,
blinding of outcome assessors) are stated as such, for the authors to complete.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from src.config.settings import ExperimentConfig, FeaturesSettings, ModelSettings
from src.data.cohorts import discovery_cohort


def _space(model: ModelSettings) -> str:
    parts = []
    for name, spec in model.search_space.items():
        if spec["type"] == "categorical":
            parts.append(f"{name} ∈ {{{', '.join(map(str, spec['choices']))}}}")
        else:
            scale = "log-uniform" if spec.get("log") else "uniform"
            parts.append(f"{name} {scale} in [{spec['low']:g}, {spec['high']:g}]")
    return "; ".join(parts)


def _features(features: FeaturesSettings, n_features: int | None) -> str:
    count = f" ({n_features} features)" if n_features else ""
    if features.kind == "voxel":
        smooth = features.smoothing_fwhm
        return (
            f"modulated grey-matter (GM) voxel values{count}, resampled to {features.resolution} mm"
            + (f" after Gaussian smoothing (FWHM {smooth} mm)" if smooth else "")
            + f", inside a data-independent mask (MNI152 GM template probability > {features.mask_threshold})"
        )
    tissues = " and ".join(features.tissues)
    return (
        f"regional {tissues} volumes in ml{count}: the modulated tissue maps summed within each region of the "
        f"{features.atlas.upper()} atlas (nilearn NiftiLabelsMasker)"
    )


def tripod_ai_methods(
    config: ExperimentConfig, train: Mapping[str, Any], evaluation: Mapping[str, Any] | None
) -> list[tuple[str, str, str]]:
    """Methods paragraphs keyed by TRIPOD+AI item.

    Parameters
    ----------
    config : the experiment's settings (its ``train/config.yaml``).
    train : the train ``metrics.json`` document.
    evaluation : the evaluate ``metrics.json`` document (None if the experiment was not evaluated).
    """
    data, model, cv = config.data, config.model, config.cv
    outcome = data.outcome
    ev = config.evaluation
    signature = (data.simulation or {}).get("signature", {})
    cohorts = (evaluation or {}).get("cohorts", {})
    simulated = data.name == "simulated"
    discovery = train.get("cohort") or discovery_cohort(data)
    covariates = ", ".join(model.covariates)
    perm = train.get("permutation") or {}
    eval_cohorts = ", ".join(
        f"{name} (n = {cohorts[name]['n']}, {cohorts[name]['responders']} responders)"
        for name in cohorts
        if name != "discovery"
    )
    items = [
        (
            "5a",
            "Source of data",
            (
                "Simulated cohorts (the embedded default): GM/WM/CSF maps generated from the MNI152 templates "
                "bundled with nilearn, with site effects, age/sex/TIV effects and a planted response signature "
                f"(effect size d = {signature.get('effect_size')} in "
                f"{len(signature.get('regions', []))} regions), in the sizes "
                "of the seed study."
                if simulated
                else f"BIDS-style cohorts under {data.root} (derivatives pipeline {data.pipeline!r}, "
                f"space {data.space})."
            ),
        ),
        (
            "6a",
            "Participants",
            f"Development cohort {discovery!r}: n = {train['n']} ({train['responders']} responders), "
            f"treated with a single IV ketamine infusion. Evaluation cohorts: {eval_cohorts or 'none'}.",
        ),
        (
            "7",
            "Data preparation",
            "Tissue maps on one reference grid per cohort (mismatching grids are "
            + ("rejected" if data.on_grid_mismatch == "error" else "resampled with a warning")
            + "); total intracranial volume (TIV) from GM + WM + CSF unless supplied.",
        ),
        (
            "8a",
            "Outcome",
            f"Response = ({outcome.baseline} − {outcome.followup}) / {outcome.baseline} ≥ "
            f"{outcome.threshold} (MADRS reduction at 24 h); positive class: {outcome.positive}. "
            "Blinding of outcome assessment to the imaging data: to be stated by the authors.",
        ),
        (
            "9a",
            "Predictors",
            f"{_features(config.features, train.get('n_features'))}; covariates {covariates} "
            "(regressed out of every feature inside each training split, then dropped).",
        ),
        (
            "10",
            "Sample size",
            f"All available participants were used (n = {train['n']}); no sample-size calculation. Uncertainty "
            f"is shown by {cv.repeats} CV repeats, bootstrap CIs ({ev.n_bootstrap} resamples) and "
            "label-permutation tests.",
        ),
        (
            "11",
            "Missing data",
            "Participants without a follow-up MADRS are excluded (listed in the feature manifest); missing "
            "images or covariates stop the pipeline with an error naming the subject.",
        ),
        (
            "12a",
            "Data use",
            f"Repeated nested cross-validation on the development cohort: {cv.repeats} repeats × "
            f"{cv.outer_folds} stratified outer folds; in each outer-training part "
            f"{cv.inner_folds} stratified inner folds. Evaluation cohorts were never used for training, "
            "tuning, scaling or calibration.",
        ),
        (
            "12b",
            "Predictor handling",
            "Within every training split (inner and outer): covariate regression, standardisation"
            + (", PCA (variance kept tuned)" if "pca_variance" in model.search_space else "")
            + "; all fitted on the training part only (scikit-learn Pipeline) and applied to its test part.",
        ),
        (
            "12c",
            "Model type and tuning",
            f"Support-vector classifier (libsvm, kernel {model.fixed.get('kernel')}); hyperparameters "
            f"tuned by Optuna ({cv.sampler} sampler, {cv.n_trials} trials per outer fold, "
            f"{cv.n_startup_trials} random start-up trials) maximising mean inner balanced accuracy; "
            f"search space: {_space(model)}. Ties go to the smallest C. The locked model is the ensemble of all "
            f"{cv.repeats * cv.outer_folds} outer-fold models (mean decision score), Platt-calibrated "
            "on the out-of-fold ensemble scores.",
        ),
        (
            "12d",
            "Heterogeneity (sites)",
            "Site is a covariate regressed out within training splits; unseen evaluation sites fall back to "
            "the reference site level. "
            + (
                "Results are also reported after label-free alignment of each evaluation site's features to the "
                "training distribution (ComBat with the training cohort as reference batch, "
                + (
                    "empirical-Bayes shrinkage of the site's location and scale"
                    if ev.alignment_method == "eb"
                    else "the site's own location and scale per feature"
                )
                + ", no outcomes used)."
                if ev.harmonize
                else ""
            ),
        ),
        (
            "12e",
            "Performance measures",
            "Balanced accuracy (BAC, threshold 0 on the decision score), sensitivity, specificity, PPV, NPV, "
            f"ROC AUC; stratified bootstrap 95 % CIs (BCa, {ev.n_bootstrap} resamples, scipy); "
            "calibration (Brier score, reliability table in quintiles with Wilson 95 % CIs) and decision-curve "
            "net benefit (dcurves). Development performance is the out-of-"
            "fold ensemble of the nested CV. Significance of the whole procedure: "
            + (
                f"{perm.get('n')} label permutations re-running nested CV ({perm.get('repeats')} repeat each), "
                "p = (1 + #null ≥ observed) / (1 + n)"
                if perm
                else "no permutation test run"
            )
            + f"; evaluation cohorts: {ev.n_permutations} label permutations with predictions fixed. "
            "Treatment specificity: permutation test of AUC(external) − AUC(control) and the score × treatment "
            "likelihood-ratio test (logistic regression, statsmodels). Interpretation of linear models: the "
            "CV-ratio of each feature's weight over the fold models, corrected for their overlapping training "
            "sets (Nadeau & Bengio 2003), with Benjamini-Hochberg FDR q < 0.05 across features.",
        ),
        (
            "13",
            "Class imbalance",
            "Stratified folds; balanced accuracy as tuning objective; class weighting tuned as a "
            "hyperparameter where listed in the search space.",
        ),
        (
            "14",
            "Fairness",
            "Performance by sex or age group is not reported by the pipeline; sex and age are covariates.",
        ),
        (
            "15",
            "Model output",
            "Decision score (> 0: predicted responder) and Platt-calibrated probability of response.",
        ),
        (
            "16",
            "Development vs evaluation",
            "Identical feature extraction, atlas and covariates; the locked model is applied unchanged; "
            "feature columns must match the model's exactly.",
        ),
        (
            "17",
            "Ethics",
            "Not applicable to simulated data." if simulated else "To be stated by the authors.",
        ),
        (
            "18",
            "Open science",
            f"Code: this repository (commit {train.get('provenance', {}).get('git', {}).get('commit')}); "
            f"random seed {config.seed}; configuration, data hashes and MLflow run ids in the "
            "provenance section. Funding, conflicts of interest and registration: to be stated by the authors.",
        ),
    ]
    return items
