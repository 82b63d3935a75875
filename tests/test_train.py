"""The locked ensemble model, the permutation test and the `python -m src.train` entry point."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config, subprocess_env

from src.models.search_space import SearchSpace
from src.validation.ensemble import ColumnMismatchError, EnsembleModel, load_model
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


def test_ensemble_model_scores_save_load_and_columns(tmp_path, small_result):
    table, X, result = small_result
    model = EnsembleModel.from_result(result)
    decision = model.decision_function(table)
    np.testing.assert_allclose(decision, np.mean([m.decision_function(X) for m in result.models], axis=0))
    proba = model.predict_proba(table)[:, 1]
    assert np.all((proba > 0) & (proba < 1))
    assert np.all(np.diff(proba[np.argsort(decision)]) >= 0)  # Platt scaling is monotone
    assert model.calibration[0] > 0
    model.save(tmp_path / "model", config_yaml="seed: 1\n")
    loaded = load_model(tmp_path / "model")
    np.testing.assert_array_equal(loaded.decision_function(table.iloc[::-1]), decision[::-1])
    np.testing.assert_array_equal(loaded.decision_function(table[table.columns[::-1]]), decision)
    with pytest.raises(ColumnMismatchError, match=r"1 missing \(e.g. \['gm_r3'\]\)"):
        model.decision_function(table.drop(columns="gm_r3"))
    with pytest.raises(ColumnMismatchError, match=r"1 unexpected \(e.g. \['gm_Frontal_Sup_2_L'\]\)"):
        model.decision_function(table.assign(gm_Frontal_Sup_2_L=1.0))


def test_permutation_p_value_formula():
    result = PermutationResult(
        statistic="mean_bac", observed=0.7, null=np.array([0.5, 0.7, 0.8, 0.6]), repeats=1
    )
    assert result.p_value == pytest.approx((1 + 2) / (1 + 4))


def test_permutation_test_whole_procedure(small_result):
    table, X, result = small_result
    y = table["response"].to_numpy()
    kwargs = dict(observed_decision=result.decision_matrix(), repeats=1)
    a = permutation_test(X, y, SPACE, result.cv, 1, 9, n_jobs=1, **kwargs)
    b = permutation_test(X, y, SPACE, result.cv, 1, 9, n_jobs=2, **kwargs)
    np.testing.assert_array_equal(a.null, b.null)
    assert a.observed == pytest.approx(result.per_repeat()["bac"].iloc[0])
    assert a.p_value == pytest.approx(0.1)  # strong signal: no permutation reaches it -> 1 / (1 + 9)
    assert 0.3 < a.null.mean() < 0.7


@pytest.mark.parametrize("experiment", ["gm_only", "gm_wm", "gm_voxel", "gm_rbf"])
def test_experiments_compose(experiment):
    cfg = compose_config([f"+experiment={experiment}", "cv.repeats=3", "permutation.n=5"])
    assert cfg["name"] == experiment and cfg["cv"]["repeats"] == 3 and cfg["permutation"]["n"] == 5
    assert cfg["paths"]["run"] == f"outputs/{experiment}"
    SearchSpace.from_config(cfg["model"])
    CVConfig.from_config(cfg["cv"])


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
    assert len(pd.read_csv(folder / "predictions.csv")) == 72
    assert len(pd.read_csv(folder / "trials.csv")) == 2 * 3 * 3
    model = load_model(folder / "model")
    assert len(model.models) == 6 and (folder / "model" / "config.yaml").is_file()
    assert model.decision_function(table).shape == (36,)
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
    from src.train import remove_stale_evaluation

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
