"""Model files cannot run code: skops with a trusted-type list, sha256 verified before any load, pickles only
on explicit request; a swapped file in the DVC folder or in the MLflow registry is refused."""

from __future__ import annotations

import io
import json
import pickle
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import skops.io as sio
from conftest import subprocess_env
from test_tracking import local_store, write_cohorts  # noqa: F401  (module fixture: a tracked run)

from src.utils.io import file_sha256
from src.validation.ensemble import (
    LEGACY_MODEL_FILE,
    LINEAR_MODEL_FILE,
    MODEL_FILE,
    ModelIntegrityError,
    load_model,
    read_model_file,
)

MARKER = Path("/tmp") / "ketamine-trd-model-executed-code"


class Payload:
    """Writes MARKER when unpickled or rebuilt from state: what a malicious model file would do."""

    def __reduce__(self):
        return (Path.write_text, (MARKER, "pwned"))

    def __setstate__(self, state):
        MARKER.write_text("pwned")


@pytest.fixture(autouse=True)
def no_marker():
    MARKER.unlink(missing_ok=True)
    yield
    assert not MARKER.exists(), "a model file executed code"


@pytest.fixture()
def trained(local_store, tmp_path):  # noqa: F811
    folder = tmp_path / "model"
    shutil.copytree(local_store / "out" / "gm_only" / "train" / "model", folder)
    metrics = json.loads((local_store / "out" / "gm_only" / "train" / "metrics.json").read_text())
    return folder, metrics["provenance"]["model_sha256"]


@pytest.mark.slow
def test_saved_model_loads_only_with_its_recorded_hash(trained):
    folder, sha256 = trained
    assert load_model(folder, sha256).feature_columns  # the genuine file
    other = read_model_file(folder / LINEAR_MODEL_FILE)
    other.info["seed"] = -1  # a different, well-formed model
    other.save(folder)
    with pytest.raises(
        ModelIntegrityError, match=f"has sha256 [0-9a-f]{{64}}, but training recorded {sha256}"
    ):
        load_model(folder, sha256)


@pytest.mark.slow
def test_a_linear_model_is_arrays_and_json(trained):
    """The linear ensemble is readable with numpy alone: its arrays are the fold models' affine weights."""
    folder, sha256 = trained
    model = load_model(folder, sha256)
    with np.load(folder / LINEAR_MODEL_FILE, allow_pickle=False) as archive:
        assert sorted(archive.files) == [
            "adjustment_coef",
            "covariate_weights",
            *(f"distance_{k}" for k in ("axes", "mean", "reference", "scale", "variances")),
            "intercepts",
            "meta.json",
            "weights",
        ]
        meta = json.loads(archive["meta.json"])
        weights, intercepts = archive["weights"], archive["intercepts"]
    assert weights.shape == (len(model.models), len(meta["feature_columns"]))
    assert meta["design_columns"][0][:4] == ["intercept", "age", "sex=M", "tiv"]
    np.testing.assert_array_equal(weights[2], model.models[2].weights)
    assert intercepts[2] == model.models[2].intercept
    # saving the loaded model again gives the same bytes (the hash training recorded)
    model.save(folder)
    assert file_sha256(folder / LINEAR_MODEL_FILE) == sha256


@pytest.mark.slow
def test_an_object_array_in_a_linear_model_is_refused(trained):
    folder, _ = trained
    with zipfile.ZipFile(folder / LINEAR_MODEL_FILE, "a") as archive:
        buffer = io.BytesIO()
        np.save(buffer, np.array([Payload()], dtype=object), allow_pickle=True)  # a pickle inside an .npy
        archive.writestr("weights.npy", buffer.getvalue())
    with pytest.raises(ModelIntegrityError, match="is not a linear ensemble archive"):
        load_model(folder)


@pytest.mark.slow
def test_untrusted_types_are_refused_before_anything_is_built(trained):
    folder, _ = trained
    model = read_model_file(folder / LINEAR_MODEL_FILE)
    model.info["payload"] = Payload()
    (folder / LINEAR_MODEL_FILE).unlink()
    sio.dump(model, folder / MODEL_FILE)  # as an RBF ensemble would be saved
    with pytest.raises(
        ModelIntegrityError, match=r"types this project does not trust: \[.*'test_model_safety.Payload'"
    ):
        load_model(folder)


@pytest.mark.slow
def test_a_pickle_is_refused_unless_asked_for(trained):
    folder, _ = trained
    (folder / LINEAR_MODEL_FILE).unlink()
    with open(folder / LEGACY_MODEL_FILE, "wb") as handle:
        pickle.dump(Payload(), handle)
    with pytest.raises(ModelIntegrityError, match="is a pickle .* could run code"):
        load_model(folder)
    assert not MARKER.exists()


def evaluate(store: Path) -> subprocess.CompletedProcess:
    """`python -m src.evaluate` on the tracked run of ``store`` (the fixture of test_tracking)."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "src.evaluate",
            "+experiment=gm_only",
            f"paths.features={store / 'features'}",
            f"paths.output={store / 'out'}",
            "n_jobs=1",
            f"hydra.run.dir={store}/hydra",
            "evaluation.n_permutations=100",
            "evaluation.n_bootstrap=50",
            "evaluation.weight_permutations=200",
        ],
        cwd=store,
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )


@pytest.mark.slow
def test_registry_swap_is_refused_by_the_evaluation(local_store):  # noqa: F811
    """Replace MLflow's copy of the registered model: `src.evaluate` refuses it, naming both hashes."""
    (registered,) = [p for p in (local_store / "mlruns" / "artifacts").rglob("*.skops")]
    original = registered.read_bytes()
    model = read_model_file(registered)
    model.info["payload"] = Payload()
    try:
        sio.dump(model, registered)
        done = evaluate(local_store)
        assert done.returncode == 2, done.stderr
        assert "has sha256" in done.stderr and "but training recorded" in done.stderr
    finally:
        registered.write_bytes(original)


@pytest.mark.slow
def test_a_corrupt_store_falls_back_to_the_verified_dvc_copy(local_store):  # noqa: F811
    database = local_store / "mlruns" / "mlflow.db"
    original = database.read_bytes()
    try:
        database.write_bytes(b"not a database" * 1000)
        done = evaluate(local_store)
        assert done.returncode == 0, done.stderr
        output = done.stdout + done.stderr  # Hydra's console log handler writes to stdout
        assert output.count("using the DVC-versioned model") == 1, output
        tracking = json.loads((local_store / "out" / "gm_only" / "evaluate" / "tracking.json").read_text())
        assert tracking["model_source"].endswith("train/model") and tracking["evaluation_runs"] == {}
    finally:
        database.write_bytes(original)


def test_report_refuses_an_evaluation_of_another_model(tmp_path):
    from src.reporting.document import ExperimentResults
    from src.utils.errors import UserInputError

    for stage, sha in (("train", "a" * 64), ("evaluate", "b" * 64)):
        (tmp_path / "exp" / stage).mkdir(parents=True)
        (tmp_path / "exp" / stage / "metrics.json").write_text(
            json.dumps({"provenance": {"model_sha256": sha}})
        )
    (tmp_path / "exp" / "train" / "config.yaml").write_text("name: exp\n")
    with pytest.raises(
        UserInputError, match=f"made with model sha256 {'b' * 64}, but .* now holds {'a' * 64}"
    ):
        ExperimentResults.load("exp", tmp_path / "exp")


@pytest.mark.slow
def test_an_edited_mlmodel_cannot_run_code_through_the_evaluation(local_store):  # noqa: F811
    """The registry version's MLmodel (not covered by the model hash) is edited to name a cloudpickle
    beside the verified model.skops: the evaluation builds the model from the verified file itself, so the
    pickle is never read, and the evaluation still runs (MLflow's evaluation included)."""
    (registered,) = [p for p in (local_store / "mlruns" / "artifacts").rglob("*.skops")]
    mlmodel = registered.parent / "MLmodel"
    original = mlmodel.read_text()
    assert "serialization_format: skops" in original
    with open(registered.parent / "model.pkl", "wb") as handle:
        pickle.dump(Payload(), handle)
    edited = original.replace("serialization_format: skops", "serialization_format: cloudpickle")
    edited = edited.replace(f"pickled_model: {registered.name}", "pickled_model: model.pkl")
    assert edited.count("model.pkl") == 1
    try:
        mlmodel.write_text(edited)
        done = evaluate(local_store)
        assert done.returncode == 0, done.stderr
        assert not MARKER.exists(), "the evaluation followed the edited MLmodel"
        tracking = json.loads((local_store / "out" / "gm_only" / "evaluate" / "tracking.json").read_text())
        assert tracking["model_source"].startswith("models:/") and tracking["evaluation_runs"]
    finally:
        mlmodel.write_text(original)
        (registered.parent / "model.pkl").unlink()


@pytest.mark.slow
@pytest.mark.parametrize("recorded", [None, "deleted", "not-a-hash"])
def test_a_model_without_a_recorded_hash_is_never_used(local_store, tmp_path, recorded):  # noqa: F811
    """A null, deleted or malformed ``model_sha256`` in train/metrics.json: evaluate and predict refuse
    (one line, exit 2), with and without tracking; nothing is called verified."""
    from test_errors import refused

    work = tmp_path / "work"
    shutil.copytree(local_store / "out", work / "out")
    for stage in ("evaluate", "predict"):  # the fixture's own evaluation: not this test's output
        shutil.rmtree(work / "out" / "gm_only" / stage, ignore_errors=True)
    metrics_path = work / "out" / "gm_only" / "train" / "metrics.json"
    metrics = json.loads(metrics_path.read_text())
    if recorded == "deleted":
        del metrics["provenance"]["model_sha256"]
    else:
        metrics["provenance"]["model_sha256"] = recorded
    metrics_path.write_text(json.dumps(metrics))
    common = [
        "+experiment=gm_only",
        f"paths.features={local_store / 'features'}",
        f"paths.output={work / 'out'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        "tracking.enabled=false",
    ]
    expected = "provenance.model_sha256 is "
    refused("src.evaluate", common, expected)
    table = local_store / "features" / "gm_roi" / "saline.parquet"
    refused("src.predict", [*common, f"input={table}"], expected)
    assert not (work / "out" / "gm_only" / "evaluate").exists()
    assert not (work / "out" / "gm_only" / "predict").exists()


def test_an_internally_inconsistent_model_is_refused(tmp_path):
    """A model whose file and hash were both edited still cannot have a negated calibration (every decision
    flipped) or an unsorted distance reference: training never writes one."""
    from src.models.linear import AffineDecision
    from src.models.residualize import CovariateResidualizer
    from src.utils.io import file_sha256
    from src.validation.ensemble import EnsembleModel, check_consistent, model_file

    design = CovariateResidualizer.from_parts(["age"], [], {}, [])
    design.n_features_in_ = 3
    fold = AffineDecision(np.array([1.0, -1.0]), np.zeros(2), 0.0, design)
    good = EnsembleModel([fold], ["gm_a", "gm_b"], ["age"], (2.0, 0.1))
    assert check_consistent(good, "x") is good
    for calibration, expected in (
        ((-2.0, 0.1), "slope -2 is negative"),
        ((np.nan, 0.0), "not two finite"),
    ):
        bad = EnsembleModel([fold], ["gm_a", "gm_b"], ["age"], calibration)
        bad.save(tmp_path / "m")
        path = model_file(tmp_path / "m")
        with pytest.raises(ModelIntegrityError, match=expected):
            read_model_file(path, file_sha256(path))  # the hash matches: the edit was "re-signed"
    bad = EnsembleModel(
        [fold], ["gm_a", "gm_b"], ["age"], (2.0, 0.1), distance={"reference": np.array([3.0, 1.0])}
    )
    with pytest.raises(ModelIntegrityError, match="reference is not sorted"):
        check_consistent(bad, "x")


@pytest.mark.slow
def test_a_store_that_fails_while_logging_keeps_the_evaluation(local_store, tmp_path):  # noqa: F811
    """The store loads the registered model but cannot take the evaluation's artifacts (the experiment's
    artifact location is a file): one warning, exit 0, the evaluation complete on disk, tracking.json says
    what failed."""
    import sqlite3

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    database = local_store / "mlruns" / "mlflow.db"
    original = database.read_bytes()
    evaluate_dir = local_store / "out" / "gm_only" / "evaluate"
    try:
        with sqlite3.connect(database) as connection:
            connection.execute("UPDATE experiments SET artifact_location = ?", (blocker.as_uri(),))
        shutil.rmtree(evaluate_dir, ignore_errors=True)
        done = evaluate(local_store)
        assert done.returncode == 0, done.stderr
        output = done.stdout + done.stderr
        assert output.count("MLflow logging failed") == 1 and "Traceback" not in output, output
        assert "the evaluation is complete in" in output
        metrics = json.loads((evaluate_dir / "metrics.json").read_text())
        assert set(metrics["cohorts"]) >= {"discovery", "external", "control"}
        tracking = json.loads((evaluate_dir / "tracking.json").read_text())
        assert tracking["model_source"].startswith("models:/") and tracking["tracking_error"]
    finally:
        database.write_bytes(original)
