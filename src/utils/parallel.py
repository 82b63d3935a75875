"""One parallel setting for the outer folds and the permutations: joblib's ``loky`` on this machine, or Dask.

``parallel.backend=dask`` submits the same tasks to a Dask cluster (the distributed client's API): an existing
scheduler (``parallel.address=tcp://host:8786`` or ``parallel.scheduler_file=<file>``, e.g. started by
``dask-scheduler``/``dask-worker`` or by dask-jobqueue on SLURM), else a ``LocalCluster`` of
``parallel.workers`` single-threaded worker processes. The large inputs of every task (the feature table and
the labels) are scattered to the workers once, not sent with each task. Every task is a pure function of its
inputs and its index-derived seeds, and results are collected in submission order, so the numbers are
bit-identical to ``n_jobs=1`` whatever the backend and the number of workers.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from joblib import Parallel

from src.utils.errors import UserInputError

BACKENDS = ("loky", "dask")
# Dask's worker defaults that cost our tasks time (measured per gm_only permutation on one worker against the
# same task in-process): the nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which returns freed
# memory to the OS so eagerly that the engine's many small temporaries are page-faulted back (+13 % CPU in
# the task, as much as setting it for a plain process), and the statistical profiler samples the task's
# stack every 10 ms (+5 % CPU in another thread, holding the GIL). Both are off for the clusters this module
# starts; an existing scheduler's workers keep their own config (docs: how-to/cluster).
WORKER_CONFIG = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,  # None: not set at all
    "distributed.worker.profile.enabled": False,
}
_CLIENT: contextvars.ContextVar[Any] = contextvars.ContextVar("dask_client", default=None)


@dataclass(frozen=True)
class ParallelSettings:
    """The ``parallel`` section of the config (see the module docstring)."""

    backend: str = "loky"
    address: str | None = None
    scheduler_file: str | None = None
    workers: int | None = field(default=None, metadata={"min": 1})

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise UserInputError(f"config key parallel.backend={self.backend!r}: must be one of {BACKENDS}")
        if self.address and self.scheduler_file:
            raise UserInputError("parallel.address and parallel.scheduler_file: give one, not both")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None) -> ParallelSettings:
        """The settings from the ``parallel`` config section."""
        return cls(**dict(cfg or {}))


@contextlib.contextmanager
def parallel_backend(settings: ParallelSettings, n_jobs: int) -> Iterator[str]:
    """Within the block, :func:`run_parallel` uses ``settings``' backend; yields a one-line description.

    With Dask and no scheduler given, a ``LocalCluster`` of ``settings.workers`` (default ``n_jobs``, all
    cores for -1) single-threaded processes is started for the block and closed after it.
    """
    if settings.backend == "loky":
        yield f"loky, n_jobs={n_jobs}"
        return
    # lazy: dask.distributed 0.26 s (benchmarks/import_time.py), only for parallel.backend=dask
    import dask
    from dask.distributed import Client, LocalCluster

    cluster = None
    if settings.address:
        client = Client(settings.address, set_as_default=False)
    elif settings.scheduler_file:
        client = Client(scheduler_file=settings.scheduler_file, set_as_default=False)
    else:
        workers = settings.workers or (None if n_jobs == -1 else n_jobs)
        with dask.config.set(WORKER_CONFIG):
            cluster = LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None
            )
        client = Client(cluster, set_as_default=False)
    token = _CLIENT.set(client)
    try:
        n_workers = len(client.scheduler_info()["workers"])
        yield f"dask, {n_workers} worker(s) at {client.scheduler.address}"
    finally:
        _CLIENT.reset(token)
        client.close()
        if cluster is not None:
            cluster.close()


class _Shared:
    """One large task input, scattered to the workers once. Dask sees a plain object: it neither tokenizes
    nor re-serializes the table for each task (a 22 k-column DataFrame costs dask ~6 s per tokenization,
    which made joblib's Dask backend, and scattering the DataFrame itself, slower than one worker)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def _unshared_call(func: Any, args: list[Any], kwargs: dict[str, Any]) -> Any:
    def plain(value: Any) -> Any:
        return value.value if isinstance(value, _Shared) else value

    return func(*map(plain, args), **{k: plain(v) for k, v in kwargs.items()})


def _on_dask(client: Any, jobs: Iterable[Any], shared: tuple[Any, ...]) -> Iterator[Any]:
    # Dask's client API directly, not joblib's Dask backend: that one tokenizes every task's arguments
    boxes = {id(obj): client.scatter(_Shared(obj), broadcast=True, hash=False) for obj in shared}
    futures = [
        client.submit(
            _unshared_call,
            func,
            [boxes.get(id(a), a) for a in args],
            {k: boxes.get(id(v), v) for k, v in kwargs.items()},
            pure=False,
        )
        for func, args, kwargs in jobs
    ]
    try:
        for future in futures:  # in submission order, whatever order they finish in
            yield future.result()
    finally:
        client.cancel(futures)


def run_parallel(jobs: Iterable[Any], n_jobs: int, shared: tuple[Any, ...] = ()) -> Iterator[Any]:
    """``joblib.Parallel(n_jobs)(jobs)`` (``jobs``: ``joblib.delayed`` calls) as a generator of results in
    submission order, on the active backend (:func:`parallel_backend`); on Dask the objects in ``shared``
    (passed to many jobs) are scattered to every worker once."""
    client = _CLIENT.get()
    if client is not None:
        return _on_dask(client, jobs, shared)
    return Parallel(n_jobs=n_jobs, return_as="generator")(jobs)
