"""Validity of the nested-CV engine: exactness vs scikit-learn, null, leakage probe, recovery, determinism."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import small_simulation
from sklearn.datasets import load_breast_cancer
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold, cross_val_predict, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler
from sklearn.svm import SVC

from src.data.loader import load_cohort
from src.data.simulate import simulate_cohorts
from src.features.extract import FeatureSet, build_feature_table
from src.interpretation.weights import feature_weights
from src.models.pipeline import build_pipeline
from src.models.residualize import CovariateResidualizer
from src.models.search_space import SearchSpace
from src.validation.nested_cv import CVConfig, InnerKernels, inner_splitter, outer_splits, run_nested_cv

C_GRID = [1e-3, 1e-2, 1e-1, 1.0, 10.0]


def linear_grid_space(grid=C_GRID) -> SearchSpace:
    return SearchSpace.from_config(
        {
            "search_space": {
                "C": {"type": "float", "low": min(grid), "high": max(grid), "log": True, "grid": grid}
            },
            "fixed": {"kernel": "linear"},
        }
    )


def test_exactness_against_sklearn_gridsearch_on_breast_cancer():
    """(a) With a fixed C grid, each repeat's out-of-fold scores equal cross_val_predict(GridSearchCV) (to
    rounding: the engine derives the refitted linear model in kernel space, |difference| ~1e-14 here)."""
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    y = y.to_numpy()
    cv = CVConfig(repeats=2, outer_folds=5, inner_folds=3, n_trials=len(C_GRID), sampler="grid")
    result = run_nested_cv(X, y, linear_grid_space(), cv, seed=3, covariates=[], categorical=[])
    splits = outer_splits(y, cv, seed=3)
    for r in range(cv.repeats):
        search = GridSearchCV(
            Pipeline([("scale", StandardScaler()), ("svc", SVC(kernel="linear"))]),
            {"svc__C": C_GRID},
            cv=inner_splitter(cv, 3, r),
            scoring="balanced_accuracy",
        )
        repeat_splits = [(train, test) for rr, _, train, test in splits if rr == r]
        expected = cross_val_predict(search, X, y, cv=repeat_splits, method="decision_function")
        np.testing.assert_allclose(result.decision_matrix()[:, r], expected, rtol=0, atol=1e-9)
    # and the tuned C of every fold is GridSearchCV's
    train, _ = repeat_splits[0]
    best_c = search.fit(X.iloc[train], y[train]).best_params_["svc__C"]
    assert result.folds[cv.outer_folds].best_params["C"] == best_c


def _covariates_frame(n: int, rng: np.random.Generator, sites: np.ndarray | None = None) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "age": rng.normal(34, 10, n),
            "sex": rng.choice(["F", "M"], n),
            "tiv": rng.normal(1500, 120, n),
            "site": sites if sites is not None else rng.choice(["a", "b"], n),
        }
    )


KERNEL_CASES = [
    {"kernel": "linear", "C": 0.1},
    {"kernel": "linear", "C": 1e-4, "class_weight": "balanced"},
    {"kernel": "rbf", "C": 10.0, "gamma": 0.01, "class_weight": "balanced"},
    {"kernel": "rbf", "C": 1.0, "gamma": "scale"},
    {"kernel": "poly", "C": 1.0, "gamma": 0.02, "degree": 2, "coef0": 1.0},
    {"kernel": "sigmoid", "C": 0.5, "gamma": 0.001, "coef0": 0.0},
    {"kernel": "linear", "C": 1.0, "pca_variance": 0.8},
    {"kernel": "linear", "C": 1.0, "pca_variance": 0.35},
    {"kernel": "linear", "C": 0.01, "pca_components": 5},
    {"kernel": "rbf", "C": 3.0, "gamma": 0.05, "pca_variance": 0.6},
    {"kernel": "rbf", "C": 3.0, "gamma": "scale", "pca_components": 7},
]


def _blocks_of(monkeypatch: pytest.MonkeyPatch, columns: int | None, rows: int) -> None:
    """Make SplitKernel.build process ``columns`` feature columns per block (None: the default, one block
    for these small tables), as it does for a wide voxel table."""
    if columns is not None:
        monkeypatch.setattr("src.validation.kernels._BLOCK_BYTES", 8 * rows * columns)


@pytest.mark.parametrize("block_columns", [None, 7], ids=["one-block", "blocks-of-7"])
@pytest.mark.parametrize("params", KERNEL_CASES, ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()))
def test_kernel_space_equals_refitting_the_pipeline_per_trial(params, block_columns, monkeypatch):
    """Each trial in kernel space (preprocessing fitted once per inner split, the kernel from its Gram
    matrix, PCA truncated in the eigenbasis of the centred Gram, libsvm on the precomputed kernel) scores as
    the whole Pipeline refitted per trial and split by scikit-learn; and its decision scores agree — also
    when the preprocessing and kernels are built in column blocks, as for a wide voxel table."""
    from src.validation.kernels import CovariateCodes, SplitKernel, fit_decision

    _blocks_of(monkeypatch, block_columns, 45)

    rng = np.random.default_rng(0)
    n = 60
    X = pd.concat(
        [_covariates_frame(n, rng), pd.DataFrame(rng.normal(size=(n, 40))).add_prefix("gm_")], axis=1
    )
    X["gm_0"] += 0.05 * X["age"]
    y = rng.integers(0, 2, n)
    X.loc[y == 1, "gm_3"] += 0.8
    splitter = StratifiedKFold(4, shuffle=True, random_state=1)
    use_pca = "pca_variance" in params or "pca_components" in params
    cache = InnerKernels(
        X, y, np.arange(n), splitter, ("age", "sex", "tiv", "site"), ("sex", "site"), use_pca
    )
    expected = cross_val_score(build_pipeline(params), X, y, cv=splitter, scoring="balanced_accuracy")
    np.testing.assert_allclose(cache.score(params), expected, rtol=0, atol=1e-12)
    # the decision scores themselves, on one split
    train, test = next(splitter.split(X, y))
    pipeline = build_pipeline(params).fit(X.iloc[train], y[train])
    features = X.drop(columns=["age", "sex", "tiv", "site"]).to_numpy(dtype=float)
    codes = CovariateCodes(X, ("age", "sex", "tiv", "site"), ("sex", "site"))
    split = SplitKernel.build(features, codes, y, train, test, use_pca)
    n_components = None
    if use_pca:
        n_components = pipeline.named_steps["pca"].n_components_
    gram, cross = split.kernels(params, n_components)
    np.testing.assert_allclose(
        fit_decision(gram, split.y, cross, params),
        pipeline.decision_function(X.iloc[test]),
        rtol=0,
        atol=1e-8,
    )


@pytest.mark.parametrize(
    "params",
    [
        {"kernel": "linear", "C": 0.05},
        {"kernel": "linear", "C": 1.0, "pca_variance": 0.7, "class_weight": "balanced"},
    ],
)
@pytest.mark.parametrize("block_columns", [None, 64], ids=["one-block", "blocks-of-64"])
def test_affine_refit_equals_the_fitted_pipelines_affine_form(params, block_columns, monkeypatch):
    """The locked fold model derived in kernel space (no SVD of the rows x features matrix) has the weights,
    covariate weights and intercept of ``AffineDecision.from_pipeline`` of the fitted Pipeline (also with
    the preprocessing built in column blocks)."""
    from src.models.linear import AffineDecision
    from src.validation.kernels import CovariateCodes
    from src.validation.nested_cv import affine_refit

    _blocks_of(monkeypatch, block_columns, 40)

    rng = np.random.default_rng(2)
    n = 50
    X = pd.concat(
        [_covariates_frame(n, rng), pd.DataFrame(rng.normal(size=(n, 300))).add_prefix("gm_")], axis=1
    )
    y = rng.integers(0, 2, n)
    train = np.arange(40)
    covariates, categorical = ("age", "sex", "tiv", "site"), ("sex", "site")
    expected = AffineDecision.from_pipeline(build_pipeline(params).fit(X.iloc[train], y[train]))
    features = X.drop(columns=list(covariates)).to_numpy(dtype=float)
    got = affine_refit(features, CovariateCodes(X, covariates, categorical), y, train, params, X.columns)
    scale = np.abs(expected.weights).max()
    np.testing.assert_allclose(got.weights, expected.weights, rtol=0, atol=1e-9 * scale)
    np.testing.assert_allclose(got.covariate_weights, expected.covariate_weights, rtol=1e-7, atol=1e-9)
    assert got.intercept == pytest.approx(expected.intercept, rel=1e-9, abs=1e-9)
    assert got.residualizer.levels_ == expected.residualizer.levels_
    np.testing.assert_allclose(got.decision_function(X), expected.decision_function(X), rtol=0, atol=1e-8)


def test_a_float32_table_scores_exactly_as_its_float64_copy(monkeypatch):
    """A voxel table's features stay float32 in every worker (half the memory) and each block is cast to
    float64 before any arithmetic, so the inner scores, decisions and locked weights equal those of the same
    values stored as float64 bit for bit."""
    from src.validation.nested_cv import affine_refit, feature_matrix

    _blocks_of(monkeypatch, 16, 45)
    rng = np.random.default_rng(5)
    n = 60
    values = pd.DataFrame(rng.normal(size=(n, 100)).astype(np.float32)).add_prefix("gm_")
    y = rng.integers(0, 2, n)
    values.loc[y == 1, "gm_3"] += np.float32(0.8)
    covariates, categorical = ("age", "sex", "tiv", "site"), ("sex", "site")
    X32 = pd.concat([_covariates_frame(n, rng), values], axis=1)
    X64 = X32.astype(dict.fromkeys(values.columns, np.float64))
    assert feature_matrix(X32, covariates).dtype == np.float32
    assert feature_matrix(X64, covariates).dtype == np.float64
    splitter = StratifiedKFold(4, shuffle=True, random_state=1)
    linear, pca = {"kernel": "linear", "C": 0.1}, {"kernel": "linear", "C": 1.0, "pca_variance": 0.8}
    # without covariates, nothing in float64 meets the values before scaling: the cast itself is tested
    for params, names, kinds in (
        (linear, covariates, categorical),
        (linear, (), ()),
        (pca, covariates, categorical),
    ):
        use_pca = "pca_variance" in params
        tables = (
            X32.drop(columns=[c for c in covariates if c not in names]),
            X64.drop(columns=[c for c in covariates if c not in names]),
        )
        caches = [InnerKernels(X, y, np.arange(n), splitter, names, kinds, use_pca) for X in tables]
        assert caches[0].score(params) == caches[1].score(params)
        assert np.array_equal(*(c.inner_decision(np.arange(n), params) for c in caches))
        assert np.array_equal(*(c.outer_decision(np.arange(45), np.arange(45, n), params) for c in caches))
        models = [
            affine_refit(feature_matrix(X, names), c.codes, y, np.arange(45), params, X.columns)
            for X, c in zip(tables, caches, strict=True)
        ]
        assert np.array_equal(models[0].weights, models[1].weights)


ENGINE_SPACES = {
    "linear": {
        "search_space": {
            "C": {"type": "float", "low": 1e-4, "high": 10, "log": True},
            "class_weight": {"type": "categorical", "choices": ["balanced", "none"]},
        },
        "fixed": {"kernel": "linear"},
    },
    "rbf": {
        "search_space": {
            "C": {"type": "float", "low": 1e-2, "high": 1e3, "log": True},
            "gamma": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True},
        },
        "fixed": {"kernel": "rbf"},
    },
    "linear_pca": {
        "search_space": {
            "C": {"type": "float", "low": 1e-4, "high": 10, "log": True},
            "pca_variance": {"type": "float", "low": 0.5, "high": 0.99},
        },
        "fixed": {"kernel": "linear"},
    },
}


@pytest.mark.parametrize("space", sorted(ENGINE_SPACES))
def test_kernel_engine_reproduces_the_former_engine(space):
    """Whole nested CVs (Optuna TPE, 3 x 4 outer x 3 inner folds) with the kernel-space inner loop and with
    the former feature-space one (tests/reference_engine.py): the same trials, chosen parameters and
    out-of-fold decision scores."""
    from reference_engine import reference_engine

    rng = np.random.default_rng(11)
    n, p = 48, 150
    X = pd.concat(
        [_covariates_frame(n, rng), pd.DataFrame(rng.normal(size=(n, p))).add_prefix("gm_")], axis=1
    )
    y = np.r_[np.ones(n // 2, int), np.zeros(n // 2, int)]
    X.loc[y == 1, ["gm_1", "gm_2", "gm_3"]] += 0.7
    cv = CVConfig(repeats=3, outer_folds=4, inner_folds=3, n_trials=12, n_startup_trials=5)
    search = SearchSpace.from_config(ENGINE_SPACES[space])
    kernel = run_nested_cv(X, y, search, cv, seed=4)
    with reference_engine():
        former = run_nested_cv(X, y, search, cv, seed=4)
    assert [f.best_params for f in kernel.folds] == [f.best_params for f in former.folds]
    pd.testing.assert_frame_equal(
        kernel.trials().drop(columns="duration"), former.trials().drop(columns="duration")
    )
    np.testing.assert_allclose(kernel.decision_matrix(), former.decision_matrix(), rtol=0, atol=1e-8)
    # without models (a permutation) the outer refit is done in kernel space too: the same scores
    lean = run_nested_cv(X, y, search, cv, seed=4, keep_models=False)
    assert [f.best_params for f in lean.folds] == [f.best_params for f in kernel.folds]
    np.testing.assert_allclose(lean.decision_matrix(), kernel.decision_matrix(), rtol=0, atol=1e-8)


PCA_GRID = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]


@pytest.mark.slow
def test_null_pure_noise_is_chance_while_non_nested_is_optimistic():
    """(b) p >> n pure noise: nested BAC ~ 0.5 over seeds, while choosing the number of PCA components on
    the outer test folds themselves (no nesting) reports a clearly higher BAC."""
    space = SearchSpace.from_config(
        {
            "search_space": {"pca_components": {"type": "int", "low": 1, "high": 32, "grid": PCA_GRID}},
            "fixed": {"kernel": "linear", "C": 1.0},
        }
    )
    cv = CVConfig(repeats=1, outer_folds=5, inner_folds=4, n_trials=len(PCA_GRID), sampler="grid")
    nested, optimistic = [], []
    for seed in range(10):
        rng = np.random.default_rng(100 + seed)
        X = pd.DataFrame(rng.normal(size=(50, 500))).add_prefix("gm_")
        y = rng.permutation(np.r_[np.ones(25, int), np.zeros(25, int)])
        result = run_nested_cv(X, y, space, cv, seed=seed, covariates=[], categorical=[])
        nested.append(result.per_repeat()["bac"].iloc[0])
        splits = [(tr, te) for _, _, tr, te in outer_splits(y, cv, seed)]
        optimistic.append(
            max(
                cross_val_score(
                    build_pipeline(
                        {"kernel": "linear", "C": 1.0, "pca_components": m}, covariates=[], categorical=[]
                    ),
                    X,
                    y,
                    cv=splits,
                    scoring="balanced_accuracy",
                ).mean()
                for m in PCA_GRID
            )
        )
    assert abs(np.mean(nested) - 0.5) < 0.05, nested
    assert np.mean(optimistic) > np.mean(nested) + 0.05 and np.mean(optimistic) > 0.56, (optimistic, nested)


def _site_leakage_data(seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """Pure-noise features; 40 sites of two subjects, one of each class. A site mean fitted on all rows makes
    a test subject's residual the exact negative of its training partner's, which reveals its label."""
    rng = np.random.default_rng(seed)
    sites = np.repeat([f"s{i:02d}" for i in range(40)], 2)
    y = np.tile([1, 0], 40)
    noise = pd.DataFrame(rng.normal(size=(len(y), 300))).add_prefix("gm_")
    return pd.concat([_covariates_frame(len(y), rng, sites), noise], axis=1), y


def test_leakage_probe_residualiser_fitted_inside_folds():
    """(c) With a real inner loop (a 4-point grid of C, every point tried on 3 inner folds), both the outer
    BAC and the tuned inner scores stay at chance; the same data residualised on all rows first are strongly
    inflated in both. A residualiser fitted on an inner split's test rows too (the inner loop's leak) lifts
    the inner scores above the bound (mutation seen failing: each inner split's residualiser fitted on all
    outer-training rows, its inner-test rows included, in ``SplitKernel.build``: inner score 0.75 > 0.6)."""
    cv = CVConfig(repeats=1, outer_folds=5, inner_folds=3, n_trials=4, sampler="grid")
    space = linear_grid_space([0.01, 0.1, 1.0, 10.0])
    honest, honest_inner, leaky, leaky_inner = [], [], [], []
    for seed in range(3):
        X, y = _site_leakage_data(seed)
        result = run_nested_cv(X, y, space, cv, seed=seed)
        assert all(len(fold.trials) == 4 for fold in result.folds)  # the whole grid was searched
        honest.append(result.per_repeat()["bac"].iloc[0])
        honest_inner.append(np.mean([fold.inner_best for fold in result.folds]))
        residuals = CovariateResidualizer().fit(X).transform(X)  # fitted on ALL rows: the leak
        X_leaky = pd.DataFrame(residuals).add_prefix("gm_")
        leaky_result = run_nested_cv(X_leaky, y, space, cv, seed=seed, covariates=[], categorical=[])
        leaky.append(leaky_result.per_repeat()["bac"].iloc[0])
        leaky_inner.append(np.mean([fold.inner_best for fold in leaky_result.folds]))
    assert np.mean(leaky) > 0.75 and np.mean(leaky_inner) > 0.7, (leaky, leaky_inner)  # the probe has power
    assert np.mean(honest) < 0.6, honest
    assert np.mean(honest_inner) < 0.6, honest_inner  # the best of 4 noisy inner estimates, no more


def test_moving_the_outer_test_rows_changes_nothing_fitted_for_that_fold():
    """The fold models, their tuned parameters and their inner scores depend on the outer-training rows only:
    the features of one outer fold's test rows are replaced by wild values and the whole nested CV rerun.
    That fold's model is identical, only its test scores move (every other fold trains on those rows and
    changes). Mutation seen failing: the outer refit on all rows (``SplitKernel.build(..., np.arange(n),
    ...)`` in ``affine_refit``). Leaks inside the inner loop (an inner split's residualiser or scaler fitted
    with its test rows: both mutations seen failing) are caught by
    ``test_kernel_space_equals_refitting_the_pipeline_per_trial``, which refits scikit-learn's Pipeline."""
    rng = np.random.default_rng(7)
    n = 60
    X = pd.concat(
        [_covariates_frame(n, rng), pd.DataFrame(rng.normal(size=(n, 8))).add_prefix("gm_")], axis=1
    )
    y = rng.permutation(np.r_[np.ones(30, int), np.zeros(30, int)])
    X["gm_0"] += 0.8 * y
    space = SearchSpace.from_config(
        {
            "search_space": {"C": {"type": "float", "low": 1e-3, "high": 10.0, "log": True}},
            "fixed": {"kernel": "linear"},
        }
    )
    cv = CVConfig(repeats=1, outer_folds=3, inner_folds=3, n_trials=6)
    before = run_nested_cv(
        X, y, space, cv, seed=3, covariates=["age", "sex", "tiv", "site"], categorical=["sex", "site"]
    )
    target = before.folds[0]
    moved = X.copy()
    features = [c for c in X.columns if c.startswith("gm_")]
    moved.loc[moved.index[target.test], features] = rng.normal(50, 20, size=(len(target.test), len(features)))
    after = run_nested_cv(
        moved, y, space, cv, seed=3, covariates=["age", "sex", "tiv", "site"], categorical=["sex", "site"]
    )
    same = after.folds[0]
    assert same.best_params == target.best_params and same.inner_best == target.inner_best
    np.testing.assert_array_equal(same.model.weights, target.model.weights)
    np.testing.assert_array_equal(same.model.covariate_weights, target.model.covariate_weights)
    assert same.model.intercept == target.model.intercept
    assert not np.allclose(same.decision, target.decision)  # its test rows did move
    assert any(
        a.inner_best != b.inner_best or a.best_params != b.best_params
        for a, b in zip(after.folds[1:], before.folds[1:], strict=True)
    )


def test_residualiser_uses_training_rows_only():
    rng = np.random.default_rng(1)
    X = pd.concat(
        [_covariates_frame(30, rng), pd.DataFrame(rng.normal(size=(30, 3))).add_prefix("gm_")], axis=1
    )
    train, test = X.iloc[:20], X.iloc[20:]
    fitted = CovariateResidualizer().fit(train)
    # independent truth: scikit-learn's one-hot coding and least squares on the training rows
    encoder = OneHotEncoder(drop="first", handle_unknown="ignore", sparse_output=False).fit(
        train[["sex", "site"]]
    )

    def design(t: pd.DataFrame) -> np.ndarray:  # [1, age, sex=M, tiv, site=b]: the configured order
        codes = encoder.transform(t[["sex", "site"]])
        return np.column_stack([np.ones(len(t)), t["age"], codes[:, :1], t["tiv"], codes[:, 1:]])

    coef = LinearRegression(fit_intercept=False).fit(design(train), train.filter(like="gm_")).coef_.T
    np.testing.assert_allclose(
        fitted.transform(test), test.filter(like="gm_").to_numpy() - design(test) @ coef
    )
    # transform never refits: wild test rows leave the coefficients, and the residuals of other rows, as
    # the training rows made them (a transform that updated the fit would pass the first check, not these)
    coef_before = fitted.coef_.copy()
    fitted.transform(test.assign(gm_0=test["gm_0"] + 100, age=test["age"] * 3))
    np.testing.assert_array_equal(fitted.coef_, coef_before)
    np.testing.assert_allclose(
        fitted.transform(train), train.filter(like="gm_").to_numpy() - design(train) @ coef
    )
    # a site absent from training: reported, coded as the reference site (all-zero one-hot, as the encoder)
    unseen = test.assign(site="new")
    assert fitted.unseen_levels(unseen) == {"site": ["new"]}
    np.testing.assert_allclose(
        fitted.transform(unseen), unseen.filter(like="gm_").to_numpy() - design(unseen) @ coef
    )


def test_determinism_and_worker_count(tmp_path):
    """(e) Same config -> identical scores, parameters and trials, with 1 or 2 workers."""
    rng = np.random.default_rng(5)
    X = pd.concat(
        [_covariates_frame(40, rng), pd.DataFrame(rng.normal(size=(40, 20))).add_prefix("gm_")], axis=1
    )
    y = np.r_[np.ones(20, int), np.zeros(20, int)]
    X.loc[y == 1, "gm_1"] += 1.0
    space = SearchSpace.from_config(
        {
            "search_space": {
                "C": {"type": "float", "low": 1e-3, "high": 10, "log": True},
                "class_weight": {"type": "categorical", "choices": ["balanced", "none"]},
            },
            "fixed": {"kernel": "linear"},
        }
    )
    cv = CVConfig(repeats=2, outer_folds=4, inner_folds=3, n_trials=6)
    a = run_nested_cv(X, y, space, cv, seed=9, n_jobs=1)
    b = run_nested_cv(X, y, space, cv, seed=9, n_jobs=2)
    c = run_nested_cv(X, y, space, cv, seed=10, n_jobs=1)
    pd.testing.assert_frame_equal(a.oof, b.oof)
    pd.testing.assert_frame_equal(a.trials().drop(columns="duration"), b.trials().drop(columns="duration"))
    assert [f.best_params for f in a.folds] == [f.best_params for f in b.folds]
    assert not np.array_equal(a.decision_matrix(), c.decision_matrix())
    # the fold models from the workers share one copy of the column names (181 k strings per model of a
    # 2 mm voxel table), equal to the table's
    designs = [f.model.residualizer for f in b.folds]
    assert all(d.feature_names_in_ is designs[0].feature_names_in_ for d in designs)
    assert all(d.feature_columns_ is designs[0].feature_columns_ for d in designs)
    assert list(designs[0].feature_names_in_) == list(X.columns)
    assert designs[0].feature_columns_ == list(X.columns[4:])


def test_checkpointed_folds_resume_with_identical_results(tmp_path):
    """A run cut after k folds (the checkpoint's last line half-written, as a kill leaves it) resumes with
    only the missing folds tuned, and the same scores, parameters, trials and models as one whole run."""
    rng = np.random.default_rng(6)
    X = pd.concat(
        [_covariates_frame(40, rng), pd.DataFrame(rng.normal(size=(40, 12))).add_prefix("gm_")], axis=1
    )
    y = np.r_[np.ones(20, int), np.zeros(20, int)]
    X.loc[y == 1, "gm_2"] += 1.0
    space = linear_grid_space()
    cv = CVConfig(repeats=2, outer_folds=4, inner_folds=3, n_trials=6, sampler="random")
    whole = run_nested_cv(X, y, space, cv, seed=3)
    checkpoint = tmp_path / "folds.jsonl"
    run_nested_cv(X, y, space, cv, seed=3, checkpoint=checkpoint)
    lines = checkpoint.read_text().splitlines()
    assert len(lines) == 8
    checkpoint.write_text("\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2])
    resumed = run_nested_cv(X, y, space, cv, seed=3, checkpoint=checkpoint, n_jobs=2)
    assert resumed.extra["resumed_folds"] == 3
    pd.testing.assert_frame_equal(whole.oof, resumed.oof)
    pd.testing.assert_frame_equal(
        whole.trials().drop(columns="duration"), resumed.trials().drop(columns="duration")
    )
    assert [f.best_params for f in whole.folds] == [f.best_params for f in resumed.folds]
    for a, b in zip(whole.models, resumed.models, strict=True):  # refitted from the recorded parameters
        np.testing.assert_array_equal(a.weights, b.weights)
        assert a.intercept == b.intercept
    # the resumed folds really came from the checkpoint: an edited record is used as written
    first = json.loads(lines[0])
    first["decision"] = [9.0] * len(first["decision"])
    checkpoint.write_text(json.dumps(first) + "\n")
    edited = run_nested_cv(X, y, space, cv, seed=3, checkpoint=checkpoint)
    assert edited.extra["resumed_folds"] == 1 and np.all(edited.folds[0].decision == 9.0)
    assert np.array_equal(edited.folds[1].decision, whole.folds[1].decision)


def test_class_too_small_for_folds_is_a_clear_error():
    X = pd.DataFrame({"gm_a": np.arange(12.0)})
    y = np.r_[np.ones(3, int), np.zeros(9, int)]
    cv = CVConfig(repeats=1, outer_folds=5, inner_folds=3, n_trials=1)
    with pytest.raises(ValueError, match="outer CV: class 1 has 3 subject"):
        run_nested_cv(X, y, linear_grid_space(), cv, seed=0, covariates=[], categorical=[])
    y = np.r_[np.ones(4, int), np.zeros(8, int)]
    with pytest.raises(ValueError, match=r"inner CV of repeat 0, fold \d: class 1 has [23] subject"):
        run_nested_cv(
            X,
            y,
            linear_grid_space(),
            CVConfig(repeats=1, outer_folds=2, inner_folds=3, n_trials=1),
            seed=0,
            covariates=[],
            categorical=[],
        )


@pytest.fixture(scope="module")
def recovery_table(tmp_path_factory, default_config):
    root = tmp_path_factory.mktemp("recovery")
    sim = small_simulation(default_config, {"discovery": (160, 80)}, resolution=6.0, seed=21)
    simulate_cohorts(sim, root, n_jobs=2, progress=False)
    cohort = load_cohort(root / "discovery", tissues=("GM", "WM", "CSF"))
    table, _ = build_feature_table(cohort, FeatureSet(name="gm_roi"), n_jobs=2)
    return table, sim


@pytest.mark.slow
def test_recovery_of_the_planted_signature(recovery_table, default_config):
    """(d) Default model config on simulated data: the planted regions carry the largest weights,
    with the planted signs (frontal +, cerebellar -), once back-projected through the scaling."""
    table, sim = recovery_table
    model_cfg = default_config["model"]
    features = [c for c in table.columns if c.startswith("gm_")]
    X = table[[*model_cfg["covariates"], *features]]
    cv = CVConfig(repeats=2, outer_folds=5, inner_folds=3, n_trials=12)
    result = run_nested_cv(
        X, table["response"].to_numpy(), SearchSpace.from_config(model_cfg), cv, seed=4, n_jobs=2
    )
    weights = pd.Series(np.mean([feature_weights(m) for m in result.models], axis=0), index=features)
    # weight x feature SD: comparable across regions of different size
    importance = weights * table[features].std()
    planted = {f"gm_{r['name']}": r["sign"] for r in sim["signature"]["regions"]}
    top = importance.abs().sort_values(ascending=False).index[: len(planted)]
    assert len(set(top) & set(planted)) >= 7, list(top)
    for column, sign in planted.items():
        assert np.sign(importance[column]) == sign, (column, importance[column])
    assert result.ensemble_metrics()["bac"] > 0.6


def test_fast_balanced_accuracy_equals_sklearn():
    from sklearn.metrics import balanced_accuracy_score

    from src.validation.nested_cv import balanced_accuracy

    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(2, 30))
        y_true, y_pred = rng.integers(0, 2, n), rng.integers(0, 2, n)
        if rng.random() < 0.2:
            y_pred[:] = y_pred[0]  # a constant prediction
        if len(np.unique(y_true)) < 2:
            continue
        assert balanced_accuracy(y_true, y_pred) == balanced_accuracy_score(y_true, y_pred)


@pytest.mark.parametrize(
    "params",
    [
        {"kernel": "linear", "C": 0.1},
        {"kernel": "linear", "C": 1.0, "pca_variance": 0.8, "class_weight": "balanced"},
    ],
)
def test_affine_form_reproduces_the_pipeline(params):
    from src.models.linear import AffineDecision

    rng = np.random.default_rng(2)
    X = pd.concat(
        [_covariates_frame(50, rng), pd.DataFrame(rng.normal(size=(50, 30))).add_prefix("gm_")], axis=1
    )
    y = rng.integers(0, 2, 50)
    pipe = build_pipeline(params).fit(X.iloc[:40], y[:40])
    affine = AffineDecision.from_pipeline(pipe)
    new = X.iloc[40:].assign(site=["a", "b", "c", "a", "b", "a", "b", "a", "a", "b"])  # "c": unseen site
    np.testing.assert_allclose(
        affine.decision_function(new), pipe.decision_function(new), rtol=1e-10, atol=1e-10
    )
    assert affine.weights.shape == (30,)
