"""Where runs go: the project's ``mlruns/`` store by default, any tracking server on request."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sys
from collections.abc import Iterator, Mapping
from typing import Any

from filelock import FileLock

from src.config.settings import TrackingSettings
from src.utils.errors import UserInputError

log = logging.getLogger(__name__)


# metrics are logged to 4 decimals (what the MLflow UI shows and compares); full precision is in the
# metrics.json files beside them
METRIC_DECIMALS = 4


def shown(value: float) -> float:
    """A metric value as logged to MLflow: rounded to :data:`METRIC_DECIMALS`."""
    return round(float(value), METRIC_DECIMALS)


@contextlib.contextmanager
def own_code_path() -> Iterator[None]:
    """Load an MLflow model without letting its shipped code (``code_paths``: a copy of ``src/`` from when
    it was trained) shadow this project's. MLflow puts that copy first on ``sys.path``; this process has
    ``src`` imported already, but worker processes started later (joblib/loky, Dask) inherit ``sys.path``
    and would import the model's older ``src`` (seen: a function added since training "not found" in a
    worker). ``sys.path`` is restored when the block ends."""
    saved = list(sys.path)
    try:
        yield
    finally:
        sys.path[:] = saved


# the two variables MLflow exports to the environment when its URIs are set (for subprocesses)
URI_VARIABLES = ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")


def connect(settings: TrackingSettings) -> None:
    """Point MLflow's tracking and registry at the configured store (creating the local folder).

    MLflow's ``set_tracking_uri`` and ``set_registry_uri`` also export ``MLFLOW_TRACKING_URI`` and
    ``MLFLOW_REGISTRY_URI`` to the environment; both are put back to what the user had, so that a later
    :class:`TrackingSettings` in this process resolves its own store and a server started later (which
    inherits the environment) does not open the last store connected's registry."""
    import mlflow

    if settings.is_local:
        settings.root_path.mkdir(parents=True, exist_ok=True)
    before = {name: os.environ.get(name) for name in URI_VARIABLES}
    mlflow.set_tracking_uri(settings.tracking_uri)
    mlflow.set_registry_uri(settings.tracking_uri)
    for name, value in before.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def store_environment(tracking_uri: str, base: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a process that serves or reads one store: ``base`` (default: this process's) with
    the tracking *and* the registry URI set to ``tracking_uri``, so that a ``models:/`` URI resolves in that
    store whatever this process connected to before."""
    env = dict(os.environ if base is None else base)
    env.update({name: tracking_uri for name in URI_VARIABLES})
    return env


# MLflow 3 opens an experiment on its GenAI "Overview" (traces, assistant) unless the experiment says it
# holds model training: this tag makes the UI open on the classic runs table
EXPERIMENT_KIND_TAG, EXPERIMENT_KIND = "mlflow.experimentKind", "custom_model_development"


def open_experiment(settings: TrackingSettings) -> str:
    """Point MLflow at the store and return the id of ``settings.experiment`` (created if absent).

    MLflow's client-side default artifact root for a SQLite store is ``./mlruns`` relative to the current
    directory; new experiments of a local store therefore get an explicit location inside ``root`` so that
    database and artifacts stay together. A server decides the artifact location itself.
    """
    import mlflow

    connect(settings)
    experiment = mlflow.get_experiment_by_name(settings.experiment)
    if experiment is not None:
        if experiment.tags.get(EXPERIMENT_KIND_TAG) != EXPERIMENT_KIND:
            mlflow.tracking.MlflowClient().set_experiment_tag(
                experiment.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND
            )
        return experiment.experiment_id
    location = None
    if settings.is_local:
        location = (settings.root_path / "artifacts" / settings.experiment).as_uri()
    log.info("creating MLflow experiment %r in %s", settings.experiment, settings.tracking_uri)
    try:
        return mlflow.create_experiment(
            settings.experiment, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND}
        )
    except mlflow.exceptions.MlflowException as error:
        # another process (a parallel run on a shared server) created it first
        if error.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
        return mlflow.get_experiment_by_name(settings.experiment).experiment_id


def check_store(settings: TrackingSettings) -> str:
    """Open the store and the experiment before any work; return the experiment id.

    A local store is created under a file lock (``<root>/.lock``), so that two first runs do not race on
    creating the database. Any failure (corrupt database, unreachable server) is one
    :class:`~src.utils.errors.UserInputError` naming the store, raised before the nested CV."""
    lock = contextlib.nullcontext()
    if settings.is_local:
        settings.root_path.mkdir(parents=True, exist_ok=True)
        lock = FileLock(str(settings.root_path / ".lock"), timeout=300)
    try:
        with lock, quiet_stderr():
            return open_experiment(settings)
    except Exception as err:  # MLflow, SQLAlchemy and network errors have no common base
        first = (str(err).strip().splitlines() or [""])[0][:300]
        raise UserInputError(
            f"tracking store {settings.tracking_uri} cannot be opened ({type(err).__name__}: {first}); fix "
            "or move it, point tracking.uri elsewhere, or run with tracking.enabled=false"
        ) from err


@contextlib.contextmanager
def killed_on_interrupt() -> Iterator[None]:
    """Inside ``mlflow.start_run``: an interruption (Ctrl-C, or SIGTERM turned into one by the entry points)
    ends the active run as KILLED; MLflow itself would mark it FAILED, as for an exception."""
    import mlflow

    try:
        yield
    except KeyboardInterrupt:
        mlflow.end_run("KILLED")
        raise


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested config -> ``{"model.search_space.C.low": "0.0001", ...}`` for MLflow params (lists as text)."""
    out: dict[str, str] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = str(value)
    return out


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Swallow MLflow's unconditional stderr prints (model registration) into the INFO log."""
    buffer = io.StringIO()
    with contextlib.redirect_stderr(buffer):
        yield
    if buffer.getvalue().strip():
        log.info("%s", buffer.getvalue().strip())
