"""Evaluation statistics, treatment specificity, label-free harmonisation, interpretation, entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, small_simulation
from scipy.stats import kstest, norm
from sklearn.metrics import balanced_accuracy_score, roc_auc_score
from test_train import contract_table

from src.data.loader import load_cohort
from src.data.simulate import simulate_cohorts
from src.evaluation.clinical import decision_curve
from src.evaluation.harmonize import SiteAligner
from src.evaluation.specificity import auc_difference_test, interaction_test
from src.evaluation.statistics import bac_auc_for_labels, bootstrap_ci, permutation_pvalues
from src.features.extract import FeatureSet, build_feature_table
from src.interpretation.regions import hemisphere, lobe, weight_summary
from src.models.search_space import SearchSpace
from src.validation.nested_cv import CVConfig, run_nested_cv


def test_vectorised_metrics_equal_sklearn():
    rng = np.random.default_rng(0)
    scores = np.round(rng.normal(size=40), 1)  # ties on purpose
    labels = np.array([rng.permutation(np.r_[np.ones(18, int), np.zeros(22, int)]) for _ in range(20)])
    bac, auc = bac_auc_for_labels(labels, scores)
    for i, y in enumerate(labels):
        assert bac[i] == pytest.approx(balanced_accuracy_score(y, scores > 0))
        assert auc[i] == pytest.approx(roc_auc_score(y, scores))


def test_permutation_pvalues_are_uniform_under_random_labels():
    rng = np.random.default_rng(1)
    p_bac, p_auc = [], []
    for i in range(400):
        y = rng.permutation(np.r_[np.ones(20, int), np.zeros(20, int)])
        result = permutation_pvalues(y, rng.normal(size=40), n=400, seed=i)
        p_bac.append(result["p_bac"])
        p_auc.append(result["p_auc"])
    assert kstest(p_auc, "uniform").pvalue > 0.01
    assert 0.02 < np.mean(np.array(p_auc) <= 0.05) < 0.09
    # BAC takes few distinct values, so its p-values are conservative (never too small), not uniform
    assert np.mean(np.array(p_bac) <= 0.05) <= 0.07 and 0.45 < np.mean(p_bac) < 0.65


def test_permutation_pvalue_detects_signal_in_seconds():
    rng = np.random.default_rng(2)
    y = np.r_[np.ones(25, int), np.zeros(26, int)]
    result = permutation_pvalues(y, rng.normal(size=51) + 1.5 * y, n=10000)
    assert result["p_auc"] < 0.001 and result["n_permutations"] == 10000


def test_bootstrap_ci_coverage_near_nominal():
    """Scores ~ N(delta * y, 1): true AUC = Phi(delta / sqrt 2), true BAC at 0 = (Phi(delta) + 0.5) / 2."""
    delta = 1.0
    true = {"auc": norm.cdf(delta / np.sqrt(2)), "bac": (norm.cdf(delta) + 0.5) / 2}
    rng = np.random.default_rng(3)
    covered = {k: 0 for k in true}
    reps = 300
    for i in range(reps):
        y = np.r_[np.ones(40, int), np.zeros(40, int)]
        ci = bootstrap_ci(y, rng.normal(size=80) + delta * y, n=1000, seed=i)
        for k in true:
            covered[k] += ci[k][0] <= true[k] <= ci[k][1]
    for k, hits in covered.items():
        assert 0.88 <= hits / reps <= 0.99, (k, hits / reps)


def test_treatment_specificity_tests():
    rng = np.random.default_rng(4)
    y_k, y_s = rng.integers(0, 2, 60), rng.integers(0, 2, 60)
    s_k, s_s = rng.normal(size=60) + 1.5 * y_k, rng.normal(size=60)
    strong = auc_difference_test(y_k, s_k, y_s, s_s, n=2000)
    assert strong["difference"] > 0.2 and strong["p_value"] < 0.01
    same = auc_difference_test(y_k, rng.normal(size=60), y_s, s_s, n=2000)
    assert same["p_value"] > 0.05
    inter = interaction_test(np.r_[y_k, y_s], np.r_[s_k, s_s], np.r_[np.ones(60), np.zeros(60)])
    assert inter["p_value"] < 0.05 and inter["interaction_log_odds_per_sd"] > 0


def test_decision_curve_reference_strategies():
    y = np.array([1, 1, 0, 0])
    dca = decision_curve(y, np.array([0.9, 0.6, 0.4, 0.1]), thresholds=np.array([0.5]))
    row = dca.iloc[0]
    assert row["net_benefit_model"] == pytest.approx(0.5)  # 2 TP, 0 FP of 4
    assert row["net_benefit_treat_all"] == pytest.approx(0.5 - 0.5 * 1.0)


def test_site_alignment_never_reads_outcomes_and_matches_training_distribution():
    train = contract_table(n=60, seed=5)
    new = contract_table(n=30, seed=6).assign(site="newsite", madrs_baseline=30, madrs_24h=10)
    features = [c for c in train.columns if c.startswith("gm_")]
    new[features] = new[features] * 1.3 + 2.0  # a scanner effect
    new[features] = new[features].astype("float32")  # as voxel tables are stored
    aligner = SiteAligner(features).fit(train)
    aligned = aligner.transform(new)
    scrambled = new.assign(response=1 - new["response"], madrs_24h=np.arange(30), madrs_baseline=60)
    pd.testing.assert_frame_equal(aligner.transform(scrambled)[features], aligned[features])
    trained_on_scrambled = SiteAligner(features).fit(train.assign(response=0))
    np.testing.assert_array_equal(trained_on_scrambled.mean_, aligner.mean_)
    # the new site's covariate-adjusted features now have the training residual mean and SD
    residuals = aligner.residualizer_.transform(aligned[["age", "sex", "tiv", *features]])
    np.testing.assert_allclose(residuals.mean(axis=0), aligner.mean_, atol=1e-8)
    np.testing.assert_allclose(residuals.std(axis=0, ddof=1), aligner.scale_, rtol=1e-8)


def test_region_names_to_hemisphere_and_lobe():
    assert (hemisphere("Frontal_Sup_2_L"), lobe("Frontal_Sup_2_L")) == ("left", "frontal")
    assert (hemisphere("Cerebelum_Crus1_R"), lobe("Cerebelum_Crus1_R")) == ("right", "cerebellum")
    assert (hemisphere("Vermis_6"), lobe("Vermis_6")) == ("midline", "cerebellum")
    assert (hemisphere("Left_Cerebellum_Exterior"), lobe("Left_Cerebellum_Exterior")) == (
        "left",
        "cerebellum",
    )


def test_interpretation_recovers_a_different_planted_signature(tmp_path, default_config):
    """Nothing is tied to frontal/cerebellar: plant temporal/occipital/parietal regions instead."""
    planted = [
        {"name": "Temporal_Sup_L", "sign": 1},
        {"name": "Temporal_Mid_R", "sign": 1},
        {"name": "Precuneus_L", "sign": -1},
        {"name": "Occipital_Mid_R", "sign": -1},
    ]
    sim = small_simulation(default_config, {"discovery": (160, 80)}, resolution=6.0, seed=33)
    sim["signature"] = {"effect_size": 0.8, "regions": planted}
    simulate_cohorts(sim, tmp_path, n_jobs=2, progress=False)
    cohort = load_cohort(tmp_path / "discovery", tissues=("GM", "WM", "CSF"))
    table, side = build_feature_table(cohort, FeatureSet(name="gm_roi"), n_jobs=2)
    features = [c for c in table.columns if c.startswith("gm_")]
    model_cfg = default_config["model"]
    result = run_nested_cv(
        table[[*model_cfg["covariates"], *features]],
        table["response"].to_numpy(),
        SearchSpace.from_config(model_cfg),
        CVConfig(repeats=2, outer_folds=5, inner_folds=3, n_trials=10),
        seed=1,
        n_jobs=2,
    )
    regions = weight_summary(result.models, features, table, side["regions"])
    by_size = regions.reindex(regions["standardised_weight"].abs().sort_values(ascending=False).index)
    top = by_size.head(6).set_index("region")
    for spec in planted:
        assert spec["name"] in top.index, by_size.head(10)[["region", "standardised_weight", "cvr"]]
        assert np.sign(top.loc[spec["name"], "mean_weight"]) == spec["sign"]
        assert top.loc[spec["name"], "sign_consistency"] >= 0.9
        assert abs(top.loc[spec["name"], "cvr"]) > 2  # reliably non-zero across the fold models
    assert not by_size.head(4)["region"].str.startswith(("Frontal", "Cerebelum")).any()


def test_evaluate_entry_point_and_column_check(tmp_path):
    features = tmp_path / "features" / "gm_roi"
    features.mkdir(parents=True)
    for i, name in enumerate(["discovery", "external_a", "external_b", "saline"]):
        table = contract_table(n=40 if i == 0 else 24, seed=10 + i, signal=0.0 if name == "saline" else 2.0)
        table.assign(site=name, treatment="saline" if name == "saline" else "ketamine").to_parquet(
            features / f"{name}.parquet", index=False
        )
    common = [
        f"paths.features={tmp_path / 'features'}",
        f"paths.output={tmp_path / 'out'}",
        "n_jobs=1",
        "tracking.enabled=false",
        f"hydra.run.dir={tmp_path}/hydra",
    ]
    run = dict(cwd=ROOT, capture_output=True, text=True)
    train = subprocess.run(
        [
            sys.executable,
            "-m",
            "src.train",
            "+experiment=gm_only",
            "cv.repeats=1",
            "cv.outer_folds=4",
            "cv.inner_folds=3",
            "cv.n_trials=4",
            "permutation.n=0",
            *common,
        ],
        **run,
    )
    assert train.returncode == 0, train.stderr
    evaluate = [
        sys.executable,
        "-m",
        "src.evaluate",
        "+experiment=gm_only",
        "evaluation.n_permutations=1000",
        "evaluation.n_bootstrap=500",
        *common,
    ]
    done = subprocess.run(evaluate, **run)
    assert done.returncode == 0, done.stderr
    out = tmp_path / "out" / "gm_only" / "evaluate"
    metrics = json.loads((out / "metrics.json").read_text())
    # what is scored follows the roles of the data config: external pooled and alone, the control cohort
    assert set(metrics["cohorts"]) == {"discovery", "external", "external_a", "external_b", "control"}
    assert metrics["groups"]["control"] == {"role": "control", "cohorts": ["saline"]}
    assert metrics["cohorts"]["external"]["n"] == 48 and "ci95" in metrics["cohorts"]["control"]
    assert set(metrics["cohorts_site_aligned"]) == {"external", "external_a", "external_b", "control"}
    assert metrics["cohorts"]["external"]["auc"] > metrics["cohorts"]["control"]["auc"]
    for name in (
        "paper_table.csv",
        "paper_table.md",
        "regions.csv",
        "calibration.csv",
        "decision_curve.csv",
        "curves.png",
        "predictions.csv",
    ):
        assert (out / name).is_file(), name
    assert "paper BAC" in (out / "paper_table.md").read_text()
    # bad evaluation tables (a column missing or a value missing in one cohort): tests/test_errors.py
