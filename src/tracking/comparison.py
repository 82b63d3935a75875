"""A comparison of experiments in MLflow: one run per pair in the ``comparisons`` experiment, tagged with the
compared experiments and their training runs, so the UI lists it beside them and sorts pairs by p-value."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src.evaluation.model_comparison import net_benefit_at
from src.tracking.store import TrackingSettings, open_experiment, shown
from src.tracking.training import ROLE_TAG

COMPARISONS = "comparisons"  # the MLflow experiment of every comparison
COMPARISON = "comparison"  # its runs' role


def pair_metrics(pair: Mapping[str, Any]) -> dict[str, float]:
    """One pair's numbers as flat MLflow metrics (B - A differences, p-values, posterior probabilities)."""
    out: dict[str, float] = {}
    for metric, d in pair["discovery"].items():
        test, bayes = d["corrected_ttest"], d["bayesian"]
        out[f"discovery_{metric}_a"], out[f"discovery_{metric}_b"] = d["a_ensemble"], d["b_ensemble"]
        out[f"discovery_{metric}_fold_difference"] = test["mean"]
        out[f"discovery_{metric}_p"], out[f"discovery_{metric}_p_holm"] = test["p_value"], test["p_holm"]
        out[f"discovery_{metric}_p_a_better"] = bayes["p_a_better"]
        out[f"discovery_{metric}_p_equivalent"] = bayes["p_equivalent"]
        out[f"discovery_{metric}_p_b_better"] = bayes["p_b_better"]
    for group, c in pair["cohorts"].items():
        delong = c["delong"]
        out[f"{group}_auc_difference"], out[f"{group}_delong_p"] = delong["difference"], delong["p_value"]
        out[f"{group}_delong_p_holm"] = delong["p_holm"]
        out[f"{group}_bac_difference"] = c["bac"]["difference"]
        out[f"{group}_bac_difference_ci_low"], out[f"{group}_bac_difference_ci_high"] = c["bac"]["ci95"]
        net = net_benefit_at(c)
        if net:  # at the table's threshold (the decision curves are in the artifacts)
            out[f"{group}_net_benefit_difference"] = net["difference"]
            out[f"{group}_net_benefit_difference_ci_low"] = net["ci95_low"]
            out[f"{group}_net_benefit_difference_ci_high"] = net["ci95_high"]
    return {k: shown(v) for k, v in out.items() if v is not None and v == v}


def log_comparison(
    settings: TrackingSettings,
    document: Mapping[str, Any],
    outputs: Path,
    training_runs: Mapping[str, str | None],
) -> dict[str, str]:
    """Log each pair of ``document`` (:func:`~src.evaluation.model_comparison.compare_experiments`) as a run
    of the ``comparisons`` experiment; ``outputs`` (the written comparison folder) becomes its artifacts;
    ``training_runs`` maps each experiment to its MLflow training run id (tagged).

    Returns ``{"B vs A": run_id}``."""
    import mlflow

    experiment_id = open_experiment(dataclasses.replace(settings, experiment=COMPARISONS))
    client = mlflow.tracking.MlflowClient()
    runs = {}
    for pair in document["pairs"]:
        a, b = pair["a"], pair["b"]
        tags = {
            ROLE_TAG: COMPARISON,
            "mlflow.runName": f"{b} vs {a}",
            "compared.a": a,
            "compared.b": b,
            "compared.a_run_id": str(training_runs.get(a)),
            "compared.b_run_id": str(training_runs.get(b)),
        }
        run = client.create_run(experiment_id, tags=tags)
        with mlflow.start_run(run_id=run.info.run_id):
            mlflow.log_metrics(pair_metrics(pair))
            mlflow.log_params({"rope_bac": document["rope"]["bac"], "rope_auc": document["rope"]["auc"]})
            mlflow.log_artifacts(str(outputs), "comparison")
        runs[f"{b} vs {a}"] = run.info.run_id
    return runs
