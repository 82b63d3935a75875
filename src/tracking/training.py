"""A training run in MLflow: one parent run per ``src.train`` invocation, one child run per outer fold
(with each inner-loop trial as a stepped metric), and the locked ensemble as a registered model."""

from __future__ import annotations

import contextlib
import logging
import platform
import shlex
import sys
import tempfile
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.config.settings import ExperimentConfig, PredictSettings, TrackingSettings
from src.data.cohorts import is_simulated
from src.interpretation.importance import model_regions
from src.models.search_space import to_choice
from src.tracking.figures import ensemble_figures, optuna_figures, permutation_figure, regression_figures
from src.tracking.scorer import SETTINGS
from src.tracking.store import (
    flatten,
    killed_on_interrupt,
    open_experiment,
    quiet_stderr,
    shown,
)
from src.utils.io import file_sha256
from src.utils.provenance import dvc_output_md5, git_state, package_versions
from src.validation.ensemble import TRUSTED_TYPES, ModelIntegrityError, model_file
from src.validation.experiment import TrainingInputs, TrainingOutcome
from src.validation.metrics import REGRESSION_METRICS, binary_metrics, regression_metrics
from src.validation.nested_cv import RegressionCVResult

log = logging.getLogger(__name__)

# Tag/metric keys shared by every experiment, so runs table side by side in the UI and in search_runs.
ROLE_TAG = "run_role"
TRAINING, OUTER_FOLD, EVALUATION = "training", "outer_fold", "evaluation"
OUTER_METRICS = ("bac", "auc", "sensitivity", "specificity")


@dataclass(frozen=True)
class TrainingRun:
    """Where a training run and its model went (written to ``train/tracking.json`` for the evaluation)."""

    tracking_uri: str
    experiment_id: str
    run_id: str
    model_uri: str
    registered_model: str | None
    model_version: str | None
    model_sha256: str | None = None  # of the logged model's skops file; verified before a registry load
    scorer_uri: str | None = None  # the pyfunc that serves patients (src.tracking.scorer)

    @property
    def registry_uri(self) -> str | None:
        """``models:/<name>/<version>`` of the registered model, or None."""
        if self.registered_model is None:
            return None
        return f"models:/{self.registered_model}/{self.model_version}"

    def to_dict(self) -> dict[str, Any]:
        """The fields and the registry URI, for ``tracking.json``."""
        return {**self.__dict__, "registry_uri": self.registry_uri}


# what a store answers when another writer inserted the same row between MLflow's check and its insert
# (SQLite, PostgreSQL directly or behind `mlflow server`, MySQL)
INTEGRITY_MARKERS = ("UNIQUE constraint failed", "duplicate key value", "Duplicate entry", "IntegrityError")


def log_input_once(dataset: Any, context: str, attempts: int = 8) -> None:
    """``mlflow.log_input`` that survives a concurrent writer of the same dataset.

    MLflow's ``log_inputs`` looks for the dataset (experiment, name, digest) and inserts it when absent, with
    no lock: two trainings logging the same table at the same instant both find it absent, and the second
    insert fails on the unique constraint (seen: the loser's run then held its params and none of its fold
    runs). A retry finds the row the other writer committed and only links it to this run, which is what
    MLflow would have done had the two not overlapped. Written here: MLflow offers no upsert for inputs."""
    import mlflow

    for attempt in range(attempts):
        try:
            mlflow.log_input(dataset, context=context)
            return
        except mlflow.exceptions.MlflowException as error:
            if attempt == attempts - 1 or not any(m in str(error) for m in INTEGRITY_MARKERS):
                raise
            log.info("dataset input %r logged concurrently by another run; retrying", dataset.name)
            time.sleep(0.05 * (attempt + 1))


def log_dataset_input(
    table: pd.DataFrame, input_columns: list[str], name: str, context: str, wide: bool, source: str = ""
) -> None:
    """A cohort's feature table as an input of the active run (MLflow's dataset: name, digest, schema).

    A voxel-width table becomes a tensor dataset (its schema is a shape, its digest a hash of the values)
    instead of MLflow's per-column schema, which grows per column; its columns are listed in
    ``dataset.json``."""
    import mlflow

    source = source or f"feature table {name}"
    if not wide:
        data = table[[*input_columns, "response"]].reset_index(drop=True)
        with (
            warnings.catch_warnings()
        ):  # "source can be interpreted in multiple ways": a local file, as meant
            warnings.simplefilter("ignore", UserWarning)
            dataset = mlflow.data.from_pandas(data, source=source, targets="response", name=name)
        log_input_once(dataset, context)
        return
    covariates = [c for c in input_columns if not pd.api.types.is_numeric_dtype(table[c])]
    numeric = table[[c for c in input_columns if c not in covariates]].to_numpy(dtype=np.float32)
    dataset = mlflow.data.from_numpy(
        numeric, targets=table["response"].to_numpy(dtype=np.int64), name=name, source=source
    )
    log_input_once(dataset, context)
    mlflow.log_dict(
        {"numeric_columns": len(input_columns) - len(covariates), "categorical": covariates}, "dataset.json"
    )


def training_metrics(document: Mapping[str, Any]) -> dict[str, float]:
    """Parent-run metrics from the train ``metrics.json`` document: ``discovery_<m>`` (OOF ensemble),
    ``discovery_repeat_<m>_mean``/``_sd``, ``permutation_p``."""
    # the document's own metrics: a classifier's METRICS, a regressor's R², r, MAE, ... (and its BAC & co.)
    names = list(document["ensemble"])
    out = {f"discovery_{m}": document["ensemble"][m] for m in names}
    for m in names:
        out[f"discovery_repeat_{m}_mean"] = document["repeats"][m]["mean"]
        out[f"discovery_repeat_{m}_sd"] = document["repeats"][m]["sd"]
    if document.get("permutation"):
        out["permutation_p"] = document["permutation"]["p_value"]
        out["permutation_null_mean"] = document["permutation"]["null_mean"]
    out["n_subjects"] = document["n"]
    out["n_features"] = document["n_features"]
    return {k: shown(v) for k, v in out.items() if v is not None and np.isfinite(v)}


def provenance_tags(
    config: ExperimentConfig, feature_tables: Mapping[str, str], dvc_md5: str | None
) -> dict[str, str]:
    """MLflow tags tracing a run to its code (git commit, dirty state), data (feature-table md5s, DVC) and
    config."""
    git = git_state()
    tags = {
        ROLE_TAG: TRAINING,
        "experiment": config.name,
        "features": config.features.name,
        "model": config.model.name,
        "seed": str(config.seed),
        "host": platform.node(),
        "git_commit": str(git["commit"]),
        "git_dirty": str(git["dirty"]),
        # simulated cohorts (the simulator's mark), whatever the data config is called
        "data_simulated": str(is_simulated(config.data)).lower(),
        **{f"data_md5.{cohort}": md5 for cohort, md5 in feature_tables.items()},
        **{f"pkg.{name}": version for name, version in package_versions().items()},
    }
    if git["commit"]:
        tags["mlflow.source.git.commit"] = str(git["commit"])
    if dvc_md5:
        tags["data_dvc_md5"] = dvc_md5
    return tags


def log_training(
    config: ExperimentConfig,
    params: Mapping[str, Any],
    inputs: TrainingInputs,
    outcome: TrainingOutcome,
    outputs: Path,
    start_time: float | None = None,
) -> TrainingRun:
    """Log one nested-CV run: parent (config, provenance, metrics, artifacts, model) + R x K fold runs.

    Parameters
    ----------
    config : ExperimentConfig
        The typed settings (tracking store, names, seed, the patient scorer's settings).
    params : mapping
        The configuration as composed (resolved): flattened into the parent's params.
    inputs : TrainingInputs
        The training table (its first rows: the model's input example; the whole: the run's dataset input),
        its path (md5 and DVC hash) and the search space (Optuna figures).
    outcome : TrainingOutcome
        The nested-CV result, the permutation test, the ``metrics.json`` document and the locked model.
    outputs : Path
        The folder holding the train outputs (tables, config.yaml); its files become artifacts.
    start_time : float, optional
        When training started (``time.time()``): the run's start, so its duration is the training's (the
        run is created once the results are on disk, so that a failed logging never loses them).

    Returns
    -------
    TrainingRun
    """
    with warnings.catch_warnings():
        # MLflow's hints (a dataset source "interpreted in multiple ways", integer columns in a schema) are
        # about situations the checked inputs rule out: not for the console
        warnings.filterwarnings("ignore", category=UserWarning, module="mlflow")
        return _log_training(config, params, inputs, outcome, outputs, start_time)


def _log_training(
    config: ExperimentConfig,
    params: Mapping[str, Any],
    inputs: TrainingInputs,
    outcome: TrainingOutcome,
    outputs: Path,
    start_time: float | None,
) -> TrainingRun:
    from mlflow.tracking import MlflowClient

    settings, document = config.tracking, outcome.document
    experiment_id = open_experiment(settings)
    client = MlflowClient()
    name = config.name
    feature_tables = {inputs.cohort: document["provenance"]["feature_table_md5"]}
    tags = provenance_tags(config, feature_tables, dvc_output_md5(inputs.path.parent))
    model_sha256 = document.get("provenance", {}).get("model_sha256")
    if model_sha256:
        tags["model_sha256"] = model_sha256
    created = client.create_run(
        experiment_id,
        start_time=int(1000 * (start_time or time.time())),
        tags={**tags, "mlflow.runName": f"{name} seed {config.seed}"},
    )
    try:
        return _log_into_run(config, params, inputs, outcome, outputs, client, experiment_id, created)
    except Exception as error:
        mark_tracking_failure(client, created.info.run_id, error)
        raise


def relog_command() -> str:
    """The command that logs a training again: this process's own (finished folds and permutations are read
    back from their checkpoints, so only the final refits are computed)."""
    return " ".join(["python -m src.train", *(shlex.quote(arg) for arg in sys.argv[1:])])


def mark_tracking_failure(client: Any, run_id: str, error: BaseException) -> None:
    """A training run whose logging failed part-way: FAILED, with the reason and the command that logs it
    again as tags, so the MLflow view says what happened instead of showing a run with params and no fold
    runs. Best effort: the store may be the thing that failed."""
    reason = f"{type(error).__name__}: {(str(error).strip().splitlines() or [''])[0]}"[:5000]
    try:
        client.set_tag(run_id, "tracking_error", reason)
        client.set_tag(run_id, "relog", f"{relog_command()} (results are on disk; this logs them again)")
        client.set_terminated(run_id, status="FAILED")
    except Exception as second:  # the store itself is failing: the warning of the entry point says it
        log.info("could not mark run %s as failed: %s", run_id, second)


def _log_into_run(
    config: ExperimentConfig,
    params: Mapping[str, Any],
    inputs: TrainingInputs,
    outcome: TrainingOutcome,
    outputs: Path,
    client: Any,
    experiment_id: str,
    created: Any,
) -> TrainingRun:
    import mlflow

    settings, model, document, result = config.tracking, outcome.model, outcome.document, outcome.result
    start, name = time.perf_counter(), config.name
    with mlflow.start_run(run_id=created.info.run_id) as run, killed_on_interrupt():
        run_id = run.info.run_id
        mlflow.log_params(flatten(params))
        wide = len(model.input_columns) > settings.wide_table_columns
        log_dataset_input(
            inputs.table, model.input_columns, inputs.cohort, "training", wide, str(inputs.path)
        )
        mlflow.log_metrics(training_metrics(document))
        per_repeat = result.per_repeat()
        regression = isinstance(result, RegressionCVResult)
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[
                mlflow.entities.Metric(f"repeat_{m}", shown(row[m]), now, int(row["repeat"]))
                for _, row in per_repeat.iterrows()
                for m in (OUTER_METRICS if not regression else REGRESSION_METRICS)
                if np.isfinite(row[m])
            ],
        )
        _log_fold_runs(client, experiment_id, run_id, result)
        with tempfile.TemporaryDirectory() as tmp:
            figures = Path(tmp)
            if regression:
                regression_figures(result.y, result.ensemble_scores(), figures, name, result.responder_cut)
            else:
                ensemble_figures(result.y, result.ensemble_scores(), figures, name)
            optuna_figures(result.trials(), inputs.space, figures, _inner_target(result))
            regions = model_regions(model, inputs.table, inputs.path.parent)
            if regions is not None:
                regions.to_csv(figures / "weights.csv", index=False)
            if outcome.permutation is not None and len(outcome.permutation.null):
                permutation_figure(
                    outcome.permutation.null,
                    document["permutation"]["observed"],
                    figures,
                    outcome.permutation.statistic,
                )
            mlflow.log_artifacts(str(figures), "figures")
        for path in sorted(outputs.iterdir()):
            if path.is_file():
                mlflow.log_artifact(str(path), "train")
        info = _log_model(settings, model, inputs.table[model.input_columns].head(5), name)
        # MLflow writes its own model file: its hash (not the DVC copy's) is what a registry load verifies
        registry_sha256 = logged_model_sha256(info.model_uri)
        mlflow.set_tag("registry_model_sha256", registry_sha256)
        scorer = _log_scorer(settings, outputs / "model", config.predict, name)
    log.info("MLflow: logged run %s in %.1f s", run_id, time.perf_counter() - start)
    version = getattr(info, "registered_model_version", None)
    if version is not None:
        describe_version(client, settings.model_name, str(version), name, document)
    return TrainingRun(
        tracking_uri=mlflow.get_tracking_uri(),
        experiment_id=experiment_id,
        run_id=run_id,
        model_uri=info.model_uri,
        registered_model=settings.model_name if settings.register_model else None,
        model_version=None if version is None else str(version),
        model_sha256=registry_sha256,
        scorer_uri=scorer.model_uri,
    )


def _inner_target(result: Any) -> str:
    """The inner objective's name in figures and fold runs: ``inner BAC``, or a regressor's objective."""
    return f"inner {result.objective}" if isinstance(result, RegressionCVResult) else "inner BAC"


def _log_fold_runs(client: Any, experiment_id: str, parent_id: str, result: Any) -> None:
    """One child run per (repeat, outer fold). Each trial's mean inner BAC is the stepped metric
    ``inner_bac`` (step = trial number) so the UI draws every study's optimisation history; all of a
    fold's values go in one ``log_batch`` call, sent asynchronously and awaited at the end. Interrupted or
    failed, the child runs created so far are ended KILLED or FAILED, never left RUNNING."""
    operations: list[tuple[str, Any]] = []
    created: list[str] = []
    try:
        _create_fold_runs(client, experiment_id, parent_id, result, created, operations)
        for run_id, operation in operations:
            operation.wait()
            client.set_terminated(run_id)
            created.remove(run_id)
    except BaseException as error:
        # an interruption (Ctrl-C, SIGTERM) or an error: no child run may stay RUNNING beside its parent
        status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
        for run_id in created:
            with contextlib.suppress(Exception):
                client.set_terminated(run_id, status)
        raise


def _create_fold_runs(
    client: Any,
    experiment_id: str,
    parent_id: str,
    result: Any,
    created: list[str],
    operations: list[tuple[str, Any]],
) -> None:
    """Create the child runs (their ids appended to ``created`` as soon as they exist) and start sending
    their values (the pending operations appended to ``operations``)."""
    from mlflow.entities import Metric, Param, RunTag

    for fold in result.folds:
        child = client.create_run(
            experiment_id,
            run_name=f"repeat {fold.repeat:02d} fold {fold.fold:02d}",
            tags={"mlflow.parentRunId": parent_id, ROLE_TAG: OUTER_FOLD},
        )
        created.append(child.info.run_id)
        now = int(time.time() * 1000)
        trials = fold.trials.sort_values("number")
        inner = _inner_target(result).replace(" ", "_").replace("BAC", "bac")
        metrics = [
            Metric(inner, shown(v), now, int(n))
            for n, v in zip(trials["number"], trials["value"], strict=True)
        ]
        if isinstance(result, RegressionCVResult):  # R² against this fold's training mean
            outer = regression_metrics(result.y[fold.test], fold.decision, float(result.y[fold.train].mean()))
            names: tuple[str, ...] = REGRESSION_METRICS
        else:
            outer, names = binary_metrics(result.y[fold.test], fold.decision), OUTER_METRICS
        metrics += [Metric(f"outer_{m}", shown(outer[m]), now, 0) for m in names if np.isfinite(outer[m])]
        metrics.append(Metric(f"{inner.replace('inner_', 'inner_best_')}", shown(fold.inner_best), now, 0))
        metrics.append(Metric("seconds", round(float(fold.seconds), 2), now, 0))
        params = [Param(k, str(to_choice(v))) for k, v in fold.best_params.items()]
        params += [
            Param("repeat", str(fold.repeat)),
            Param("fold", str(fold.fold)),
            Param("n_train", str(len(fold.train))),
            Param("n_test", str(len(fold.test))),
        ]
        tags = [RunTag("repeat", str(fold.repeat)), RunTag("fold", str(fold.fold))]
        operations.append(
            (child.info.run_id, client.log_batch(child.info.run_id, metrics, params, tags, synchronous=False))
        )


def record_failed_training(
    config: ExperimentConfig, params: Mapping[str, Any], start_time: float, error: BaseException
) -> str:
    """A training that failed after it started: a FAILED run (its config, start and end, the error) so that
    the MLflow view shows it beside the finished ones. Returns the run id."""
    import mlflow
    from mlflow.tracking import MlflowClient

    experiment_id = open_experiment(config.tracking)
    client = MlflowClient()
    name = config.name
    run = client.create_run(
        experiment_id,
        start_time=int(1000 * start_time),
        tags={
            "mlflow.runName": f"{name} seed {config.seed} "
            f"({'interrupted' if isinstance(error, KeyboardInterrupt) else 'failed'})",
            ROLE_TAG: TRAINING,
            "error": f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"[:5000],
        },
    )
    logged = [mlflow.entities.Param(k, v[:6000]) for k, v in flatten(params).items()]
    client.log_batch(run.info.run_id, params=logged)
    status = "KILLED" if isinstance(error, KeyboardInterrupt) else "FAILED"
    client.set_terminated(run.info.run_id, status=status)
    return run.info.run_id


CANDIDATE_ALIAS = "candidate"


def describe_version(
    client: Any, model_name: str, version: str, experiment: str, document: Mapping[str, Any]
) -> None:
    """The registered model's description (what it predicts, from what) and this version's (its nested-CV
    evidence and provenance); alias ``candidate`` moves to this newest trained version (``champion`` is set
    only by a passing external evaluation, :mod:`src.tracking.registry`)."""
    outcome = document.get("outcome") or {}
    continuous = outcome.get("kind") == "continuous"
    what = (
        f"The continuous outcome {outcome.get('target')!r} (default: the percentage MADRS reduction at 24 h)"
        if continuous
        else "Ketamine response (>= 50 % MADRS reduction at 24 h)"
    )
    how = (
        "mean predicted outcome; P(response) from the out-of-fold residuals"
        if continuous
        else "mean SVC decision, Platt-calibrated"
    )
    client.update_registered_model(
        model_name,
        description=(
            f"{what} in treatment-resistant depression from pre-treatment structural MRI: experiment "
            f"{experiment!r}, an ensemble of the repeated nested-CV fold models ({how}). Aliases: "
            "'candidate' = newest trained version, 'champion' = passed the external evaluation."
        ),
    )
    ens, perm, prov = document["ensemble"], document.get("permutation"), document["provenance"]
    git = prov.get("git") or {}
    result_text = (
        f"R² {ens['r2']:.3f} (against the training-fold means), r {ens['pearson_r']:.3f}, "
        f"MAE {ens['mae']:.2f}"
        if continuous
        else f"BAC {ens['bac']:.3f}, AUC {ens['auc']:.3f}"
    )
    client.update_model_version(
        model_name,
        version,
        description=(
            (
                "SIMULATED DATA (cohorts marked by the simulator): not a model of patients. "
                if prov.get("simulated")
                else ""
            )
            + f"Nested CV on {document['cohort']} (n = {document['n']}, {document['responders']} responders, "
            f"{document['cv']['repeats']}x{document['cv']['outer_folds']} folds): {result_text}"
            + (f", permutation p = {perm['p_value']:.3g} (n = {perm['n']})" if perm else "")
            + f". Feature table md5 {prov.get('feature_table_md5')}, code {git.get('commit')}"
            + (" (uncommitted changes)" if git.get("dirty") else "")
            + "."
        ),
    )
    client.set_registered_model_alias(model_name, CANDIDATE_ALIAS, version)


def download_model(model_uri: str, destination: str | Path) -> tuple[Path, Path]:
    """Download a logged MLflow model to ``destination``: (its folder, its one ``.skops`` file)."""
    import mlflow

    with quiet_stderr():
        folder = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=str(destination)))
    files = sorted(folder.rglob("*.skops"))
    if len(files) != 1:
        raise ModelIntegrityError(
            f"model {model_uri}: expected one skops model file, found {[f.name for f in files]}"
        )
    return folder, files[0]


def logged_model_sha256(model_uri: str) -> str:
    """sha256 of the ``.skops`` file of a logged MLflow model (downloaded to a temporary folder)."""
    with tempfile.TemporaryDirectory() as tmp:
        return file_sha256(download_model(model_uri, tmp)[1])


SCORER_SUFFIX = "-scorer"
SOURCE = Path(__file__).resolve().parents[1]  # this project's src/, shipped with every logged model
# what importing the ensemble's and the scorer's modules needs (versions: those installed at train time)
MODEL_PACKAGES = (
    "mlflow",
    "numpy",
    "pandas",
    "scikit-learn",
    "scipy",
    "skops",
    "nilearn",
    "nibabel",
    "optuna",
)
MODEL_PACKAGES += ("threadpoolctl", "tqdm", "joblib")


def model_requirements() -> list[str]:
    """pip requirements of a logged model: the installed versions of :data:`MODEL_PACKAGES`."""
    return [
        f"{package}=={version}"
        for package, version in package_versions(MODEL_PACKAGES).items()
        if package != "python" and version != "not installed"
    ]


def _log_scorer(settings: TrackingSettings, model_dir: Path, predict: PredictSettings, name: str) -> Any:
    """The patient scorer (:class:`~src.tracking.scorer.PatientScorer`): a pyfunc "model from code" that
    returns probability, interval and decision per patient, registered as ``<model_name>-scorer``.

    Its environment is rebuilt from the listed packages plus this project's ``src/`` shipped in the model
    (``code_paths``), never from a pin of this unpublished project. The locked ensemble travels as the DVC
    copy's arrays-only ``model.npz`` (or ``model.skops``), verified against its sha256 when the model loads.
    """
    import mlflow

    path = model_file(model_dir)
    with quiet_stderr():
        return mlflow.pyfunc.log_model(
            name="scorer",
            python_model=str(SOURCE / "tracking" / "scorer_model.py"),
            artifacts={"model": str(path)},
            code_paths=[str(SOURCE)],
            model_config={
                "model_sha256": file_sha256(path),
                **{k: float(getattr(predict, k)) for k in SETTINGS},
            },
            pip_requirements=model_requirements(),
            registered_model_name=settings.model_name + SCORER_SUFFIX if settings.register_model else None,
            tags={"experiment": name},
        )


def _log_model(settings: TrackingSettings, model: Any, example: pd.DataFrame, name: str) -> Any:
    """The locked ensemble as an MLflow scikit-learn model (``predict`` = labels, ``predict_proba`` = Platt
    probabilities; ``mlflow.sklearn.load_model`` gives back the ensemble with ``decision_function``).

    Requirements are listed instead of inferred: inference re-loads the model in a subprocess (seconds).
    """
    import mlflow
    from mlflow.models import infer_signature

    wide = example.shape[1] > settings.wide_table_columns
    # a column signature and input example grow with the columns, and MLflow casts them one column at a time
    # on every log and load: a voxel model goes without (columns.json in the run's artifacts lists them)
    # the registry prints "Successfully registered model ..." to stderr unconditionally; the schema inference
    # warns that integer columns cannot hold missing values (none are missing: the inputs are checked)
    with quiet_stderr(), warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        signature = None if wide else infer_signature(example, model.predict(example))
        return mlflow.sklearn.log_model(
            model,
            name="model",
            signature=signature,
            input_example=None if wide else example,
            # skops, not pickle: loading the model cannot run code; only our own classes are added as trusted
            serialization_format="skops",
            skops_trusted_types=TRUSTED_TYPES,
            pip_requirements=model_requirements(),
            # the ensemble's classes are this project's: shipped with the model, not pinned as a package
            code_paths=[str(SOURCE)],
            registered_model_name=settings.model_name if settings.register_model else None,
            tags={"experiment": name},
        )
