"""`python -m src.compare`: paired comparisons of trained experiments, refused when they are not paired."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, subprocess_env, train_tiny
from scipy import stats
from test_train import contract_table

from src.evaluation.comparison import delong_test
from src.evaluation.model_comparison import TrainedExperiment, check_paired, cohort_comparison
from src.utils.errors import UserInputError


@pytest.fixture(scope="module")
def two_trained(tmp_path_factory):
    """The same table, seed and splits; a linear and an RBF SVC: outputs/<linear|rbf>/train."""
    work = tmp_path_factory.mktemp("compare")
    table = contract_table(n=40, seed=4, signal=1.0)
    out = work / "outputs"
    for name, overrides in (("linear", ()), ("rbf", ("model=svc_rbf",))):
        train_tiny(work / name, table, "cv.repeats=2", *overrides)
        shutil.move(work / name / "out" / "gm_only", out / name)
    return work, out


def _compare(out, *overrides: str) -> subprocess.CompletedProcess:
    """`python -m src.compare` of the two trained experiments under ``out``; asserts it succeeded."""
    command = [sys.executable, "-m", "src.compare", "compare.experiments=[linear,rbf]", f"paths.output={out}"]
    if not any(o.startswith("compare.dir=") for o in overrides):  # never into the repository's comparisons/
        command.append(f"compare.dir={out / 'comparisons'}")
    done = subprocess.run(
        [*command, *overrides], cwd=ROOT, env=subprocess_env(), capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done


@pytest.mark.slow
def test_compare_two_experiments_on_the_discovery_cv(two_trained):
    work, out = two_trained
    done = _compare(out, "tracking.enabled=false")
    document = json.loads((out / "comparisons" / "linear-rbf" / "comparison.json").read_text())
    pair = document["pairs"][0]
    assert (pair["a"], pair["b"]) == ("linear", "rbf") and pair["cohorts"] == {}
    # independently: the outer-fold BAC differences of the two folds.csv, paired by (repeat, fold)
    folds = {
        n: pd.read_csv(out / n / "train" / "folds.csv").set_index(["repeat", "fold"])
        for n in ("linear", "rbf")
    }
    d = (folds["rbf"]["outer_bac"] - folds["linear"]["outer_bac"]).to_numpy()
    fraction = (folds["linear"]["n_test"] / folds["linear"]["n_train"]).mean()
    t = d.mean() / np.sqrt((1 / len(d) + fraction) * d.var(ddof=1))
    test = pair["discovery"]["bac"]["corrected_ttest"]
    assert test["mean"] == pytest.approx(d.mean()) and test["df"] == len(d) - 1 == 5
    assert test["p_value"] == pytest.approx(2 * stats.t.sf(abs(t), len(d) - 1))
    bayes = pair["discovery"]["bac"]["bayesian"]
    assert bayes["p_a_better"] + bayes["p_equivalent"] + bayes["p_b_better"] == pytest.approx(1.0)
    written = out / "comparisons" / "linear-rbf"
    assert "discovery BAC" in done.stdout
    assert (written / "comparison.md").is_file() and (written / "comparison.png").is_file()


def test_unpaired_experiments_are_refused(two_trained, tmp_path):
    _, out = two_trained
    a = TrainedExperiment.load("linear", out / "linear")
    b = TrainedExperiment.load("rbf", out / "rbf")
    check_paired(a, b)
    b.seed = 7
    with pytest.raises(UserInputError, match=r"different seed \(2026 vs 7\)"):
        check_paired(a, b)
    b.seed = a.seed
    b.oof = b.oof.assign(fold=(b.oof["fold"] + 1) % 3)
    with pytest.raises(UserInputError, match="outer folds differ"):
        check_paired(a, b)
    with pytest.raises(UserInputError, match="at least two"):
        from src.evaluation.model_comparison import compare_experiments

        compare_experiments([a], {"bac": 0.01, "auc": 0.01}, 10, 1)


def test_each_evaluation_group_gets_delong_and_a_paired_bootstrap(two_trained):
    _, out = two_trained
    a = TrainedExperiment.load("linear", out / "linear")
    b = TrainedExperiment.load("rbf", out / "rbf")
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 30)
    scored = pd.DataFrame(
        {"participant_id": [f"sub-e{i:02d}" for i in range(30)], "cohort": "ext", "response": y}
    )
    da, db = y + rng.normal(0, 1, 30) - 0.5, y + rng.normal(0, 0.5, 30) - 0.5
    a.evaluated = scored.assign(decision=da, probability=1 / (1 + np.exp(-da)))
    b.evaluated = scored.assign(decision=db, probability=1 / (1 + np.exp(-db)))
    a.groups = b.groups = {"external": ["ext"]}
    result = cohort_comparison(a, b, n_bootstrap=500, seed=1)["external"]
    expected = delong_test(y, a.evaluated["decision"], b.evaluated["decision"])
    assert result["delong"]["p_value"] == pytest.approx(expected.p_value) and result["n"] == 30
    low, high = result["bac"]["ci95"]
    assert low <= result["bac"]["difference"] <= high
    net = result["net_benefit"]  # B - A of the net benefit at every threshold, inside its interval
    assert np.all(np.asarray(net["ci95_low"]) <= np.asarray(net["difference"]) + 1e-12)
    assert np.all(np.asarray(net["difference"]) <= np.asarray(net["ci95_high"]) + 1e-12)
    b.evaluated = b.evaluated.iloc[1:]
    with pytest.raises(UserInputError, match="scored different subjects"):
        cohort_comparison(a, b, n_bootstrap=10, seed=1)


@pytest.mark.slow
def test_a_comparison_is_an_mlflow_run_beside_the_experiments(two_trained, tmp_path):
    """Tracking on (a real SQLite store): one run per pair in the `comparisons` experiment, tagged with the
    compared experiments, its metrics those of comparison.json, its artifacts the written files."""
    from mlflow.tracking import MlflowClient

    _, out = two_trained
    store = tmp_path / "mlruns"
    done = _compare(out, f"compare.dir={tmp_path / 'comparisons'}", f"tracking.root={store}")
    uri = f"sqlite:///{store / 'mlflow.db'}"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("comparisons")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.data.tags["compared.a"] == "linear" and run.data.tags["compared.b"] == "rbf"
    assert run.data.tags["run_role"] == "comparison"
    document = json.loads((tmp_path / "comparisons" / "linear-rbf" / "comparison.json").read_text())
    p = document["pairs"][0]["discovery"]["bac"]["corrected_ttest"]["p_value"]
    assert run.data.metrics["discovery_bac_p"] == pytest.approx(p, abs=1e-4)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "comparison")}
    assert "comparison/comparison.json" in artifacts
    assert f"rbf vs linear: run {run.info.run_id}" in done.stdout


@pytest.mark.slow
def test_the_dvc_stage_with_one_experiment_listed_writes_a_note_and_succeeds(tmp_path):
    """`dvc repro` with one experiment in params.yaml: the compare stage says there is nothing to compare and
    leaves its output folder (earlier comparisons in it are kept); asked explicitly, one experiment is an
    error."""
    params = tmp_path / "params.yaml"
    params.write_text("experiments:\n  gm_only: {features: gm_roi, model: svc_linear, permutations: 5}\n")
    folder = tmp_path / "comparisons"
    (folder / "a-b").mkdir(parents=True)
    command = [sys.executable, "-m", "src.compare", f"params_file={params}", f"compare.dir={folder}"]
    done = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "nothing to compare" in (folder / "README.txt").read_text() and (folder / "a-b").is_dir()
    explicit = subprocess.run(
        [*command, "compare.experiments=[gm_only]"],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )
    assert explicit.returncode != 0 and "a comparison needs at least two" in explicit.stderr


def test_an_edited_or_foreign_artefact_is_refused_in_one_line(two_trained, tmp_path):
    """A folds.csv edited after training, and an evaluation written for another model (its model sha256 not
    the trained one's), are refused naming the file: they used to change a comparison silently (an external
    AUC of another model's evaluation was reported)."""
    _, out = two_trained
    run = tmp_path / "linear"
    shutil.copytree(out / "linear", run)
    TrainedExperiment.load("linear", run)  # as written: accepted
    folds = run / "train" / "folds.csv"
    folds.write_text(folds.read_text().replace("\n0,0,", "\n0,0,9", 1))
    with pytest.raises(
        UserInputError, match=r"folds.csv is not the file experiment 'linear'\'s training wrote"
    ):
        TrainedExperiment.load("linear", run)
    shutil.copy(out / "linear" / "train" / "folds.csv", folds)
    (run / "evaluate").mkdir()
    (run / "evaluate" / "metrics.json").write_text(json.dumps({"provenance": {"model_sha256": "0" * 64}}))
    with pytest.raises(UserInputError, match=r"was made with model sha256 0{64}, but .* now holds"):
        TrainedExperiment.load("linear", run)


@pytest.mark.slow
def test_self_comparison_is_refused_and_a_missing_evaluation_is_said(two_trained):
    _, out = two_trained
    from test_errors import refused

    refused(
        "src.compare",
        ["compare.experiments=[linear,linear]", f"paths.output={out}", f"compare.dir={out / 'c'}"],
        "compare.experiments lists linear more than once",
    )
    done = _compare(out, "tracking.enabled=false")
    assert "note: not evaluated: linear, rbf; compared on the discovery CV only" in done.stderr
