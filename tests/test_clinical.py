"""Clinical predictors: declaration, validation, in-fold imputation (against scikit-learn), unseen codes, the
model file, prediction, and the simulator's ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import make_cohort, rewrite_participants
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.model_selection import GridSearchCV, cross_val_predict
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC

from src.data.clinical import ClinicalError, check_clinical, clinical_features, clinical_variables
from src.data.loader import load_cohort
from src.data.simulate_clinical import fusion_truth, signature_direction, simulate_clinical
from src.models.residualize import CovariateResidualizer
from src.models.search_space import SearchSpace
from src.prediction.score import covariate_warnings
from src.validation.ensemble import EnsembleModel, load_model
from src.validation.nested_cv import CVConfig, inner_splitter, outer_splits, run_nested_cv

DECLARED = {
    "bmi": {"kind": "numeric", "range": [12, 70]},
    "fh": {"kind": "binary", "codes": ["no", "yes"]},
    "failed": {"kind": "ordinal", "range": [0, 30]},
    "drug": {"kind": "categorical", "codes": ["ssri", "snri", "none", "maoi"]},
}
C_GRID = [1e-3, 1e-2, 1e-1, 1.0]


@pytest.mark.parametrize(
    ("declared", "message"),
    [
        ({"madrs_24h": {"kind": "numeric"}}, "'madrs_24h' cannot be a clinical predictor (the outcome"),
        ({"response": {"kind": "binary"}}, "leakage"),
        ({"participant_id": {"kind": "numeric"}}, "an identifier"),
        ({"x": {"kind": "text"}}, "kind must be one of"),
        ({"x": {"kind": "binary", "codes": [0, 1, 2]}}, "exactly two codes"),
        ({"x": {"kind": "categorical"}}, "needs its codes"),
        ({"x": {"kind": "numeric", "range": [5, 1]}}, "low <= high"),
        ({"x": {"kind": "numeric", "unit": "kg"}}, "unknown key(s) ['unit']"),
    ],
)
def test_a_bad_declaration_is_one_line_naming_the_column(declared, message):
    with pytest.raises(ClinicalError, match="data.clinical") as err:
        clinical_variables(declared, outcome_columns=("madrs_24h",))
    assert message in str(err.value)


def _participants(**columns) -> pd.DataFrame:
    base = {"participant_id": ["sub-01", "sub-02", "sub-03"]}
    return pd.DataFrame({**base, **columns}, dtype=object)


@pytest.mark.parametrize(
    ("column", "values", "message"),
    [
        (
            "bmi",
            ["22.5", "80", "n/a"],
            "subject sub-02 has 80 in clinical column 'bmi', outside its declared range",
        ),
        (
            "bmi",
            ["22,5", "30", "31"],
            "subject sub-01 has non-numeric or infinite value '22,5' in clinical column 'bmi'",
        ),
        # without a declared range: infinite and absurd magnitudes refused here, not in scikit-learn's scaler
        ("score", ["1", "inf", "2"], "subject sub-02 has non-numeric or infinite value 'inf' in clinical"),
        ("score", ["1e308", "1", "2"], "subject sub-01 has 1e+308 in clinical column 'score', beyond ±1e+09"),
        ("fh", ["no", "maybe", "yes"], "subject sub-02 has 'maybe' in clinical column 'fh' (declared codes"),
        ("drug", ["ssri", "tca", None], "subject sub-02 has 'tca' in clinical column 'drug'"),
    ],
)
def test_a_value_outside_the_declaration_names_cohort_subject_and_column(column, values, message):
    variables = clinical_variables(DECLARED)
    table = _participants(
        bmi=["22", "23", "24"], fh=["no", "yes", "no"], failed=["2", "3", "4"], drug=["ssri"] * 3
    )
    table["score"] = ["1", "2", "3"]
    variables = (*variables, *clinical_variables({"score": {"kind": "numeric"}}))
    table[column] = values
    with pytest.raises(ClinicalError, match="cohort 'x'") as err:
        check_clinical(table, variables, "cohort 'x'")
    assert message in str(err.value)


def test_coding_missing_values_and_indicators():
    variables = clinical_variables(DECLARED)
    table = _participants(
        bmi=["22.5", "", "30"], fh=["yes", "no", None], failed=["2", "5", "n/a"], drug=["snri", None, "ssri"]
    )
    coded = check_clinical(table.replace({"n/a": None}), variables, "cohort 'x'")
    features = clinical_features(coded, variables)
    assert features.columns.tolist() == [
        "clin_bmi",
        "clin_fh",
        "clin_failed",
        "clin_drug=ssri",
        "clin_drug=snri",
        "clin_drug=none",
        "clin_drug=maoi",
    ]
    np.testing.assert_array_equal(features["clin_bmi"], [22.5, np.nan, 30.0])
    np.testing.assert_array_equal(features["clin_fh"], [1.0, 0.0, np.nan])  # codes in declared order
    np.testing.assert_array_equal(features["clin_drug=snri"], [1.0, np.nan, 0.0])
    assert features.iloc[1][[c for c in features if c.startswith("clin_drug")]].isna().all()


def test_a_cohort_without_a_declared_column_is_refused_when_read(tmp_path):
    root = make_cohort(tmp_path / "external", n=6)
    with pytest.raises(Exception, match=r"no column\(s\) \['bmi'\] declared as clinical predictors"):
        load_cohort(root, with_images=False, clinical=clinical_variables({"bmi": DECLARED["bmi"]}))
    rewrite_participants(root, lambda df: df.assign(bmi=["25"] * (len(df) - 1) + ["n/a"]))
    cohort = load_cohort(root, with_images=False, clinical=clinical_variables({"bmi": DECLARED["bmi"]}))
    assert cohort.participants["bmi"].isna().sum() == 1


def _clinical_data(seed: int, n: int = 80) -> tuple[pd.DataFrame, np.ndarray]:
    """Two imaging-like columns and three clinical columns with ~25 % missing values; some outlying values
    so that a fill fitted on all rows differs visibly from one fitted on the training rows."""
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)])
    X = pd.DataFrame(
        {
            "gm_a": rng.normal(size=n) + 0.6 * y,
            "gm_b": rng.normal(size=n),
            "clin_bmi": rng.normal(28, 6, n) + 3 * y,
            "clin_fh": (rng.random(n) < 0.3 + 0.3 * y).astype(float),
            "clin_x": rng.standard_t(2, n) * 5,
        }
    )
    for column in ("clin_bmi", "clin_fh", "clin_x"):
        X.loc[rng.random(n) < 0.25, column] = np.nan
    return X, y


def _space(kernel: str) -> SearchSpace:
    fixed = {"kernel": kernel, **({"gamma": "scale"} if kernel == "rbf" else {})}
    search = {"C": {"type": "float", "low": min(C_GRID), "high": max(C_GRID), "log": True, "grid": C_GRID}}
    return SearchSpace.from_config({"search_space": search, "fixed": fixed})


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_imputation_inside_the_folds_equals_sklearn_simpleimputer_in_the_pipeline(kernel):
    """Independent truth: cross_val_predict(GridSearchCV(SimpleImputer -> scale -> SVC)) refits the imputer
    on each inner- and outer-training part. The engine's out-of-fold scores equal it (to rounding); an
    engine that filled with all-row means (leakage) differs (broken on purpose: this test fails)."""
    X, y = _clinical_data(5)
    cv = CVConfig(repeats=2, outer_folds=4, inner_folds=3, n_trials=len(C_GRID), sampler="grid")
    result = run_nested_cv(X, y, _space(kernel), cv, seed=11, covariates=[], categorical=[])
    splits = outer_splits(y, cv, seed=11)
    for r in range(cv.repeats):
        search = GridSearchCV(
            Pipeline(
                [
                    ("impute", SimpleImputer(strategy="mean", keep_empty_features=True)),
                    ("scale", StandardScaler()),
                    ("svc", SVC(kernel=kernel, gamma="scale")),
                ]
            ),
            {"svc__C": C_GRID},
            cv=inner_splitter(cv, 11, r),
            scoring="balanced_accuracy",
        )
        repeat = [(train, test) for rr, _, train, test in splits if rr == r]
        expected = cross_val_predict(search, X, y, cv=repeat, method="decision_function")
        np.testing.assert_allclose(result.decision_matrix()[:, r], expected, rtol=0, atol=1e-8)
    # the locked fold models score rows with missing values as their own refit did
    fold = result.folds[0]
    locked = fold.model.decision_function(X.iloc[fold.test])
    np.testing.assert_allclose(locked, fold.decision, atol=1e-8)


def test_each_fold_model_fills_with_its_own_training_means_and_residualises_after():
    """With covariates: the fold model's fill values are the training rows' means (not all rows'), and its
    decisions equal ColumnTransformer(SimpleImputer) -> CovariateResidualizer -> scale -> SVC fitted on
    those rows."""
    X, y = _clinical_data(8, n=90)
    rng = np.random.default_rng(1)
    X.insert(0, "sex", rng.choice(["F", "M"], len(X)))
    X.insert(0, "age", rng.normal(40, 10, len(X)))
    cv = CVConfig(repeats=1, outer_folds=3, inner_folds=3, n_trials=len(C_GRID), sampler="grid")
    result = run_nested_cv(X, y, _space("linear"), cv, seed=2, covariates=["age", "sex"], categorical=["sex"])
    clinical = ["clin_bmi", "clin_fh", "clin_x"]
    for fold in result.folds:
        fill = fold.model.residualizer.fill_
        np.testing.assert_allclose(fill, X.iloc[fold.train][clinical].mean().to_numpy(), rtol=1e-12)
        assert not np.allclose(fill, X[clinical].mean().to_numpy(), rtol=1e-6)  # all rows' would differ
        pipeline = Pipeline(
            [
                (
                    "impute",
                    ColumnTransformer(
                        [("mean", SimpleImputer(strategy="mean"), clinical)],
                        remainder="passthrough",
                        verbose_feature_names_out=False,
                    ).set_output(transform="pandas"),
                ),
                ("residualize", CovariateResidualizer(["age", "sex"], ["sex"])),
                ("scale", StandardScaler()),
                ("svc", SVC(kernel="linear", C=fold.best_params["C"])),
            ]
        ).fit(X.iloc[fold.train], y[fold.train])
        np.testing.assert_allclose(
            fold.decision, pipeline.decision_function(X.iloc[fold.test]), rtol=0, atol=1e-8
        )


def test_an_unseen_code_has_no_weight_and_is_reported(tmp_path):
    """A declared code no training patient had: its indicator is all-zero in training, its weight exactly 0,
    the patient's score is what it would be without it, and the warning says so; missing values likewise."""
    X, y = _clinical_data(3, n=60)
    X["clin_drug=maoi"] = np.where(X["clin_bmi"].isna(), np.nan, 0.0)  # nobody in training
    cv = CVConfig(repeats=1, outer_folds=3, inner_folds=3, n_trials=2, sampler="grid")
    result = run_nested_cv(X, y, _space("linear"), cv, seed=4, covariates=[], categorical=[])
    model = EnsembleModel.from_result(result, training=X)
    table = X.assign(participant_id=[f"sub-{i}" for i in range(len(X))], response=y)
    position = model.feature_columns.index("clin_drug=maoi")
    assert all(m.weights[position] == 0.0 for m in model.models)
    assert model.info["clinical_training_counts"] == {"clin_drug=maoi": 0}
    patient = table.iloc[[0]].copy()
    patient["clin_drug=maoi"], patient["clin_bmi"] = 1.0, np.nan
    without = patient.assign(**{"clin_drug=maoi": 0.0})
    np.testing.assert_allclose(model.decision_function(patient), model.decision_function(without))
    notes = covariate_warnings(model, patient)[0]
    assert "clinical code(s) drug=maoi never seen in training" in notes
    assert "imputed with the training mean: bmi" in notes
    # the model file keeps each fold's fill values: same scores after a save and a verified load
    sha = model.save(tmp_path / "model")
    loaded = load_model(tmp_path / "model", sha)
    np.testing.assert_allclose(
        loaded.decision_function(patient), model.decision_function(patient), atol=1e-12
    )
    assert loaded.clinical_columns == model.clinical_columns


def test_the_simulator_plants_the_configured_effects_and_shared_component():
    """Large draw: each variable's standardised difference between responders and non-responders and the
    BMI's within-class correlation with the imaging-signature score are the configured ones."""
    rng = np.random.default_rng(0)
    n = 40_000
    people = pd.DataFrame({"response": rng.permutation(np.r_[np.ones(n // 2), np.zeros(n // 2)]).astype(int)})
    scores = rng.standard_normal(n)
    clinical = {
        "variables": {
            "bmi": {
                "kind": "numeric",
                "mean": 29,
                "sd": 6,
                "min": 0,
                "max": 100,
                "decimals": 3,
                "d": 0.5,
                "shared": 0.3,
            },
            "fh": {"kind": "binary", "prevalence": 0.35, "d": 0.0},
            "drug": {"kind": "categorical", "codes": ["a", "b"], "probabilities": [0.7, 0.3], "missing": 0.1},
        }
    }
    out = simulate_clinical(people, scores, {"treatment": "ketamine", "signature_scale": 1.0}, clinical, [1])
    bmi = out["bmi"].astype(float)
    r = people["response"] == 1
    pooled = np.sqrt((bmi[r].var() + bmi[~r].var()) / 2)
    assert (bmi[r].mean() - bmi[~r].mean()) / pooled == pytest.approx(0.5, abs=0.03)
    within = np.corrcoef(bmi[r], scores[r])[0, 1]
    assert within == pytest.approx(0.3, abs=0.02)
    assert out["fh"].astype(int).mean() == pytest.approx(0.35, abs=0.01)
    assert (out["drug"] == "n/a").mean() == pytest.approx(0.1, abs=0.01)
    saline = simulate_clinical(people, scores, {"treatment": "saline"}, clinical, [1])
    bmi = saline["bmi"].astype(float)
    assert abs(bmi[r].mean() - bmi[~r].mean()) / pooled < 0.03  # d_saline defaults to no effect


def test_fusion_ground_truth_matches_the_closed_forms():
    """The imaging AUC of the ground truth is Phi(D / sqrt 2); with one Gaussian clinical variable that is
    independent of imaging within class, the fused AUC is Phi(sqrt(D_i^2 + d^2) / sqrt 2)."""
    from scipy.stats import norm

    cholesky = np.linalg.cholesky(np.eye(4) * 0.8 + 0.2)
    signature = pd.DataFrame({"position": [0, 1], "sign": [1, -1], "effect_size": [0.6, 0.6]})
    clinical = {
        "variables": {
            "z": {"kind": "numeric", "mean": 0, "sd": 1, "min": -99, "max": 99, "decimals": 6, "d": 0.8}
        }
    }
    truth = fusion_truth(cholesky, signature, clinical, seed=1)
    _, distance = signature_direction(cholesky, signature)
    assert truth["auc_imaging"] == pytest.approx(norm.cdf(distance / np.sqrt(2)), abs=0.003)
    assert truth["auc_clinical"] == pytest.approx(norm.cdf(0.8 / np.sqrt(2)), abs=0.003)
    assert truth["auc_fused"] == pytest.approx(norm.cdf(np.hypot(distance, 0.8) / np.sqrt(2)), abs=0.003)


def _cohort_with_outcome_copies(root, n: int = 60):
    """A cohort whose MADRS scores vary like a trial's, with a column per kind of copy of the outcome and a
    legitimate strong predictor (a noisy early-improvement-like score, AUC ~0.8)."""
    rng = np.random.default_rng(37)
    baseline = rng.integers(25, 46, n)
    reduction = np.clip(rng.normal(0.5, 0.25, n), 0.0, 1.0)
    followup = np.round(baseline * (1 - reduction)).astype(int)
    relative = (baseline - followup) / baseline
    strong = relative + rng.normal(0, 0.25, n)  # informative, but far from a copy
    rows = [
        {
            "participant_id": f"sub-c{i:02d}",
            "age": 30 + i % 30,
            "sex": "FM"[i % 2],
            "site": "s1",
            "treatment": "ketamine",
            "madrs_baseline": int(baseline[i]),
            "madrs_24h": int(followup[i]),
            "madrs_day1": int(followup[i]),  # the follow-up score under another name
            "pct_reduction": round(100 * relative[i], 1),  # the reduction itself
            "noisy_copy": round(followup[i] + rng.normal(0, 2.0), 1),  # a noisy measurement of it
            "responded": "yes" if relative[i] >= 0.5 else "no",  # the label, coded
            "strong": round(float(strong[i]), 3),
        }
        for i in range(n)
    ]
    make_cohort(root, rows=rows, tissues=("GM",))
    return root, relative >= 0.5


@pytest.mark.parametrize(
    ("column", "spec", "statistic"),
    [
        ("madrs_day1", {"kind": "numeric", "range": [0, 60]}, "with the follow-up score"),
        ("pct_reduction", {"kind": "numeric", "range": [0, 100]}, "with the relative reduction"),
        ("noisy_copy", {"kind": "numeric"}, "with the follow-up score"),
        ("responded", {"kind": "binary", "codes": ["no", "yes"]}, "for the response label on its own"),
    ],
)
def test_a_copy_of_the_outcome_under_another_name_is_refused_by_its_content(
    tmp_path, column, spec, statistic
):
    root, _ = _cohort_with_outcome_copies(tmp_path / "discovery")
    declared = clinical_variables({column: spec, "strong": {"kind": "numeric"}})
    with pytest.raises(
        ClinicalError, match=f"clinical column '{column}' nearly determines the outcome"
    ) as err:
        load_cohort(root, with_images=False, clinical=declared)
    assert statistic in str(err.value) and "allow_outcome_like" in str(err.value)
    # the explicit override keeps it, with a warning that names it
    allowed = clinical_variables({column: {**spec, "allow_outcome_like": True}})
    cohort = load_cohort(root, with_images=False, clinical=allowed)
    assert column in cohort.participants


def test_a_legitimate_strong_predictor_passes_the_copy_check(tmp_path):
    from sklearn.metrics import roc_auc_score

    root, label = _cohort_with_outcome_copies(tmp_path / "discovery")
    cohort = load_cohort(
        root, with_images=False, clinical=clinical_variables({"strong": {"kind": "numeric"}})
    )
    auc = roc_auc_score(label.astype(int), cohort.participants["strong"].astype(float))
    assert 0.7 < auc < 0.95  # a real predictor (not a weak one) is not mistaken for a copy
    # and a baseline score, the outcome's other ingredient, is a pre-treatment predictor that passes too
    load_cohort(root, with_images=False, clinical=clinical_variables({"madrs_baseline": {"kind": "numeric"}}))
