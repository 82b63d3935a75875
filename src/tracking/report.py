"""Attach the cross-experiment report to each experiment's MLflow training run."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from src.tracking.store import TrackingSettings, connect

log = logging.getLogger(__name__)


def log_report(settings: TrackingSettings, run_ids: Sequence[str], report: Path) -> list[str]:
    """Log ``report`` under ``report/`` of every listed run the store holds; returns the runs logged to.

    Runs missing from the store (e.g. a deleted ``mlruns/``) are skipped with a warning.
    """
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    connect(settings)
    client = MlflowClient()
    logged = []
    for run_id in run_ids:
        try:
            client.get_run(run_id)
        except MlflowException:
            log.warning("MLflow run %s not in %s: report not attached to it", run_id, settings.tracking_uri)
            continue
        client.log_artifact(run_id, str(report), "report")
        logged.append(run_id)
    return logged
