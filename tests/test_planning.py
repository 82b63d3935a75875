"""Sample sizes and the learning curve, against published examples, closed forms and direct refits.

- Riley et al.'s criteria equal the reference implementation's documented examples (pmsampsize's tests);
- the C statistic -> Cox-Snell R² conversion equals pmsampsize's way (a logistic model fitted to a million
  simulated patients) without its simulation;
- the external-power simulation equals the binomial closed form (balanced cohort, sens = spec, accuracy test),
  the BAC precision its normal approximation, the permutation p of the BAC Fisher's exact test;
- each learning-curve point is the nested CV refitted on its stratified subsample with its own seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import statsmodels.api as sm
from scipy.stats import fisher_exact, norm
from test_train import SPACE, contract_table

from src.evaluation.sample_size import (
    bac_pvalues,
    binomial_power,
    cstat_to_r2cs,
    external_sample_size,
    power_table,
    riley_binary,
    smallest_n,
)

# pmsampsize (R), tests/testthat/test_bin.R: (R2cs, parameters, prevalence) -> n of criteria 1-3, final; EPP
PMSAMPSIZE = [
    ((0.288, 24, 0.174), [623, 668, 221, 668], [4.52, 4.84, 1.6, 4.84]),
    ((0.55, 24, 0.174), [255, 532, 221, 532], [1.85, 3.86, 1.6, 3.86]),
    ((0.288, 36, 0.174), [934, 1002, 221, 1002], [4.51, 4.84, 1.07, 4.84]),
    ((0.288, 24, 0.25), [623, 583, 289, 623], [6.49, 6.07, 3.01, 6.49]),
]


@pytest.mark.parametrize(("inputs", "sizes", "epp"), PMSAMPSIZE)
def test_riley_criteria_equal_pmsampsizes_examples(inputs, sizes, epp):
    result = riley_binary(*inputs)
    assert [c["n"] for c in result["criteria"]] + [result["n"]] == sizes
    assert [c["epp"] for c in result["criteria"]] + [result["epp"]] == epp


@pytest.mark.parametrize(("cstat", "prevalence"), [(0.81, 0.77), (0.75, 0.5), (0.65, 0.2)])
@pytest.mark.slow
def test_c_statistic_to_cox_snell_r2_as_pmsampsize_simulates_it(cstat, prevalence):
    rng = np.random.default_rng(123456)
    n = 1_000_000
    mu = np.sqrt(2) * norm.ppf(cstat)
    events = int(prevalence * n)
    x = np.r_[rng.normal(mu, 1, events), rng.normal(0, 1, n - events)]
    y = np.r_[np.ones(events), np.zeros(n - events)]
    fit = sm.Logit(y, sm.add_constant(x)).fit(disp=0)
    simulated = 1 - np.exp(-2 * (fit.llf - fit.llnull) / n)
    assert cstat_to_r2cs(cstat, prevalence) == pytest.approx(simulated, abs=2e-3)


def _class_scores(accuracy: float, size: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """Scores whose fraction ``accuracy`` falls on the right side of 0 in each class (sens = spec)."""
    right = int(round(accuracy * size))
    positive = np.r_[np.full(right, 1.0), np.full(size - right, -1.0)]
    return positive, -positive


@pytest.mark.parametrize(("n", "accuracy"), [(40, 0.65), (80, 0.62), (120, 0.6)])
def test_simulated_power_equals_the_binomial_closed_form(n, accuracy):
    positive, negative = _class_scores(accuracy)
    table = power_table(positive, negative, [n], 0.5, n_sim=20000, seed=5, bac_test="binomial")
    # Monte-Carlo SE of a power near 0.5 with 20 000 cohorts: 0.0035
    assert table["power_bac"].item() == pytest.approx(binomial_power(n, accuracy), abs=0.015)


def test_bac_precision_equals_its_normal_approximation():
    sens, spec, n = 0.7, 0.6, 400
    positive = np.r_[np.full(700, 1.0), np.full(300, -1.0)]
    negative = np.r_[np.full(600, -1.0), np.full(400, 1.0)]
    table = power_table(positive, negative, [n], 0.5, n_sim=20000, seed=2)
    closed = 1.959964 * np.sqrt(sens * (1 - sens) / 200 + spec * (1 - spec) / 200) / 2
    assert table["halfwidth_bac"].item() == pytest.approx(closed, rel=0.05)
    assert table["mean_bac"].item() == pytest.approx(0.65, abs=0.002)


def test_the_bac_permutation_p_is_fishers_exact_test():
    for tp, tn, n1, n0 in [(10, 8, 14, 12), (5, 5, 10, 10), (20, 3, 25, 9)]:
        fisher = fisher_exact([[tp, n1 - tp], [n0 - tn, tn]], alternative="greater").pvalue
        assert bac_pvalues(np.array([tp]), np.array([tn]), n1, n0)[0] == pytest.approx(fisher, rel=1e-9)


def test_sizes_needed_grow_as_the_model_weakens_and_the_smallest_n_is_stable():
    strong = external_sample_size(*_class_scores(0.75), 0.5, n_sim=1000, seed=1)["summary"]
    weak = external_sample_size(*_class_scores(0.6), 0.5, n_sim=1000, seed=1)["summary"]
    assert (
        strong["n_power80_bac"] < weak["n_power80_bac"] and strong["n_power80_bac"] < strong["n_power90_bac"]
    )
    # the closed form agrees on the order of the n (permutation test vs binomial: close for balanced cohorts)
    closed = next(n for n in range(10, 400) if binomial_power(n, 0.75) >= 0.8)
    assert abs(strong["n_power80_bac"] - closed) <= 15
    table = pd.DataFrame({"n": [10, 20, 30, 40], "power": [0.5, 0.81, 0.79, 0.9]})
    assert smallest_n(table, "power", 0.8) == 40  # crossed twice: from where it stays above
    assert smallest_n(table.assign(power=0.1), "power", 0.8) is None


def test_each_learning_curve_point_is_the_nested_cv_on_its_subsample():
    from sklearn.base import clone

    from src.validation.estimator import NestedCVClassifier
    from src.validation.learning_curve import curve_summary, learning_curve, subsample
    from src.validation.nested_cv import CVConfig
    from src.validation.permutation import fitted_statistic
    from src.validation.seeds import Stream, derive_seed

    table = contract_table(n=60, seed=8)
    X = table[["age", "sex", "tiv", "site", *[c for c in table.columns if c.startswith("gm_")]]]
    y = table["response"].to_numpy()
    estimator = NestedCVClassifier(SPACE, CVConfig(repeats=2, outer_folds=3, inner_folds=3, n_trials=3))
    curve = learning_curve(estimator, X, y, [0.6, 1.0], 2, repeats=1, seed=9, n_jobs=1)
    assert len(curve) == 4 and set(curve["n"]) == {round(0.6 * len(y)), len(y)}
    for row in curve.itertuples():
        rows = subsample(
            y, row.fraction, derive_seed(9, Stream.LEARNING_CURVE, int(round(1000 * row.fraction)), row.draw)
        )
        assert abs(y[rows].mean() - y.mean()) < 0.05  # stratified
        fitted = clone(estimator).set_params(
            random_state=derive_seed(9, Stream.LEARNING_CURVE, int(round(1000 * row.fraction)), row.draw, 1)
        )
        fitted.set_params(cv=type(estimator.cv)(**{**estimator.cv.__dict__, "repeats": 1}))
        fitted.fit(X.iloc[rows].reset_index(drop=True), y[rows])
        assert row.bac == pytest.approx(fitted_statistic(fitted), abs=1e-12)
    # draws differ (their own splits), and the summary is their mean and SD
    full = curve[curve["fraction"] == 1.0]
    assert full["bac"].nunique() == 2 or full["auc"].nunique() == 2
    summary = curve_summary(curve).set_index("fraction")
    assert summary.loc[1.0, "bac_mean"] == pytest.approx(full["bac"].mean())


def test_the_plan_says_plainly_when_the_discovery_model_is_not_significant():
    """src.plan's power figures rest on the discovery performance: a model whose own permutation p is 0.178
    gets that said in the plan, its markdown and the console (it used to be computed without a word)."""
    from src.plan import discovery_significance

    null = discovery_significance({"p_value": 0.178, "n": 1000})
    assert not null["significant"] and "not significant: its permutation p is 0.178 (1000" in null["note"]
    assert discovery_significance({"p_value": 0.004, "n": 1000})["significant"]
    assert "no permutation test" in discovery_significance(None)["note"]
    from src.evaluation.planning import plan_parts, summary_lines

    plan = {
        "discovery_significance": null,
        "external_validation": {},
        "development": {"note": "not computed"},
        "learning_curve": {
            "summary": [],
            "skipped_fractions": [],
            "fractions": [1.0],
            "repeats": 1,
            "draws": 2,
        },
    }
    assert any(isinstance(part, str) and part == null["note"] for part in plan_parts(plan))
    assert any("not significant" in line for line in summary_lines("gm_only", plan, Path("out")))
