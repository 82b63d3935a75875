"""The regression sibling (continuous outcomes): kernel space against scikit-learn refitted per trial, the
nested CV against GridSearchCV, the locked ensemble and its files, the metrics against scipy/sklearn, and the
planted signature recovered from the percentage MADRS reduction (a null outcome gives nothing)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from conftest import small_simulation
from scipy.stats import norm, pearsonr, spearmanr
from sklearn.compose import TransformedTargetRegressor
from sklearn.decomposition import PCA
from sklearn.kernel_ridge import KernelRidge
from sklearn.metrics import mean_absolute_error, r2_score
from sklearn.model_selection import GridSearchCV, KFold, cross_val_predict, cross_val_score
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVR

from src.data.loader import load_cohort
from src.data.simulate import simulate_cohorts
from src.features.extract import FeatureSet, build_feature_table
from src.interpretation.weights import feature_weights
from src.models.residualize import CovariateResidualizer
from src.models.search_space import SearchSpace
from src.utils.errors import UserInputError
from src.validation.ensemble import load_model
from src.validation.metrics import out_of_sample_r2, regression_metrics
from src.validation.nested_cv import CVConfig, InnerKernels, inner_splitter, outer_splits, run_nested_cv
from src.validation.permutation import permutation_test
from src.validation.regression import NestedCVRegressor

COVARIATES, CATEGORICAL = ("age", "sex", "tiv", "site"), ("sex", "site")


def _data(n: int = 70, p: int = 30, seed: int = 0, signal: float = 1.0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = pd.DataFrame(
        {
            "age": rng.normal(40, 10, n),
            "sex": rng.choice(["F", "M"], n),
            "tiv": rng.normal(1500, 120, n),
            "site": rng.choice(["a", "b"], n),
        }
    )
    features = rng.normal(size=(n, p))
    features[:, 0] += 0.05 * X["age"].to_numpy()
    y = 40 + signal * (12 * features[:, 1] - 8 * features[:, 2]) + rng.normal(0, 12, n)
    return pd.concat([X, pd.DataFrame(features).add_prefix("gm_")], axis=1), y


def reference_pipeline(params: dict) -> TransformedTargetRegressor:
    """The regression pipeline written out with scikit-learn (independently of src.models.pipeline):
    residualise -> scale -> [PCA] -> SVR | KernelRidge, on the target standardised in the training rows."""
    kernel = {k: params[k] for k in ("kernel", "gamma") if k in params}
    if params["estimator"] == "svr":
        model = SVR(C=params["C"], epsilon=params["epsilon"], **kernel)
    else:
        model = KernelRidge(alpha=params["alpha"], **kernel)
    pca = PCA(params["pca_variance"], svd_solver="full") if "pca_variance" in params else "passthrough"
    steps = [
        ("residualize", CovariateResidualizer(covariates=COVARIATES, categorical=CATEGORICAL)),
        ("scale", StandardScaler()),
        ("pca", pca),
        ("model", model),
    ]
    return TransformedTargetRegressor(regressor=Pipeline(steps), transformer=StandardScaler())


CASES = [
    {"estimator": "svr", "kernel": "linear", "C": 0.05, "epsilon": 0.1},
    {"estimator": "svr", "kernel": "linear", "C": 1.0, "epsilon": 0.5},
    {"estimator": "svr", "kernel": "rbf", "C": 3.0, "epsilon": 0.2, "gamma": 0.01},
    {"estimator": "svr", "kernel": "linear", "C": 0.1, "epsilon": 0.1, "pca_variance": 0.6},
    {"estimator": "kernel_ridge", "kernel": "linear", "alpha": 10.0},
    {"estimator": "kernel_ridge", "kernel": "rbf", "alpha": 0.5, "gamma": 0.02},
    {"estimator": "kernel_ridge", "kernel": "rbf", "alpha": 2.0, "gamma": 0.05, "pca_variance": 0.5},
]


@pytest.mark.parametrize("params", CASES, ids=lambda p: "-".join(f"{k}={v}" for k, v in p.items()))
def test_kernel_space_equals_refitting_the_pipeline_per_trial(params):
    """Each trial in kernel space scores (negative MAE per inner split) and predicts as the scikit-learn
    pipeline refitted on every split, to rounding."""
    from src.validation.kernels import CovariateCodes, SplitKernel, fit_decision

    X, y = _data()
    splitter = KFold(4, shuffle=True, random_state=1)
    use_pca = "pca_variance" in params
    cache = InnerKernels(X, y, np.arange(len(y)), splitter, COVARIATES, CATEGORICAL, use_pca, "neg_mae")
    expected = cross_val_score(
        reference_pipeline(params), X, y, cv=splitter, scoring="neg_mean_absolute_error"
    )
    np.testing.assert_allclose(cache.score(params), expected, rtol=0, atol=1e-8)
    train, test = next(splitter.split(X, y))
    reference = reference_pipeline(params).fit(X.iloc[train], y[train])
    features = X.drop(columns=list(COVARIATES)).to_numpy(dtype=float)
    split = SplitKernel.build(features, CovariateCodes(X, COVARIATES, CATEGORICAL), y, train, test, use_pca)
    n_components = reference.regressor_.named_steps["pca"].n_components_ if use_pca else None
    gram, cross = split.kernels(params, n_components)
    np.testing.assert_allclose(
        fit_decision(gram, split.y, cross, params), reference.predict(X.iloc[test]), rtol=0, atol=1e-8
    )


C_GRID = [1e-3, 1e-2, 1e-1, 1.0]


def test_nested_cv_equals_gridsearch_per_repeat():
    """With a grid over C, each repeat's out-of-fold predictions equal
    ``cross_val_predict(GridSearchCV(pipeline, scoring=neg MAE, cv=the inner KFold), cv=the outer KFold)``
    and every fold's tuned C is GridSearchCV's."""
    X, y = _data(n=60)
    space = SearchSpace(
        params={"C": {"type": "float", "low": 1e-3, "high": 1.0, "log": True, "grid": C_GRID}},
        fixed={"estimator": "svr", "kernel": "linear", "epsilon": 0.1},
    )
    cv = CVConfig(repeats=2, outer_folds=4, inner_folds=3, n_trials=len(C_GRID), sampler="grid")
    result = run_nested_cv(X, y, space, cv, seed=5, covariates=COVARIATES, categorical=CATEGORICAL)
    splits = outer_splits(y, cv, 5, regression=True)
    for r in range(cv.repeats):
        search = GridSearchCV(
            reference_pipeline({"estimator": "svr", "kernel": "linear", "C": 1.0, "epsilon": 0.1}),
            {"regressor__model__C": C_GRID},
            cv=inner_splitter(cv, 5, r, regression=True),
            scoring="neg_mean_absolute_error",
        )
        repeat_splits = [(train, test) for rr, _, train, test in splits if rr == r]
        expected = cross_val_predict(search, X, y, cv=repeat_splits)
        np.testing.assert_allclose(result.decision_matrix()[:, r], expected, rtol=0, atol=1e-7)
        for (train, _), fold in zip(repeat_splits, result.folds[r * 4 : (r + 1) * 4], strict=True):
            tuned = search.fit(X.iloc[train], y[train]).best_params_["regressor__model__C"]
            assert fold.best_params["C"] == tuned
    # the splits are KFold (no classes), shuffled with the repeat's seed: repeats differ
    assert not np.array_equal(splits[0][3], splits[cv.outer_folds][3])


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    X, y = _data(n=80, seed=3)
    cv = CVConfig(repeats=2, outer_folds=4, inner_folds=3, n_trials=8)
    estimator = NestedCVRegressor(
        cv=cv, covariates=COVARIATES, categorical=CATEGORICAL, random_state=2, responder_cut=45.0
    ).fit(X, y, ids=[f"sub-{i:03d}" for i in range(len(y))])
    return X, y, estimator


def test_locked_ensemble_is_the_mean_of_the_refitted_fold_pipelines(fitted, tmp_path):
    """Each locked fold model (affine form derived in kernel space) predicts what the scikit-learn pipeline
    with the fold's tuned parameters, refitted on its outer-training rows, predicts; the ensemble is their
    mean; model.npz written and read back (hash verified) predicts the same."""
    X, y, estimator = fitted
    new, _ = _data(n=12, seed=99)
    fold_predictions = []
    for fold in estimator.folds_:
        params = {k: v for k, v in fold.best_params.items()}
        pipeline = reference_pipeline(params).fit(X.iloc[fold.train], y[fold.train])
        np.testing.assert_allclose(fold.decision, pipeline.predict(X.iloc[fold.test]), rtol=0, atol=1e-7)
        fold_predictions.append(pipeline.predict(new))
    np.testing.assert_allclose(estimator.predict(new), np.mean(fold_predictions, axis=0), rtol=0, atol=1e-7)
    sha = estimator.ensemble_.save(tmp_path / "model")
    loaded = load_model(tmp_path / "model", sha256=sha)
    assert loaded.is_regression
    np.testing.assert_allclose(loaded.decision_function(new), estimator.predict(new), rtol=0, atol=1e-12)
    np.testing.assert_allclose(loaded.predict_proba(new), estimator.predict_proba(new), rtol=0, atol=1e-12)


def test_probability_of_response_from_the_out_of_fold_residuals(fitted):
    """P(response) = Phi((prediction + mean residual - cut) / residual SD), the residuals those of the
    out-of-fold ensemble predictions (recomputed here from the out-of-fold table)."""
    X, y, estimator = fitted
    oof = estimator.result_.oof.groupby("participant_id")["prediction"].mean().to_numpy()
    residuals = y - oof
    predicted = estimator.predict(X.iloc[:10])
    expected = norm.cdf((predicted + residuals.mean() - 45.0) / residuals.std(ddof=1))
    np.testing.assert_allclose(estimator.predict_proba(X.iloc[:10])[:, 1], expected, rtol=0, atol=1e-10)


def test_metrics_against_scipy_and_sklearn(fitted):
    """R² against the training-fold means (not sklearn's test-set mean), r, rho, MAE, RMSE and the
    thresholded BAC, recomputed from the out-of-fold table with scipy/sklearn."""
    _, y, estimator = fitted
    result = estimator.result_
    oof = result.oof
    first = oof[oof["repeat"] == 0].set_index("participant_id").loc[result.ids]
    per = result.per_repeat().iloc[0]
    predicted, truth = first["prediction"].to_numpy(), first["y_true"].to_numpy()
    sse = np.sum((truth - predicted) ** 2)
    assert per["r2"] == pytest.approx(1 - sse / np.sum((truth - first["training_mean"].to_numpy()) ** 2))
    assert per["pearson_r"] == pytest.approx(pearsonr(truth, predicted).statistic)
    assert per["spearman_r"] == pytest.approx(spearmanr(truth, predicted).statistic)
    assert per["mae"] == pytest.approx(mean_absolute_error(truth, predicted))
    responders, called = truth >= 45.0, predicted >= 45.0
    bac = (np.mean(called[responders]) + np.mean(~called[~responders])) / 2
    assert per["bac"] == pytest.approx(bac)
    # with the test rows' own mean as reference, the formula is sklearn's r2_score; the training means
    # give a lower R² here (the test mean is information no model had)
    assert out_of_sample_r2(truth, predicted, truth.mean()) == pytest.approx(r2_score(truth, predicted))
    # a model predicting each fold's training mean scores R² <= 0 against the training means
    means = first["training_mean"].to_numpy()
    assert regression_metrics(truth, means, means)["r2"] == pytest.approx(0.0)


def test_permutation_statistic_and_reproducibility(fitted):
    """The permutation test's statistic is the mean per-repeat negative MAE; permutation i equals the
    whole procedure refitted on the outcome permuted with the seed of (random_state, i)."""
    from src.validation.seeds import Stream, derive_seed

    X, y, estimator = fitted
    perm = permutation_test(estimator, X, y, 2)
    assert perm.statistic == "mean_neg_mae"
    assert perm.observed == pytest.approx(-np.mean(estimator.result_.per_repeat()["mae"]))
    y1 = np.random.default_rng(derive_seed(2, Stream.PERMUTATION, 1)).permutation(y)
    again = NestedCVRegressor(**{**estimator.get_params(), "keep_models": False}).fit(X, y1)
    assert perm.null[1] == pytest.approx(-np.mean(again.result_.per_repeat()["mae"]), abs=1e-12)


def test_wrong_kinds_are_refused():
    X, y = _data(n=40)
    with pytest.raises(ValueError, match="regression model"):
        NestedCVRegressor(search_space=SearchSpace(params={}, fixed={"kernel": "linear"})).fit(X, y)
    space = SearchSpace(params={}, fixed={"estimator": "svr", "kernel": "linear"})
    with pytest.raises(UserInputError, match="for classifiers"):
        run_nested_cv(X, y, space, CVConfig(), 0, objective="balanced_accuracy")
    with pytest.raises(UserInputError, match="constant"):
        NestedCVRegressor().fit(X, np.full(len(y), 3.0))
    with pytest.raises(UserInputError, match="missing or infinite"):
        NestedCVRegressor().fit(X, np.r_[np.nan, y[1:]])


@pytest.fixture(scope="module")
def simulated_change(tmp_path_factory):
    """160 simulated ketamine patients (80 responders) at 6 mm, the gm_roi table with its continuous
    outcome (the percentage MADRS reduction) and the simulator's ground truth."""
    from conftest import compose_config

    root = tmp_path_factory.mktemp("change")
    sim = small_simulation(compose_config(), {"discovery": (160, 80)}, resolution=6.0, seed=21)
    simulate_cohorts(sim, root, n_jobs=2, progress=False)
    cohort = load_cohort(root / "discovery", tissues=("GM", "WM", "CSF"))
    table, _ = build_feature_table(cohort, FeatureSet(name="gm_roi"), n_jobs=2)
    return table, json.loads((root / "ground_truth.json").read_text())


@pytest.mark.slow
def test_recovery_of_the_planted_signature_from_the_change(simulated_change):
    """The linear SVR of the percentage reduction recovers the planted regions with their signs (frontal
    +, cerebellar -) and an out-of-fold correlation near the ground truth's ceiling (the population-optimal
    imaging score's r with the reduction); the outcome permuted: R² <= 0, r near 0, permutation p > 0.05."""
    table, truth = simulated_change
    features = [c for c in table.columns if c.startswith("gm_")]
    X = table[[*COVARIATES, *features]]
    y = table["outcome"].to_numpy(float)
    cv = CVConfig(repeats=2, outer_folds=5, inner_folds=3, n_trials=12)
    estimator = NestedCVRegressor(cv=cv, random_state=4, n_jobs=2, responder_cut=50.0).fit(X, y)
    ceiling = truth["continuous"]["pearson_r_imaging"]
    metrics = estimator.result_.ensemble_metrics()
    assert 0.3 < metrics["pearson_r"] <= ceiling + 0.1, (metrics, ceiling)
    assert metrics["r2"] > 0.05
    importance = (
        pd.Series(np.mean([feature_weights(m) for m in estimator.ensemble_.models], axis=0), index=features)
        * table[features].std()
    )
    planted = {f"gm_{r['name']}": r["sign"] for r in truth["signature"]["regions"]}
    top = importance.abs().sort_values(ascending=False).index[: len(planted)]
    assert len(set(top) & set(planted)) >= 6, list(top)
    for column, sign in planted.items():
        assert np.sign(importance[column]) == sign, (column, importance[column])
    # null: the same images, the outcome shuffled once (no relation left)
    y_null = np.random.default_rng(8).permutation(y)
    null = NestedCVRegressor(
        cv=CVConfig(repeats=1, outer_folds=5, inner_folds=3, n_trials=12), random_state=4
    )
    null.set_params(n_jobs=2).fit(X, y_null)
    null_metrics = null.result_.ensemble_metrics()
    assert null_metrics["r2"] <= 0.02 and abs(null_metrics["pearson_r"]) < 0.2, null_metrics
    assert permutation_test(null, X, y_null, 19).p_value > 0.05


def _entry(cwd, *args: str):
    import subprocess
    import sys

    from conftest import subprocess_env

    done = subprocess.run(
        [sys.executable, "-m", *args], cwd=cwd, env=subprocess_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, f"{args}\n{done.stdout}\n{done.stderr[-3000:]}"
    return done


@pytest.mark.slow
def test_entry_points_of_a_continuous_experiment(tmp_path, default_config):
    """gm_only_change through train, evaluate, report and predict (MLflow on a SQLite store): every number
    of the continuous evaluation recomputed from the written predictions with numpy/scipy (R² against the
    discovery mean, r, the calibration line, the treatment interaction), the registered model predicting
    what the locked ensemble predicts, the report showing the continuous section and the scatter."""
    from scipy.stats import linregress

    root = tmp_path / "cohorts"
    sizes = {"discovery": (40, 20), "external_a": (16, 8), "external_b": (16, 8), "saline": (20, 7)}
    simulate_cohorts(small_simulation(default_config, sizes, seed=5), root, n_jobs=2, progress=False)
    store = tmp_path / "mlruns"
    common = [
        f"data.root={root}",
        f"paths.data={tmp_path / 'data'}",
        f"paths.output={tmp_path / 'outputs'}",
        f"tracking.root={store}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        "n_jobs=2",
    ]
    _entry(tmp_path, "src.features.build", "features=gm_roi", *common)
    experiment = ["+experiment=gm_only_change", *common]
    trained = _entry(
        tmp_path,
        "src.train",
        *experiment,
        "cv.repeats=2",
        "cv.outer_folds=3",
        "cv.inner_folds=3",
        "cv.n_trials=4",
        "permutation.n=9",
    )
    assert "outcome percent_reduction" in trained.stdout and "responders (>= 50)" in trained.stdout
    _entry(
        tmp_path,
        "src.evaluate",
        *experiment,
        "evaluation.n_permutations=199",
        "evaluation.n_bootstrap=99",
        "evaluation.weight_permutations=49",
    )
    run = tmp_path / "outputs" / "gm_only_change"
    train = json.loads((run / "train" / "metrics.json").read_text())
    evaluation = json.loads((run / "evaluate" / "metrics.json").read_text())
    predictions = pd.read_csv(run / "evaluate" / "continuous" / "predictions.csv")
    table = pd.read_parquet(tmp_path / "data" / "features" / "gm_roi" / "discovery.parquet")
    assert train["outcome"]["mean"] == pytest.approx(table["outcome"].mean())
    for group, cohorts in (("external", ["external_a", "external_b"]), ("control", ["saline"])):
        rows = predictions[predictions["cohort"].isin(cohorts)]
        y, f = rows["outcome"].to_numpy(), rows["predicted"].to_numpy()
        result = evaluation["continuous"]["cohorts"][group]
        sse, sst = np.sum((y - f) ** 2), np.sum((y - table["outcome"].mean()) ** 2)
        assert result["r2"] == pytest.approx(1 - sse / sst)
        assert result["pearson_r"] == pytest.approx(pearsonr(y, f).statistic)
        line = linregress(f, y)
        assert result["calibration"]["slope"] == pytest.approx(line.slope)
        assert result["calibration"]["intercept"] == pytest.approx(line.intercept)
        low, high = result["ci95"]["pearson_r"]
        assert low <= result["pearson_r"] <= high and 0 < result["p_pearson_r"] <= 1
    # the interaction: observed ~ z + ketamine + z * ketamine by least squares, z the standardised prediction
    pooled = predictions[predictions["cohort"] != "discovery"].drop_duplicates("participant_id")
    ketamine = pooled["cohort"].ne("saline").to_numpy(float)
    z = (pooled["predicted"] - pooled["predicted"].mean()) / pooled["predicted"].std(ddof=0)
    design = np.column_stack([np.ones(len(z)), z, ketamine, z * ketamine])
    coefficients = np.linalg.lstsq(design, pooled["outcome"].to_numpy(), rcond=None)[0]
    assert evaluation["continuous"]["treatment_interaction"]["coefficient"] == pytest.approx(coefficients[3])
    assert (run / "evaluate" / "continuous" / "predicted_vs_observed.png").is_file()
    # MLflow: the training run's metrics are the document's; each evaluation run has its continuous numbers
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{store / 'mlflow.db'}")
    tracking = json.loads((run / "train" / "tracking.json").read_text())
    metrics = client.get_run(tracking["run_id"]).data.metrics
    assert metrics["discovery_r2"] == pytest.approx(train["ensemble"]["r2"], abs=1e-4)
    external = json.loads((run / "evaluate" / "tracking.json").read_text())["evaluation_runs"]["external"]
    assert client.get_run(external).data.metrics["r2"] == pytest.approx(
        evaluation["continuous"]["cohorts"]["external"]["r2"], abs=1e-4
    )
    report = _entry(tmp_path, "src.report", "report.experiments=[gm_only_change]", *common)
    assert "gm_only_change" in report.stdout
    markdown = (tmp_path / "reports" / "report.md").read_text()
    assert "### Continuous outcome" in markdown and "gm_only_change_predicted_vs_observed.png" in markdown
    # one patient: the predicted outcome is the locked ensemble's, P(response) its residual model's
    model = load_model(run / "train" / "model")
    external_table = pd.read_parquet(tmp_path / "data" / "features" / "gm_roi" / "external_a.parquet")
    patient = tmp_path / "patient.csv"
    external_table.drop(columns=["response", "outcome", "treatment"]).head(2).to_csv(patient, index=False)
    _entry(tmp_path, "src.predict", *experiment, f"input={patient}", f"predict.dir={tmp_path / 'predict'}")
    scored = pd.read_csv(tmp_path / "predict" / "predictions.csv")
    expected = model.decision_function(external_table.head(2))
    np.testing.assert_allclose(scored["predicted_outcome"], expected, rtol=1e-9)
    np.testing.assert_allclose(scored["probability"], model.calibrate(expected), rtol=1e-9)
    # the served scorer (mlflow models serve, a real /invocations request) answers with the same numbers;
    # removed once because the server inherited another store's MLFLOW_REGISTRY_URI from this process
    # ("file is not a database"): model_server now sets both URIs to the store it serves (issue 37)
    import urllib.request

    from src.prediction import predict_patients
    from src.tracking.server import model_server

    request = external_table[["participant_id", *model.input_columns]].head(4)
    body = json.dumps(
        {"dataframe_split": {"columns": list(request.columns), "data": request.values.tolist()}}
    )
    uri = f"sqlite:///{store / 'mlflow.db'}"
    with model_server("models:/ketamine-trd-gm_only_change-scorer/1", uri) as url:
        post = urllib.request.Request(
            f"{url}/invocations", body.encode(), {"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(post, timeout=60) as response:
            served = pd.DataFrame(json.loads(response.read())["predictions"])
    local = predict_patients(model, request)
    for column in ("predicted_outcome", "predicted_low", "predicted_high", "probability", "decision_score"):
        np.testing.assert_allclose(served[column], local[column], rtol=1e-12, atol=0)


def test_compare_refuses_a_continuous_experiment(tmp_path):
    """src.compare pairs classifiers on the same stratified splits: a regressor's outputs are refused by
    name (and the DVC stage leaves them out with a note)."""
    from src.evaluation.model_comparison import TrainedExperiment

    train = tmp_path / "gm_only_change" / "train"
    train.mkdir(parents=True)
    (train / "metrics.json").write_text(json.dumps({"outcome": {"kind": "continuous"}}))
    for name in ("folds.csv", "predictions.csv", "config.yaml"):
        (train / name).write_text("")
    with pytest.raises(UserInputError, match="'gm_only_change' predicts a continuous outcome"):
        TrainedExperiment.load("gm_only_change", tmp_path / "gm_only_change")


@pytest.mark.parametrize("model", ["svr_linear", "svr_linear_pca", "krr_rbf"])
def test_regression_model_configs_build_and_run(model):
    """Each regression model config composes with a continuous outcome, builds its search space and runs a
    tiny nested CV; the estimator's default space is conf/model/svr_linear.yaml's."""
    from conftest import compose_config

    from src.validation.regression import default_regression_space

    cfg = compose_config([f"model={model}", "data.outcome.kind=continuous"])
    space = SearchSpace.from_config(cfg["model"])
    if model == "svr_linear":
        assert space == default_regression_space()
    X, y = _data(n=45, p=20, seed=4)
    cv = CVConfig(repeats=1, outer_folds=3, inner_folds=3, n_trials=3)
    result = NestedCVRegressor(search_space=space, cv=cv, random_state=1).fit(X, y).result_
    assert np.isfinite(result.ensemble_metrics()["mae"]) and set(space.params) <= set(
        result.folds[0].best_params
    )


def test_outcome_kind_and_model_must_agree_before_any_work(tmp_path):
    """A continuous outcome with a classifier, a binary one with a regressor, a table without the outcome
    column (built before it existed) and a subject without an outcome value: one error each, naming the
    setting, the file or the subject, before the nested CV."""
    from conftest import train_tiny
    from test_train import contract_table

    table = contract_table(n=30, seed=2)
    with pytest.raises(UserInputError, match="needs a regression model"):
        train_tiny(tmp_path / "a", table, "data.outcome.kind=continuous")
    with pytest.raises(UserInputError, match="needs a classifier"):
        train_tiny(tmp_path / "b", table, "model=svr_linear")
    with pytest.raises(UserInputError, match="no 'outcome' column"):
        train_tiny(tmp_path / "c", table, "model=svr_linear", "data.outcome.kind=continuous")
    holes = table.assign(outcome=np.linspace(-10, 90, len(table)))
    holes.loc[4, "outcome"] = np.nan
    with pytest.raises(UserInputError, match="missing for 1 subject\\(s\\), e.g. sub-x004"):
        train_tiny(tmp_path / "d", holes, "model=svr_linear", "data.outcome.kind=continuous")
    _, outcome, _ = train_tiny(
        tmp_path / "e", holes.fillna({"outcome": 30.0}), "model=svr_linear", "data.outcome.kind=continuous"
    )
    assert outcome.document["outcome"]["kind"] == "continuous" and "r2" in outcome.document["ensemble"]


@pytest.mark.slow
def test_sharded_permutations_of_a_regressor_merge_to_the_inline_test(tmp_path):
    """A continuous model's permutation test run inline and as 2 shards merged by src.merge_permutations:
    the same null distribution, observed statistic (its objective, from predictions.csv) and p-value."""
    from test_cluster import _merge, _train
    from test_train import contract_table

    table = contract_table(n=36, seed=9)
    table["outcome"] = 40 + 15 * table["gm_r0"] + np.random.default_rng(3).normal(0, 10, len(table))
    features = tmp_path / "features" / "gm_roi"
    features.mkdir(parents=True)
    table.to_parquet(features / "discovery.parquet", index=False)
    continuous = ["model=svr_linear", "data.outcome.kind=continuous"]
    _train(tmp_path, *continuous)
    run = tmp_path / "out" / "gm_only"
    inline = json.loads((run / "train" / "metrics.json").read_text())["permutation"]
    assert inline["statistic"] == "mean_neg_mae"
    for shard in ("0/2", "1/2"):
        _train(tmp_path, *continuous, f"permutation.shard={shard}")
    merged = _merge(tmp_path, *continuous)
    assert merged.returncode == 0, merged.stderr
    document = json.loads((run / "permutation" / "metrics.json").read_text())
    assert document["statistic"] == "mean_neg_mae" and document["observed"] == pytest.approx(
        inline["observed"]
    )
    assert document["p_value"] == inline["p_value"]
    np.testing.assert_array_equal(
        pd.read_csv(run / "permutation" / "permutation_null.csv")["mean_neg_mae"],
        pd.read_csv(run / "train" / "permutation_null.csv")["mean_neg_mae"],
    )


def test_a_kernel_ridge_ensemble_is_saved_as_skops_and_reads_back(tmp_path):
    """A non-linear regressor's fold models (TargetScaledRegressor pipelines) go to model.skops with the
    trusted-type list; read back (hash verified), it predicts what it predicted, each fold as the
    scikit-learn pipeline with the fold's parameters refitted on its training rows."""
    X, y = _data(n=50, p=15, seed=6)
    space = SearchSpace(
        params={"alpha": {"type": "float", "low": 0.1, "high": 10.0, "log": True}},
        fixed={"estimator": "kernel_ridge", "kernel": "rbf", "gamma": 0.02},
    )
    cv = CVConfig(repeats=1, outer_folds=3, inner_folds=3, n_trials=3)
    estimator = NestedCVRegressor(search_space=space, cv=cv, random_state=3).fit(X, y)
    fold = estimator.folds_[0]
    reference = reference_pipeline(fold.best_params).fit(X.iloc[fold.train], y[fold.train])
    np.testing.assert_allclose(fold.decision, reference.predict(X.iloc[fold.test]), rtol=0, atol=1e-8)
    sha = estimator.ensemble_.save(tmp_path / "model")
    assert (tmp_path / "model" / "model.skops").is_file()
    loaded = load_model(tmp_path / "model", sha256=sha)
    np.testing.assert_allclose(loaded.decision_function(X), estimator.predict(X), rtol=0, atol=1e-12)
