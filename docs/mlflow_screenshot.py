"""Screenshot of the MLflow UI's compare view of the latest training runs of some experiments.

Starts ``mlflow server`` on 127.0.0.1 at a free port against the project's store, opens the compare view of
the newest ``run_role = training`` run of each experiment in headless Chromium, saves a PNG, and stops
the server. Needs Chromium (Debian: ``apt-get install chromium``) and Playwright's Python package
(``pip install playwright``; it drives the system Chromium, no browser download).

Usage::

    python docs/mlflow_screenshot.py --experiments gm_only gm_wm --out docs/mlflow_compare.png
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the project's src/, also when it is not pip-installed


def capture(browser: str, url: str, metrics: list[str], out: Path, size: str) -> None:
    """Open the compare view, put ``metrics`` on its parallel-coordinates plot, and save a screenshot.

    The metric picker is a virtualised list: options appear only when scrolled into view.
    """
    from playwright.sync_api import sync_playwright

    width, height = (int(v) for v in size.split(","))
    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=browser, args=["--no-sandbox"])
        page = chromium.new_page(viewport={"width": width, "height": height})
        page.goto(url)
        page.wait_for_selector("text=Parameters", timeout=90_000)
        picker = page.get_by_role("combobox").nth(1)
        for metric in metrics:
            picker.click()
            page.wait_for_timeout(400)
            for _ in range(60):
                option = page.locator(f".du-bois-light-select-item-option[title='{metric}']")
                if option.count():
                    if "selected" not in (option.first.get_attribute("class") or ""):
                        option.first.click()
                    break
                page.locator(".rc-virtual-list-holder").last.evaluate("e => e.scrollTop += 120")
                page.wait_for_timeout(100)
            else:
                raise SystemExit(f"metric {metric!r} not offered by the compare view")
            page.keyboard.press("Escape")
        page.wait_for_timeout(1500)
        page.screenshot(path=str(out))
        chromium.close()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--store", type=Path, default=ROOT / "mlruns")
    parser.add_argument("--experiments", nargs="+", default=["gm_only", "gm_wm"])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "mlflow_compare.png")
    parser.add_argument("--size", default="1500,1100", help="browser window width,height in pixels")
    parser.add_argument(
        "--metrics",
        nargs="+",
        default=["discovery_auc", "external_bac", "external_auc", "control_bac", "control_auc"],
        help="metrics added to the parallel-coordinates plot (discovery_bac is there by default)",
    )
    args = parser.parse_args()
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        raise SystemExit("Chromium not found (Debian: apt-get install chromium)")

    from mlflow.tracking import MlflowClient

    from src.tracking.server import mlflow_server

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

    with mlflow_server(uri) as url:
        query = urllib.parse.urlencode({"runs": json.dumps(runs), "experiments": json.dumps(experiment_ids)})
        page_url = f"{url}/#/compare-runs?{query}"
        capture(browser, page_url, args.metrics, args.out.resolve(), args.size)
    print(f"{args.out} <- {page_url}")


if __name__ == "__main__":
    main()
