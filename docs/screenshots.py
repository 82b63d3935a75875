"""Screenshots for the README: the MLflow runs view of an experiment and the top of the report.

Starts ``mlflow server`` on 127.0.0.1 at a free port against a store, opens the experiment's runs table in
headless Chromium (the command-line ``--screenshot``, no Python driver needed), and captures the report's
first screen the same way; stops the server. Needs Chromium (Debian: ``apt-get install chromium``).

Usage::

    python docs/screenshots.py --store mlruns --experiment gm_only --report reports/report.html
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's src/, also when it is not pip-installed

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def screenshot(browser: str, url: str, out: Path, size: str, wait_ms: int) -> None:
    """``url`` rendered for ``wait_ms`` of virtual time (a single-page app needs it to fetch and draw)."""
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={profile}",
                f"--window-size={size}",
                f"--virtual-time-budget={wait_ms}",
                f"--screenshot={out}",
                url,
            ],
            check=True,
            capture_output=True,
            timeout=180,
        )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, default=ROOT / "mlruns")
    parser.add_argument("--experiment", default="gm_only")
    parser.add_argument("--report", type=Path, default=ROOT / "reports" / "report.html")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("Chromium not found (Debian: apt-get install chromium)")
    from mlflow.tracking import MlflowClient

    from src.tracking.server import mlflow_server

    uri = f"sqlite:///{args.store.resolve() / 'mlflow.db'}"
    experiment = MlflowClient(uri).get_experiment_by_name(args.experiment)
    if experiment is None:
        raise SystemExit(f"experiment {args.experiment!r} not in {uri}")
    with mlflow_server(uri) as url:
        runs_url = f"{url}/#/experiments/{experiment.experiment_id}/runs"
        screenshot(browser, runs_url, args.out / "mlflow_runs.png", "1600,900", 20_000)
    print(f"{args.out / 'mlflow_runs.png'} <- {runs_url}")
    screenshot(browser, args.report.resolve().as_uri(), args.out / "report_top.png", "1300,1100", 2_000)
    print(f"{args.out / 'report_top.png'} <- {args.report}")


if __name__ == "__main__":
    main()
