"""Screenshot of the MLflow UI's compare view of the latest training runs of some experiments.

Starts ``mlflow server`` on 127.0.0.1 at a free port against the project's store, opens the compare view of
the newest ``run_role = training`` run of each experiment in headless Chromium, saves a PNG, and stops
the server. Needs Chromium (Debian: ``apt-get install chromium``).

Usage::

    python docs/mlflow_screenshot.py --experiments gm_only gm_wm --out docs/mlflow_compare.png
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, default=ROOT / "mlruns")
    parser.add_argument("--experiments", nargs="+", default=["gm_only", "gm_wm"])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "mlflow_compare.png")
    parser.add_argument("--size", default="1600,2600", help="browser window width,height in pixels")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("Chromium not found (Debian: apt-get install chromium)")

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{args.store.resolve() / 'mlflow.db'}"
    client = MlflowClient(uri)
    runs, experiment_ids = [], []
    for name in args.experiments:
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            raise SystemExit(f"experiment {name!r} not in {uri}")
        (run,) = client.search_runs(
            [experiment.experiment_id],
            "tags.run_role = 'training'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        runs.append(run.info.run_id)
        experiment_ids.append(experiment.experiment_id)

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--port", str(port)]
        + ["--backend-store-uri", uri, "--workers", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise SystemExit("mlflow server did not start") from None
                time.sleep(0.5)
        query = urllib.parse.urlencode({"runs": json.dumps(runs), "experiments": json.dumps(experiment_ids)})
        page = f"{url}/#/compare-runs?{query}"
        with tempfile.TemporaryDirectory() as profile:
            subprocess.run(
                [
                    browser,
                    "--headless",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--hide-scrollbars",
                    f"--user-data-dir={profile}",
                    f"--window-size={args.size}",
                    "--virtual-time-budget=30000",
                    f"--screenshot={args.out.resolve()}",
                    page,
                ],
                check=True,
                capture_output=True,
                timeout=180,
            )
        print(f"{args.out} <- {page}")
    finally:
        server.terminate()
        server.wait(timeout=20)


if __name__ == "__main__":
    main()
