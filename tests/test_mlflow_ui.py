"""The MLflow UI opens on the runs table: a real `mlflow server` on 127.0.0.1 and headless Chromium with a
fresh profile (Debian's chromium and Playwright's Python package; skipped where either is missing)."""

from __future__ import annotations

import shutil
import tempfile

import pytest
from test_tracking import local_store  # noqa: F401  (module fixture: a tracked run)

from src.tracking.server import mlflow_server, runs_page

BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def _page_text(url: str, until: str) -> tuple[str, str]:
    """The page's text and address once ``until`` shows (or after 45 s): a single-page app draws late."""
    playwright = pytest.importorskip("playwright.sync_api")
    with playwright.sync_playwright() as p, tempfile.TemporaryDirectory() as profile:
        context = p.chromium.launch_persistent_context(
            profile, executable_path=BROWSER, headless=True, args=[*FLAGS, "--no-first-run", "--disable-sync"]
        )
        page = context.new_page()
        page.goto(url)
        for _ in range(90):
            page.wait_for_timeout(500)
            if until in page.inner_text("body"):
                break
        page.wait_for_timeout(1000)
        text, address = page.inner_text("body"), page.url
        context.close()
    return text, address


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="no Chromium on this machine (Debian: apt-get install chromium)")
def test_the_printed_address_opens_the_runs_table_in_a_fresh_browser(local_store):  # noqa: F811
    from mlflow.tracking import MlflowClient

    store = f"sqlite:///{local_store / 'mlruns' / 'mlflow.db'}"
    experiment = MlflowClient(store).get_experiment_by_name("gm_only")
    with mlflow_server(store) as base:
        plain, where = _page_text(f"{base}/#/experiments/{experiment.experiment_id}", "Token")
        # what a user met: the GenAI overview, although the experiment carries mlflow.experimentKind
        assert "overview" in where and "Token" in plain and "Run Name" not in plain
        text, where = _page_text(runs_page(base, experiment.experiment_id), "gm_only seed")
        assert where.split("?")[0].endswith("/runs") and "Run Name" in text and "Model registry" in text
        assert "gm_only seed" in text  # the training run is in the table
        listing, _ = _page_text(runs_page(base), "gm_only")
        assert "gm_only" in listing
