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
from src.evaluation.clinical import calibration_table, decision_curve
from src.evaluation.specificity import auc_difference_test, interaction_test
from src.evaluation.statistics import bac_auc_for_labels, bootstrap_ci, permutation_pvalues
from src.features.extract import FeatureSet, build_feature_table
from src.interpretation.regions import hemisphere, lobe, weight_summary
from src.models.harmonize import SiteAligner
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


def test_decision_curve_away_from_even_odds():
    """Net benefit = TP/n - FP/n * pt/(1-pt), counted by hand (Vickers & Elkin 2006). At pt = 0.5 the
    weight is 1, so only thresholds away from it catch an inverted or missing weight (mutation seen
    failing: ``pt / (1 - pt)`` -> ``(1 - pt) / pt`` in dcurves' net-benefit line)."""
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    proba = np.array([0.9, 0.7, 0.3, 0.8, 0.4, 0.2, 0.1, 0.6])
    dca = decision_curve(y, proba, thresholds=np.array([0.2, 0.5, 0.75])).set_index("threshold")
    # pt = 0.2: treat 7 patients (proba >= 0.2): TP 4, FP 3 -> 4/8 - 3/8 * 1/4; treat all: 4/8 - 4/8 * 1/4
    assert dca.loc[0.2, "net_benefit_model"] == pytest.approx(4 / 8 - 3 / 8 * 0.25)
    assert dca.loc[0.2, "net_benefit_treat_all"] == pytest.approx(4 / 8 - 4 / 8 * 0.25)
    # pt = 0.5: treat 4 (0.9, 0.7, 0.8, 0.6): TP 3, FP 1 -> 3/8 - 1/8
    assert dca.loc[0.5, "net_benefit_model"] == pytest.approx(3 / 8 - 1 / 8)
    # pt = 0.75: treat 2 (0.9, 0.8): TP 1, FP 1 -> 1/8 - 1/8 * 3; treat all: 4/8 - 4/8 * 3
    assert dca.loc[0.75, "net_benefit_model"] == pytest.approx(1 / 8 - 3 / 8)
    assert dca.loc[0.75, "net_benefit_treat_all"] == pytest.approx(4 / 8 - 12 / 8)
    assert (dca["net_benefit_treat_none"] == 0).all()


def test_calibration_table_matches_sklearn_with_wilson_intervals():
    from scipy.stats import binomtest
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(8)
    proba = rng.uniform(size=60)
    y = (rng.uniform(size=60) < proba).astype(int)
    table, brier = calibration_table(y, proba, n_bins=6)
    observed, predicted = calibration_curve(y, proba, n_bins=6, strategy="quantile")
    np.testing.assert_allclose(table["observed_fraction"], observed)
    np.testing.assert_allclose(table["mean_predicted"], predicted)
    assert table["n"].sum() == 60
    for row in table.itertuples():
        ci = binomtest(round(row.observed_fraction * row.n), row.n).proportion_ci(method="wilson")
        assert (row.observed_low, row.observed_high) == pytest.approx((ci.low, ci.high))
    assert brier == pytest.approx(np.mean((proba - y) ** 2))


def test_platt_scaling_recovers_a_known_sigmoid():
    """Scores with P(y=1 | s) = 1 / (1 + exp(-(2 s - 0.5))): Platt's fit recovers slope 2 and intercept
    -0.5 (a sign or a term dropped would not)."""
    from src.validation.ensemble import platt_scaling

    rng = np.random.default_rng(9)
    s = rng.normal(size=20000)
    y = (rng.uniform(size=s.size) < 1 / (1 + np.exp(-(2 * s - 0.5)))).astype(int)
    slope, intercept = platt_scaling(s, y)
    assert slope == pytest.approx(2.0, abs=0.1) and intercept == pytest.approx(-0.5, abs=0.06)


def test_auc_difference_needs_both_classes_in_each_group():
    y = np.array([1, 0, 1, 0, 1, 0])
    with pytest.raises(ValueError, match="second group has only one class"):
        auc_difference_test(y, np.arange(6.0), np.ones(5, int), np.arange(5.0), n=10)


def test_interaction_test_matches_a_direct_likelihood_ratio():
    """statsmodels' Logit against a likelihood ratio from scipy's optimiser on the log-likelihood."""
    from scipy.optimize import minimize
    from scipy.stats import chi2

    rng = np.random.default_rng(10)
    k = np.r_[np.ones(60), np.zeros(60)]
    s = rng.normal(size=120)
    y = (rng.uniform(size=120) < 1 / (1 + np.exp(-(1.2 * s * k)))).astype(int)
    z = (s - s.mean()) / s.std()

    def max_loglik(design: np.ndarray) -> float:
        def negative(beta: np.ndarray) -> float:
            eta = design @ beta
            return float(np.sum(np.logaddexp(0, eta) - y * eta))

        return -minimize(negative, np.zeros(design.shape[1]), method="BFGS").fun

    ones = np.ones(120)
    stat = 2 * (max_loglik(np.column_stack([ones, z, k, z * k])) - max_loglik(np.column_stack([ones, z, k])))
    result = interaction_test(y, s, k)
    assert result["lr_statistic"] == pytest.approx(stat, rel=1e-4)
    assert result["p_value"] == pytest.approx(chi2.sf(stat, 1), rel=1e-3)
    low, high = result["interaction_ci95"]
    assert low < result["interaction_log_odds_per_sd"] < high and low > 0


@pytest.mark.parametrize("method", ["eb", "location_scale"])
def test_site_alignment_equals_neurocombat_ref_batch(method, monkeypatch):
    """Our alignment of an unseen site against neuroCombat's ComBat with the training data as ``ref_batch``
    (no covariates, so both designs are the same). neuroCombat scales by the training SD with ddof=0, ours
    with ddof=1: the aligned deviations from the training mean differ by exactly sqrt(n / (n - 1)).
    Mutation seen failing: the empirical-Bayes shrinkage left out (``method="eb"`` case)."""
    monkeypatch.setattr(np, "int", int, raising=False)  # neuroCombat 0.2.12 still uses np.int (numpy < 1.24)
    from neuroCombat import neuroCombat

    rng = np.random.default_rng(0)
    n_ref, n_new, p = 120, 10, 40
    features = [f"gm_{j}" for j in range(p)]
    ref = pd.DataFrame(rng.normal(5, 1, (n_ref, p)), columns=features).assign(site="train")
    scanner = rng.uniform(0.7, 1.5, p), rng.normal(0.5, 0.3, p)
    new = pd.DataFrame(rng.normal(5, 1, (n_new, p)) * scanner[0] + scanner[1], columns=features)
    new = new.assign(site="new")
    ours = SiteAligner(features, covariates=(), categorical=(), method=method).fit(ref).transform(new)
    both = pd.concat([ref, new], ignore_index=True)
    combat = neuroCombat(
        dat=both[features].to_numpy().T,
        covars=both[["site"]],
        batch_col="site",
        ref_batch="train",
        eb=method == "eb",
    )["data"].T
    np.testing.assert_allclose(combat[:n_ref], ref[features])  # the reference batch is not changed
    mean = ref[features].to_numpy().mean(axis=0)
    np.testing.assert_allclose(
        ours[features].to_numpy() - mean, (combat[n_ref:] - mean) * np.sqrt(n_ref / (n_ref - 1)), rtol=1e-9
    )


def test_site_alignment_leaves_a_small_site_unchanged():
    train = contract_table(n=60, seed=5)
    features = [c for c in train.columns if c.startswith("gm_")]
    new = pd.concat(
        [contract_table(n=12, seed=6).assign(site="big"), contract_table(n=5, seed=7).assign(site="small")],
        ignore_index=True,
    )
    new[features] = new[features] * 1.3 + 2.0
    aligned = SiteAligner(features, min_site_size=8).fit(train).transform(new)
    small = new["site"] == "small"
    pd.testing.assert_frame_equal(aligned[small], new[small])
    assert not np.allclose(aligned.loc[~small, features], new.loc[~small, features])
    assert aligned.attrs["skipped_sites"] == ["small"]


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


@pytest.mark.slow
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


@pytest.mark.slow
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
        "evaluation.weight_permutations=1000",
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
    summary = json.loads((out / "summary.json").read_text())  # DVC's metrics: numbers only
    assert summary["external_bac"] == round(metrics["cohorts"]["external"]["bac"], 4)
    assert summary["control_p_bac"] == round(metrics["cohorts"]["control"]["p_bac"], 4)
    assert summary.pop("data") == metrics["provenance"]["data"]  # which data each row comes from
    assert len(summary) == 7 and all(isinstance(v, float) for v in summary.values())
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
    # the regions called selected are those of the weights' permutation test (q < 0.05)
    regions = pd.read_csv(out / "regions.csv")
    assert {"p_perm", "q_perm", "cvr_corrected"} <= set(regions.columns)
    assert (regions["selected"] == (regions["q_perm"] < 0.05)).all()
    assert regions["p_perm"].min() == pytest.approx(1 / 1001)  # the planted region: no null beats it
    # the console is quiet (no WARNING for the expected unseen sites); Hydra's log file has the full log,
    # with the unseen sites said once for all cohorts
    assert "WARNING" not in done.stderr and "not in training" not in done.stderr
    log = (tmp_path / "hydra" / "evaluate.log").read_text()
    assert log.count("not in training") == 1 and "['external_a', 'external_b', 'saline']" in log
    assert (
        "scoring the evaluation cohorts" in log
        and "nested CV" in (tmp_path / "hydra" / "train.log").read_text()
    )
    # bad evaluation tables (a column missing or a value missing in one cohort): tests/test_errors.py


def test_platt_scaling_of_scores_ranked_the_wrong_way_is_the_base_rate():
    """Out-of-fold scores that rank non-responders above responders: no negative slope (which would invert
    every decision), but the smoothed base rate for everyone."""
    from src.validation.ensemble import platt_scaling

    rng = np.random.default_rng(3)
    s = rng.normal(size=400)
    y = (rng.uniform(size=s.size) < 1 / (1 + np.exp(2 * s))).astype(int)
    slope, intercept = platt_scaling(s, y)
    rate = (y.sum() + 1) / (len(y) + 2)
    assert slope == 0.0 and intercept == pytest.approx(np.log(rate / (1 - rate)))


def test_cohort_results_are_typed_and_written_with_the_same_keys():
    """A scored cohort as a typed result: its metrics equal sklearn's, its JSON keys are the evaluation's
    (p-values of the fixed-prediction test only where one ran), and it reads back from its JSON."""
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from src.evaluation.locked import evaluate_cohort
    from src.evaluation.results import CohortResult

    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 40)
    scores = y + rng.normal(0, 1, 40) - 0.5
    result = evaluate_cohort(y, scores, n_perm=99, n_boot=50, seed=1)
    assert result.bac == pytest.approx(balanced_accuracy_score(y, scores > 0))
    assert result.auc == pytest.approx(roc_auc_score(y, scores)) and result.n_permutations == 99
    written = result.to_dict()
    assert set(written) == {"n", "responders", "bac", "sensitivity", "specificity", "auc", "ppv", "npv"} | {
        "ci95",
        "p_bac",
        "p_auc",
        "n_permutations",
    }
    assert CohortResult.from_dict(json.loads(json.dumps(written))) == result
    discovery = CohortResult.of_scores(y, scores, ci95=result.ci95, p_bac=None)
    assert "p_auc" not in discovery.to_dict() and discovery.to_dict()["p_bac"] is None
