"""Subgroup performance and its heterogeneity test, against independent recomputation and the simulator.

- the per-level metrics (fairlearn's MetricFrame inside) equal scikit-learn's on each level's rows, the n per
  level and the too-small rule are the table's, subjects without a value are left out;
- a signature planted in women only (the simulator's ``signature.sexes``) shows as a score x sex interaction
  (LR p < 0.05), the uniform default does not (p > 0.05 on most seeds);
- the model card is written from the run's own numbers: change one and the card changes.
"""

from __future__ import annotations

import copy

import numpy as np
import pandas as pd
import pytest
from conftest import small_simulation
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score, recall_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from src.config.settings import ExperimentConfig
from src.data.simulate import build_anatomy, regional_log_effects, resolve_signature, simulate_participants
from src.evaluation.results import CohortResult
from src.evaluation.subgroups import (
    TOO_SMALL,
    age_band_labels,
    grouping_columns,
    heterogeneity_table,
    heterogeneity_test,
    subgroup_metrics,
    subgroup_table,
    tertile_labels,
)
from src.reporting.model_card import model_card


def _data(seed: int = 0, n: int = 160):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    decision = rng.normal(size=n) + 0.8 * (y - 0.5)
    probability = 1 / (1 + np.exp(-decision))
    groupings = pd.DataFrame(
        {
            "sex": rng.choice(["F", "M"], n, p=[0.6, 0.4]),
            "site": rng.choice(["a", "b", "c"], n, p=[0.5, 0.45, 0.05]),
            "listed": pd.Series(rng.choice(["x", "y"], n)).where(rng.random(n) > 0.1, None),
        }
    )
    return y, decision, probability, groupings


def test_subgroup_metrics_equal_sklearn_on_each_levels_rows():
    y, decision, probability, groupings = _data()
    table = subgroup_table(y, decision, probability, groupings, min_n=15, n_boot=200, seed=1, group="g")
    for row in table.itertuples():
        values = groupings[row.grouping]
        rows = (values == row.level).to_numpy()
        assert row.n == rows.sum() and row.responders == y[rows].sum()
        if rows.sum() < 15:
            assert row.status == TOO_SMALL and pd.isna(row.bac)
            continue
        assert row.status == "ok"
        pred = (decision[rows] > 0).astype(int)
        assert row.bac == pytest.approx(balanced_accuracy_score(y[rows], pred), abs=1e-12)
        assert row.sensitivity == pytest.approx(recall_score(y[rows], pred), abs=1e-12)
        assert row.specificity == pytest.approx(recall_score(y[rows], pred, pos_label=0), abs=1e-12)
        assert row.auc == pytest.approx(roc_auc_score(y[rows], decision[rows]), abs=1e-12)
        assert row.observed == pytest.approx(y[rows].mean())
        assert row.mean_predicted == pytest.approx(probability[rows].mean())
        assert row.bac_low <= row.bac <= row.bac_high and row.auc_low <= row.auc <= row.auc_high
    # the 5 % site is too small; subjects without the listed column's value are not in its levels
    assert set(table.query("grouping == 'site' and status == 'too small'")["level"]) == {"c"}
    listed = table.query("grouping == 'listed'")
    assert listed["n"].sum() == groupings["listed"].notna().sum()
    # MLflow metrics: one per reported level and metric, one heterogeneity p per grouping
    tests = heterogeneity_table(y, decision, groupings, table, group="g")
    metrics = subgroup_metrics(table, tests)["g"]
    assert metrics["subgroup_auc_sex_F"] == table.query("grouping == 'sex' and level == 'F'")["auc"].item()
    assert "subgroup_bac_site_c" not in metrics and "heterogeneity_p_sex" in metrics


def test_a_one_class_level_is_too_small_and_the_test_uses_reported_levels_only():
    y, decision, probability, groupings = _data(1)
    groupings["site"] = np.where(np.arange(len(y)) < 20, "solo", "rest")
    y = y.copy()
    y[:20] = 1  # one class in "solo"
    table = subgroup_table(y, decision, probability, groupings, min_n=10, n_boot=100, seed=0, group="g")
    assert table.query("grouping == 'site' and level == 'solo'")["status"].item() == TOO_SMALL
    tests = heterogeneity_table(y, decision, groupings[["site"]], table, group="g")
    assert tests["levels"].item() == 1 and tests["p"].item() is None and tests["note"].item() == "one level"


def test_cut_points_and_groupings_from_the_tables():
    ages = pd.Series([18, 29.9, 30, 44.9, 45, 70])
    assert age_band_labels(ages, [30, 45]).tolist() == ["<30", "<30", "30-44", "30-44", ">=45", ">=45"]
    labels = tertile_labels(pd.Series([1, 2, 3, None]), (1.5, 2.5))
    assert labels.tolist()[:3] == ["T1 (<=1.5)", "T2 (1.5-2.5]", "T3 (>2.5)"] and labels.iloc[3] is None
    table = pd.DataFrame(
        {"participant_id": ["a", "b"], "sex": ["F", "M"], "site": ["s", "s"], "age": [20, 50]}
    )
    participants = pd.DataFrame(
        {"participant_id": ["b", "a"], "madrs_baseline": [40, 20], "scanner": ["X", None]}
    )
    out = grouping_columns(
        table,
        participants,
        columns=["scanner"],
        age_bands=[30],
        severity="madrs_baseline",
        cuts={"severity": (25, 35)},
    )
    assert out["severity"].tolist() == ["T1 (<=25)", "T3 (>35)"]
    assert out["scanner"].tolist() == [None, "X"] and out["age_band"].tolist() == ["<30", ">=30"]


def _planted(default_config, sexes, seed: int, n: int = 400) -> dict:
    """The simulator's regional GM of one ketamine cohort (signature in ``sexes`` only; None: everyone),
    scored out of fold by a logistic regression; the heterogeneity test of sex on those scores."""
    sim = copy.deepcopy(small_simulation(default_config, {"discovery": (n, n // 2)}, seed=seed))
    sim["signature"]["sexes"] = sexes
    spec = sim["cohorts"]["discovery"]
    participants = simulate_participants("discovery", spec, sim)
    anatomy = build_anatomy(float(sim["resolution"]), str(sim["atlas"]), sim["anatomy"])
    signature = resolve_signature(anatomy.regions, sim["signature"])
    gm = regional_log_effects(participants, spec, sim, anatomy, signature, "discovery")["GM"]
    y = participants["response"].to_numpy()
    model = make_pipeline(StandardScaler(), LogisticRegression(C=0.05, max_iter=2000))
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    score = cross_val_predict(model, gm, y, cv=folds, method="decision_function")
    return heterogeneity_test(y, score, participants["sex"])


def test_a_signature_planted_in_one_sex_is_heterogeneous_and_the_uniform_one_is_not(default_config):
    planted = [_planted(default_config, ["F"], seed)["p"] for seed in (1, 2, 3)]
    uniform = [_planted(default_config, None, seed)["p"] for seed in (1, 2, 3, 4, 5)]
    assert max(planted) < 0.05, planted
    assert sum(p > 0.05 for p in uniform) >= 4, uniform


def _card(train: dict, cohorts: dict) -> str:
    config = ExperimentConfig(name="gm_only")
    table = pd.DataFrame(
        {"age": [20.0, 60.0], "sex": ["F", "M"], "site": ["s1", "s1"], "treatment": "ketamine"}
    )
    return model_card(
        config=config,
        train=train,
        evaluation={
            "cohorts": cohorts,
            "provenance": {"model_sha256": "abc123", "git": {"commit": "c0ffee"}},
        },
        training_table=table,
        participants=None,
        subgroups=None,
        calibration={"external": (np.array([1, 0, 1]), np.array([0.6, 0.4, 0.7]))},
        unseen_sites=["s9"],
    )


def test_the_model_card_carries_the_runs_own_numbers():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 60)
    scores = rng.normal(size=60) + y
    result = CohortResult.of_scores(y, scores, ci95={"bac": (0.55, 0.8), "auc": (0.6, 0.9)}, p_bac=0.004)
    train = {
        "n": 99,
        "responders": 52,
        "cohort": "discovery",
        "n_features": 120,
        "seed": 7,
        "permutation": {"n": 1000},
    }
    card = _card(train, {"external": result.to_dict()})
    assert f"{100 * result.bac:.1f} (55.0–80.0)" in card
    assert f"{result.auc:.2f} (0.60–0.90)" in card and "0.004" in card
    assert "n = 99, 52 responders" in card and "Sites s9 were not in training" in card
    assert "observed responder fraction 0.67, mean predicted P(response) 0.57" in card
    assert "model sha256: abc123" in card and "git c0ffee" in card
    # change a number in the run's documents: the card follows
    changed = _card({**train, "responders": 50}, {"external": {**result.to_dict(), "auc": 0.123}})
    assert "n = 99, 50 responders" in changed and "0.12 (0.60–0.90)" in changed
    assert "n = 99, 52 responders" not in changed


def test_the_lr_statistic_and_its_degrees_of_freedom_match_an_independent_fit():
    """The statistic against scikit-learn's unpenalised logistic fits of the same two models (one-hot
    levels), the degrees of freedom against the count of extra parameters of the full model, and the
    asymptotic p against scipy's chi-squared with that count (a df of k instead of k - 1 fails here)."""
    from scipy.stats import chi2
    from sklearn.metrics import log_loss

    rng = np.random.default_rng(11)
    n = 300
    levels = pd.Series(rng.choice(["a", "b", "c", "d"], n))
    score = rng.normal(size=n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(0.8 * score + 0.6 * score * (levels == "c"))))).astype(int)
    z = (score - score.mean()) / score.std(ddof=1)
    dummies = pd.get_dummies(levels, drop_first=True).to_numpy(float)
    null = np.column_stack([z, dummies])
    full = np.column_stack([null, z[:, None] * dummies])

    def loglik(X):
        fitted = LogisticRegression(penalty=None, max_iter=10_000, tol=1e-10).fit(X, y)
        return -log_loss(y, fitted.predict_proba(X)[:, 1], normalize=False)

    lr = 2 * (loglik(full) - loglik(null))
    extra = full.shape[1] - null.shape[1]
    test = heterogeneity_test(y, score, levels, n_bootstrap=19)
    assert test["lr"] == pytest.approx(lr, rel=1e-4) and test["df"] == extra == 3
    assert test["p_asymptotic"] == pytest.approx(chi2.sf(lr, extra), rel=1e-3)


def test_the_bootstrap_p_of_the_heterogeneity_test_is_used_in_small_cells_and_chi2_in_large():
    rng = np.random.default_rng(5)
    small_n, large_n = 90, 600
    for n, method in ((small_n, "parametric bootstrap"), (large_n, "chi2")):
        levels = pd.Series(rng.choice(["T1", "T2", "T3"], n))
        y = rng.integers(0, 2, n)
        test = heterogeneity_test(y, rng.normal(size=n) + y, levels, seed=1, n_bootstrap=49)
        assert test["method"].startswith(method), test
        if method == "chi2":
            assert test["p"] == test["p_asymptotic"]
        else:  # on the bootstrap's grid: (1 + count) / (draws + 1)
            assert (test["p"] * 50) == pytest.approx(round(test["p"] * 50))
    # reproducible from its seed
    levels = pd.Series(rng.choice(["T1", "T2", "T3"], small_n))
    y, s = rng.integers(0, 2, small_n), rng.normal(size=small_n)
    assert heterogeneity_test(y, s, levels, seed=4)["p"] == heterogeneity_test(y, s, levels, seed=4)["p"]
