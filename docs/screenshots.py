"""Screenshots for the documentation: the MLflow runs view of some experiments, the top of the report and a
patient card.

Starts ``mlflow server`` on 127.0.0.1 at a free port against a store, opens the runs table of the
experiments in headless Chromium (the classic "Model training" view, training runs only, the discovery,
external and control metrics as columns), and captures the report's first screen; stops the server. Needs
Chromium (Debian: ``apt-get install chromium``) and Playwright's Python package (``pip install playwright``;
it drives the system Chromium, no browser download).

Usage::

    python docs/screenshots.py --store mlruns --experiments gm_only clinical_only gm_clinical_stack \
        --card outputs/gm_only/predict/cards/sub-ea001.html
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
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


METRICS = [
    "discovery_bac",
    "discovery_auc",
    "permutation_p",
    "external_bac",
    "external_auc",
    "external_p_bac",
    "control_bac",
    "control_auc",
    "specificity_p",
]


def runs_view(browser: str, url: str, out: Path, size: str) -> None:
    """The runs table at ``url``: Model-training mode, assistant closed, training runs, METRICS as columns."""
    from playwright.sync_api import sync_playwright

    width, height = (int(v) for v in size.split(","))
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        page = chromium.new_page(viewport={"width": width, "height": height})
        page.goto(url)
        page.wait_for_timeout(6000)
        if page.get_by_text("Model training").count():  # the UI's own mode switch (stored per browser)
            page.get_by_text("Model training").first.click()
            page.wait_for_timeout(1500)
        if page.get_by_role("button", name="Close").count():  # the assistant panel
            page.get_by_role("button", name="Close").first.click()
        search = page.get_by_placeholder('metrics.rmse < 1 and params.model = "tree"')
        search.fill("tags.run_role = 'training' and attributes.status = 'FINISHED'")
        search.press("Enter")
        page.wait_for_timeout(2500)
        page.get_by_role("button", name="Columns", exact=True).click()
        columns = page.get_by_placeholder("Search columns")
        for name in ("Source", "Models", *METRICS):  # untick two attributes, tick the metrics
            columns.fill(name)
            page.wait_for_timeout(500)
            page.get_by_text(name, exact=True).last.click()
            page.wait_for_timeout(300)
        page.keyboard.press("Escape")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out))
        chromium.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, default=ROOT / "mlruns")
    parser.add_argument("--experiments", nargs="+", default=["gm_only", "clinical_only", "gm_clinical_stack"])
    parser.add_argument("--report", type=Path, default=ROOT / "reports" / "report.html")
    parser.add_argument("--card", type=Path, default=None, help="a patient card (src.predict) to capture too")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("Chromium not found (Debian: apt-get install chromium)")
    from mlflow.tracking import MlflowClient

    from src.tracking.server import mlflow_server

    uri = f"sqlite:///{args.store.resolve() / 'mlflow.db'}"
    ids = []
    for name in args.experiments:
        experiment = MlflowClient(uri).get_experiment_by_name(name)
        if experiment is None:
            raise SystemExit(f"experiment {name!r} not in {uri}")
        ids.append(experiment.experiment_id)
    with mlflow_server(uri) as url:
        runs_url = f"{url}/#/compare-experiments/s?experiments={urllib.parse.quote(json.dumps(ids))}"
        runs_view(browser, runs_url, args.out / "mlflow_runs.png", "1900,300")
    print(f"{args.out / 'mlflow_runs.png'} <- {runs_url}")
    screenshot(browser, args.report.resolve().as_uri(), args.out / "report_top.png", "1300,1100", 2_000)
    print(f"{args.out / 'report_top.png'} <- {args.report}")
    if args.card is not None:
        screenshot(browser, args.card.resolve().as_uri(), args.out / "predict_card.png", "1000,1950", 2_000)
        print(f"{args.out / 'predict_card.png'} <- {args.card}")


if __name__ == "__main__":
    main()
