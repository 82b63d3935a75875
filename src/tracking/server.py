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


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(
    backend_store_uri: str,
    artifacts_destination: str | Path | None = None,
    host: str = "127.0.0.1",
    timeout: float = 90.0,
) -> Iterator[str]:
    """Run ``mlflow server`` against ``backend_store_uri`` until the block ends; yields its URL.

    With ``artifacts_destination`` the server serves artifacts from there (``mlflow-artifacts:`` URIs).
    The server's output goes to a log file whose content is shown if it fails to start.
    """
    port = free_port(host)
    command = [sys.executable, "-m", "mlflow", "server", "--host", host, "--port", str(port)]
    command += ["--backend-store-uri", backend_store_uri, "--workers", "1"]
    if artifacts_destination is not None:
        command += ["--artifacts-destination", str(artifacts_destination)]
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    url = f"http://{host}:{port}"
    with tempfile.TemporaryFile("w+") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.time() + timeout
            while not _healthy(url):
                if server.poll() is not None or time.time() > deadline:
                    log.seek(0)
                    raise RuntimeError(f"mlflow server did not start on {url}:\n{log.read()[-3000:]}")
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
