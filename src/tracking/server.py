"""A local `mlflow server` on 127.0.0.1 at a free port, for the UI, screenshots and tests."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from src.tracking.store import URI_VARIABLES, store_environment

# MLflow 3's UI opens an experiment on the GenAI "Overview" of traces in a fresh browser, whatever the
# experiment's mlflow.experimentKind tag says: the mode is a per-browser switch (GenAI / Model training)
# that only the URL parameter sets from outside (seen in MLflow 3.17.2, tests/test_mlflow_ui.py)
CLASSIC_VIEW = "workflowType=machine_learning"


def runs_page(base: str, experiment_id: str | None = None) -> str:
    """The UI address that opens on the runs table (an experiment's) or the experiment list, in the
    classic "Model training" mode, in any browser."""
    path = "#/experiments" if experiment_id is None else f"#/experiments/{experiment_id}/runs"
    return f"{base.rstrip('/')}/{path}?{CLASSIC_VIEW}"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (the OS picks it)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(
    backend_store_uri: str,
    artifacts_destination: str | Path | None = None,
    host: str = "127.0.0.1",
    timeout: float = 300.0,
) -> Iterator[str]:
    """Run ``mlflow server`` against ``backend_store_uri`` until the block ends; yields its URL.

    With ``artifacts_destination`` the server serves artifacts from there (``mlflow-artifacts:`` URIs).
    """
    port = free_port(host)
    command = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port)]
    command += ["--backend-store-uri", backend_store_uri, "--workers", "1"]
    if artifacts_destination is not None:
        command += ["--artifacts-destination", str(artifacts_destination)]
    # the server's registry is its backend store: no URI of this process's may point it elsewhere
    env = {k: v for k, v in os.environ.items() if k not in URI_VARIABLES}
    with _running(command, f"http://{host}:{port}", env, timeout) as url:
        yield url


@contextlib.contextmanager
def model_server(
    model_uri: str, tracking_uri: str, host: str = "127.0.0.1", timeout: float = 300.0
) -> Iterator[str]:
    """Run ``mlflow models serve`` of ``model_uri`` (e.g. ``models:/<name>-scorer@champion``, resolved in
    ``tracking_uri``) in this Python environment until the block ends; yields its URL (``/invocations``)."""
    port = free_port(host)
    command = [sys.executable, "-m", "mlflow", "models", "serve", "-m", model_uri, "-h", host]
    command += ["-p", str(port), "--env-manager", "local"]
    env = store_environment(tracking_uri)  # a models:/ URI resolves in this store's registry, no other
    with _running(command, f"http://{host}:{port}", env, timeout) as url:
        yield url


@contextlib.contextmanager
def _running(command: list[str], url: str, env: dict[str, str], timeout: float) -> Iterator[str]:
    """Start ``command``, wait until ``url``/health answers, yield ``url``; stop it when the block ends.
    The server's output goes to a log file whose end is shown if it fails to start."""
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            started = time.time()
            while not _healthy(url):
                exited = server.poll()
                if exited is not None or time.time() > started + timeout:
                    log.seek(0)
                    why = (
                        f"exited with status {exited}"
                        if exited is not None
                        else f"no answer from {url}/health within {timeout:.0f} s"
                    )
                    raise RuntimeError(
                        f"{' '.join(command[1:5])} did not start on {url} ({why}, polled every 0.5 s for "
                        f"{time.time() - started:.0f} s):\n{log.read()[-3000:]}"
                    )
                time.sleep(0.5)
            yield url
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@contextlib.contextmanager
def postgres_server(data_dir: str | Path, host: str = "127.0.0.1") -> Iterator[str]:
    """A real PostgreSQL server on ``host`` at a free port, with a new database cluster in ``data_dir``,
    until the block ends; yields its SQLAlchemy URI (``postgresql+psycopg2://postgres@host:port/postgres``).

    The server binaries come from the ``pgserver`` wheel (PyPI, installed with the ``cluster`` extra), which
    also handles running as root (PostgreSQL refuses to) through a dedicated system user. pgserver itself
    listens on a Unix socket only; the server is restarted to listen on ``host``:port as ``mlflow server``
    and remote workers expect.
    """
    # lazy: an optional test dependency (the PostgreSQL store)
    import pgserver

    # lazy: an optional test dependency (the PostgreSQL store)
    from pgserver._commands import pg_ctl

    server = pgserver.get_server(Path(data_dir), cleanup_mode="stop")
    try:
        port = free_port(host)
        socket_dir = server.get_postmaster_info().socket_dir
        options = f"-h {host} -p {port}" + (f" -k {socket_dir}" if socket_dir else "")
        pg_ctl(["-w", "-o", options, "restart"], pgdata=server.pgdata, user=server.system_user, timeout=60)
        yield f"postgresql+psycopg2://postgres@{host}:{port}/postgres"
    finally:
        # the restarted server is not the process pgserver started: stop it by its data directory; a fast
        # stop that fails (clients still closing on a loaded machine) is followed by an immediate one, and a
        # server already down is not an error (the block's own exception, if any, is the one to see)
        for mode in ("fast", "immediate"):
            try:
                pg_ctl(["-w", "-m", mode, "stop"], pgdata=server.pgdata, user=server.system_user, timeout=120)
                break
            except Exception:  # pgserver raises CalledProcessError; TimeoutExpired from subprocess
                if not (Path(server.pgdata) / "postmaster.pid").exists():
                    break
        server.cleanup()
