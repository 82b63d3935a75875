"""The plan (``python -m src.plan``) on the experiment's MLflow training run: its files as artifacts under
``plan/`` and its sample sizes and learning-curve means as metrics, so the runs view compares them."""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src.config.settings import TrackingSettings
from src.tracking.store import connect, shown


def plan_metrics(plan: Mapping[str, Any]) -> dict[str, float]:
    """``plan_development_n``, ``plan_external_<n_...>`` (discovery-scores scenario: ``plan_external_``;
    external-scores scenario: ``plan_external_observed_``) and ``plan_curve_<metric>_<n>``."""
    out: dict[str, float] = {}
    if "n" in plan["development"]:
        out["plan_development_n"] = float(plan["development"]["n"])
    for i, scenario in enumerate(plan["external_validation"].values()):
        prefix = "plan_external_" if i == 0 else "plan_external_observed_"
        for key, value in scenario.items():
            if key.startswith(("n_power", "n_precision")) and value is not None:
                out[prefix + key.removeprefix("n_")] = float(value)
    for row in plan["learning_curve"]["summary"]:
        for metric in ("bac_mean", "auc_mean", "statistic_mean"):
            if metric in row:
                out[f"plan_curve_{metric.removesuffix('_mean')}_{int(row['n'])}"] = float(row[metric])
    return out


def log_plan(
    settings: TrackingSettings, training: Mapping[str, Any], plan: Mapping[str, Any], out: Path
) -> str:
    """Log the plan to the training run; returns the line printed."""
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    connect(settings)
    client = MlflowClient()
    now = int(time.time() * 1000)
    client.log_batch(
        training["run_id"], metrics=[Metric(k, shown(v), now, 0) for k, v in plan_metrics(plan).items()]
    )
    client.log_artifacts(training["run_id"], str(out), "plan")
    return f"MLflow: plan logged to training run {training['run_id']}"
