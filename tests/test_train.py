"""The locked ensemble model, the permutation test and the `python -m src.train` entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, compose_config, subprocess_env

from src.models.search_space import SearchSpace
from src.validation.ensemble import ColumnMismatchError, EnsembleModel, load_model
from src.validation.estimator import NestedCVClassifier
from src.validation.nested_cv import CVConfig, run_nested_cv
from src.validation.permutation import PermutationResult, permutation_test

SPACE = SearchSpace.from_config(
    {
        "search_space": {"C": {"type": "float", "low": 1e-3, "high": 1.0, "log": True}},
        "fixed": {"kernel": "linear"},
    }
)


def contract_table(n: int = 40, seed: int = 0, signal: float = 2.0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.r_[np.ones(n // 2, int), np.zeros(n - n // 2, int)])
    table = pd.DataFrame(
        {
            "participant_id": [f"sub-x{i:03d}" for i in range(n)],
            "age": rng.normal(34, 10, n),
            "sex": rng.choice(["F", "M"], n),
            "site": rng.choice(["a", "b"], n),
            "tiv": rng.normal(1500, 100, n),
            "treatment": "ketamine",
            "response": y,
        }
    )
    features = pd.DataFrame(rng.normal(size=(n, 12)), columns=[f"gm_r{j}" for j in range(12)])
    features["gm_r0"] += signal * (y - 0.5) * 2
    return pd.concat([table, features], axis=1)


@pytest.fixture(scope="module")
def small_result():
    table = contract_table()
    X = table[["age", "sex", "tiv", "site", *[c for c in table.columns if c.startswith("gm_")]]]
    cv = CVConfig(repeats=2, outer_folds=4, inner_folds=3, n_trials=4)
    return (
        table,
        X,
        run_nested_cv(X, table["response"].to_numpy(), SPACE, cv, seed=1, ids=table["participant_id"]),
    )


def test_result_summary_and_tables(small_result):
    table, _, result = small_result
    oof = result.oof
    assert len(oof) == 2 * len(table) and set(oof["repeat"]) == {0, 1}
    assert oof.groupby("repeat")["participant_id"].nunique().eq(len(table)).all()
    summary = result.summary()
    assert set(summary["repeats"]["bac"]) == {"mean", "sd", "q025", "q975"}
    assert summary["ensemble"]["bac"] > 0.7  # gm_r0 carries a strong signal
    assert len(result.fold_table()) == 8 and len(result.trials()) == 8 * 4
    np.testing.assert_allclose(result.ensemble_scores(), result.decision_matrix().mean(axis=1))


def _platt_reference(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt (1999): minimise the log-loss against targets (N+ + 1) / (N+ + 2) and 1 / (N- + 2)."""
    from scipy.optimize import minimize

    n_pos, n_neg = int(y.sum()), int(len(y) - y.sum())
    target = np.where(y == 1, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))

    def loss(params: np.ndarray) -> float:
        eta = params[0] * scores + params[1]
        return float(np.sum(np.logaddexp(0, eta) - target * eta))

    slope, intercept = minimize(loss, np.zeros(2), method="BFGS", options={"gtol": 1e-10}).x
    return slope, intercept


def test_ensemble_model_scores_save_load_and_columns(tmp_path, small_result):
    table, X, result = small_result
    model = EnsembleModel.from_result(result)
    decision = model.decision_function(table)
    np.testing.assert_allclose(decision, np.mean([m.decision_function(X) for m in result.models], axis=0))
    # Platt's sigmoid is fitted on the out-of-fold ensemble scores (never the fold models' in-sample
    # scores): equal to an independent fit of Platt's smoothed-target log-loss with scipy
    assert model.calibration == pytest.approx(_platt_reference(result.ensemble_scores(), result.y), rel=1e-3)
    proba = model.predict_proba(table)[:, 1]
    slope, intercept = model.calibration
    np.testing.assert_allclose(proba, 1 / (1 + np.exp(-(slope * decision + intercept))))
    model.save(tmp_path / "model", config_yaml="seed: 1\n")
    loaded = load_model(tmp_path / "model")
    np.testing.assert_array_equal(loaded.decision_function(table.iloc[::-1]), decision[::-1])
    np.testing.assert_array_equal(loaded.decision_function(table[table.columns[::-1]]), decision)
    with pytest.raises(ColumnMismatchError, match=r"1 missing \(e.g. \['gm_r3'\]\)"):
        model.decision_function(table.drop(columns="gm_r3"))
    with pytest.raises(ColumnMismatchError, match=r"1 unexpected \(e.g. \['gm_Frontal_Sup_2_L'\]\)"):
        model.decision_function(table.assign(gm_Frontal_Sup_2_L=1.0))


def test_permutation_p_value_agrees_with_scipy():
    """``permutation_p_value`` (the training test's p) against scipy's permutation_test p-value for the same
    observed statistic and null distribution, ties included."""
    from scipy.stats import permutation_test

    from src.validation.metrics import permutation_p_value

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=12), rng.normal(size=12) + 0.5
    result = permutation_test(
        (x, y),
        lambda a, b: np.round(np.mean(b) - np.mean(a), 1),
        n_resamples=999,
        rng=1,
        alternative="greater",
    )
    assert np.sum(result.null_distribution == result.statistic) > 5  # rounded: many ties with the observed
    assert permutation_p_value(result.statistic, result.null_distribution) == pytest.approx(result.pvalue)
    perm = PermutationResult("mean_bac", float(result.statistic), result.null_distribution, repeats=1)
    assert perm.p_value == pytest.approx(result.pvalue)


@pytest.mark.slow
def test_permutation_test_whole_procedure(small_result):
    table, X, result = small_result
    y = table["response"].to_numpy()
    method = NestedCVClassifier(SPACE, result.cv, random_state=1).fit(X, y)
    np.testing.assert_array_equal(method.oof_decision_, result.decision_matrix())  # the fixture's run
    a = permutation_test(method, X, y, 9, repeats=1)
    b = permutation_test(method.set_params(n_jobs=2), X, y, 9, repeats=1)
    np.testing.assert_array_equal(a.null, b.null)
    assert a.observed == pytest.approx(result.per_repeat()["bac"].iloc[0])
    assert a.p_value == pytest.approx(0.1)  # strong signal: no permutation reaches it -> 1 / (1 + 9)
    assert 0.3 < a.null.mean() < 0.7


def _holds(composed: object, part: object) -> bool:
    """Every key of ``part`` is in ``composed`` with the same value (interpolations are resolved there)."""
    if isinstance(part, dict):
        return isinstance(composed, dict) and all(
            k in composed and _holds(composed[k], v) for k, v in part.items()
        )
    return (isinstance(part, str) and "${" in part) or composed == part


@pytest.mark.parametrize(
    "experiment", ["gm_only", "gm_wm", "gm_voxel", "gm_rbf", "gm_only_change", "gm_krr_change"]
)
def test_experiments_compose_the_groups_they_name(experiment):
    """Each experiment file's defaults list picks its groups: the composed config holds those groups' files
    (not the defaults of config.yaml), and what training reads (search space, CV scheme) builds from it."""
    from omegaconf import OmegaConf

    def read(path: Path) -> dict:  # YAML as Hydra reads it (PyYAML would read 1.0e3 as a string)
        return OmegaConf.to_container(OmegaConf.load(path))

    spec = read(ROOT / "conf" / "experiment" / f"{experiment}.yaml")
    cfg = compose_config([f"+experiment={experiment}"])
    assert cfg["name"] == experiment and cfg["paths"]["run"] == f"outputs/{experiment}"
    for entry in spec.get("defaults", []):
        if not isinstance(entry, dict):
            continue
        ((group, option),) = entry.items()
        group = group.removeprefix("override /")
        chosen = read(ROOT / "conf" / group / f"{option}.yaml")
        chosen.pop("defaults", None)  # a group file may extend another: its own keys must all be there
        assert _holds(cfg[group], chosen), (group, option)
    SearchSpace.from_config(cfg["model"])
    CVConfig.from_config(cfg["cv"])


def _platt_reference(scores: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Platt (1999) written out: P = 1 / (1 + exp(-(a s + b))) fitted by minimising the log loss against the
    smoothed targets (N+ + 1) / (N+ + 2) and 1 / (N- + 2)."""
    from scipy.optimize import minimize
    from scipy.special import expit

    positives, negatives = int(y.sum()), int(len(y) - y.sum())
    target = np.where(y == 1, (positives + 1) / (positives + 2), 1 / (negatives + 2))

    def loss(params: np.ndarray) -> float:
        p = np.clip(expit(params[0] * scores + params[1]), 1e-12, 1 - 1e-12)
        return float(-np.sum(target * np.log(p) + (1 - target) * np.log(1 - p)))

    fit = minimize(loss, np.array([1.0, 0.0]), method="Nelder-Mead", options={"xatol": 1e-8, "fatol": 1e-12})
    return float(fit.x[0]), float(fit.x[1])


@pytest.mark.slow
def test_train_entry_point(tmp_path):
    features = tmp_path / "features" / "gm_roi"
    features.mkdir(parents=True)
    table = contract_table(n=36, seed=3)
    table.to_parquet(features / "discovery.parquet", index=False)
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        "-m",
        "src.train",
        "+experiment=gm_only",
        f"paths.features={tmp_path / 'features'}",
        f"paths.output={out}",
        "cv.repeats=2",
        "cv.outer_folds=3",
        "cv.inner_folds=3",
        "cv.n_trials=3",
        "permutation.n=3",
        "n_jobs=1",
        "tracking.enabled=false",
        f"hydra.run.dir={tmp_path}/hydra",
    ]
    run = subprocess.run(cmd, cwd=tmp_path, env=subprocess_env(), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "gm_only: n=36 (18 responders)" in run.stdout
    folder = out / "gm_only" / "train"
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["permutation"]["n"] == 3 and metrics["cv"]["repeats"] == 2
    assert set(metrics["ensemble"]) == {"bac", "sensitivity", "specificity", "auc", "ppv", "npv"}
    assert metrics["provenance"]["feature_table_md5"] and "git" in metrics["provenance"]
    # DVC's metrics: numbers only, equal to the document's (provenance stays in metrics.json)
    summary = json.loads((folder / "summary.json").read_text())
    assert summary["discovery_bac"] == round(metrics["ensemble"]["bac"], 4)
    assert summary["permutation_p"] == round(metrics["permutation"]["p_value"], 4)
    # and the data config each row comes from (dvc metrics show lists rows of several runs side by side)
    assert summary.pop("data") == metrics["provenance"]["data"] == "simulated"
    assert len(summary) == 6 and all(isinstance(v, float) for v in summary.values())
    assert len(pd.read_csv(folder / "predictions.csv")) == 72
    assert len(pd.read_csv(folder / "trials.csv")) == 2 * 3 * 3
    model = load_model(folder / "model")
    assert len(model.models) == 6 and (folder / "model" / "config.yaml").is_file()
    assert model.decision_function(table).shape == (36,)
    # the locked model's Platt calibration is fitted on the out-of-fold ensemble scores of predictions.csv
    # (checked with an independent fit: Platt's smoothed targets, log loss minimised by scipy), not on the
    # ensemble's in-sample scores of its own training data (over-confident)
    oof = pd.read_csv(folder / "predictions.csv").groupby("participant_id")
    expected = _platt_reference(oof["decision"].mean().to_numpy(), oof["y_true"].first().to_numpy())
    assert model.calibration == pytest.approx(expected, abs=2e-3)
    in_sample = _platt_reference(model.decision_function(table), table["response"].to_numpy())
    assert abs(in_sample[0] - expected[0]) > 0.1 * abs(expected[0])  # the test can tell the two apart
    # tracking off: the run record says so and no MLflow store appears anywhere
    assert json.loads((folder / "tracking.json").read_text()) is None
    assert not (tmp_path / "mlruns").exists() and not (tmp_path / "mlflow.db").exists()
    missing = subprocess.run(
        [*cmd[:-1], "paths.features=/nonexistent"],
        cwd=tmp_path,
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )
    assert (
        missing.returncode != 0
        and "feature table /nonexistent/gm_roi/discovery.parquet not found" in missing.stderr
    )


def test_retraining_removes_an_evaluation_of_another_model(tmp_path):
    from src.validation.experiment import remove_stale_evaluation

    evaluation = tmp_path / "evaluate"
    evaluation.mkdir()
    (evaluation / "metrics.json").write_text(json.dumps({"provenance": {"model_sha256": "a" * 64}}))
    remove_stale_evaluation(tmp_path, "a" * 64)  # an evaluation of this very model is kept
    assert (evaluation / "metrics.json").is_file()
    remove_stale_evaluation(tmp_path, "b" * 64)
    assert not evaluation.exists()
    evaluation.mkdir()  # an evaluation cut short (no metrics.json) is stale too
    remove_stale_evaluation(tmp_path, "b" * 64)
    assert not evaluation.exists()
