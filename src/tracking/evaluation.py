"""Evaluation runs in MLflow: the locked model loaded from the registry, one run per evaluation cohort
(nested under the training run and tagged with the model version), and the headline numbers copied onto the
training run so the UI's compare view shows discovery, external and control side by side."""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.evaluation.locked import Evaluation
from src.evaluation.results import CohortResult
from src.evaluation.subgroups import SUBGROUPS_DIR, subgroup_metrics
from src.tracking.store import (
    TrackingSettings,
    connect,
    killed_on_interrupt,
    quiet_stderr,
    shown,
)
from src.tracking.training import (
    EVALUATION,
    ROLE_TAG,
    download_model,
    log_dataset_input,
)
from src.utils.provenance import training_model_uri
from src.validation.ensemble import EnsembleModel, ModelIntegrityError, read_model_file

log = logging.getLogger(__name__)

TRACKING_FILE = "tracking.json"


def read_training_run(train_dir: Path) -> dict[str, Any] | None:
    """The ``tracking.json`` written by a tracked ``src.train`` run (None when it was not tracked)."""
    path = train_dir / TRACKING_FILE
    return json.loads(path.read_text()) if path.is_file() else None  # the file holds null when untracked


def load_registered_model(
    settings: TrackingSettings, training: Mapping[str, Any], sha256: str | None, local_dir: Path
) -> tuple[EnsembleModel, Path]:
    """The locked ensemble from the model registry (or the run's logged model when not registered),
    downloaded to ``local_dir`` and verified there: its ``model.skops`` must have the sha256 training
    recorded, and hold only trusted types. The ensemble is built from that verified file by this project
    (skops with the trusted-type list), never by MLflow's loader: the loader follows the version's
    ``MLmodel`` file, which is not covered by the hash and could name a pickle (code run on load).

    Raises a clear error when the store does not hold the training run (e.g. ``mlruns/`` was deleted or
    ``tracking.uri`` points elsewhere): the caller decides whether to fall back to the DVC-versioned copy.
    A swapped or corrupted registry artifact, or a missing recorded hash, raises
    :class:`~src.validation.ensemble.ModelIntegrityError`.
    """
    import mlflow
    from mlflow.exceptions import MlflowException

    uri = training_model_uri(training)
    if not sha256:
        raise ModelIntegrityError(
            f"model {uri}: its training run recorded no sha256 (tracking.json), so the registry copy "
            "cannot be verified; refusing to load it"
        )
    connect(settings)
    try:
        mlflow.tracking.MlflowClient().get_run(training["run_id"])
        folder, model_file = download_model(uri, local_dir)
    except MlflowException as error:
        raise LookupError(
            f"training run {training['run_id']} / model {uri} not found in {settings.tracking_uri}: "
            f"{error.message.splitlines()[0]}"
        ) from error
    return read_model_file(model_file, sha256), folder  # hash and types checked before anything is built


class _VerifiedModel:
    """``mlflow.models.evaluate``'s view of the verified ensemble: what its scikit-learn flavour wrapper
    offers (predict, predict_proba, the raw model), built in memory from the verified file instead of by
    ``mlflow.pyfunc.load_model``, which would follow the unverified ``MLmodel`` file."""

    def __init__(self, model: EnsembleModel) -> None:
        self.model = model

    def get_raw_model(self) -> EnsembleModel:
        return self.model

    def predict(self, data: pd.DataFrame, params: Mapping[str, Any] | None = None) -> np.ndarray:
        return self.model.predict(data)

    def predict_proba(self, data: pd.DataFrame) -> np.ndarray:
        return self.model.predict_proba(data)


def verified_pyfunc(model: EnsembleModel) -> Any:
    """A pyfunc model around the verified ensemble (MLflow's evaluators treat it as a scikit-learn model:
    ROC AUC, log loss and calibration from ``predict_proba``)."""
    import mlflow
    from mlflow.models import Model

    meta = Model(flavors={"python_function": {"loader_module": "mlflow.sklearn"}})
    return mlflow.pyfunc.PyFuncModel(model_meta=meta, model_impl=_VerifiedModel(model))


def cohort_metrics(result: CohortResult, aligned: CohortResult | None) -> dict[str, float]:
    """One evaluation cohort's numbers as flat MLflow metrics (same keys for every cohort/experiment)."""
    out: dict[str, Any] = result.metrics()
    out.update({"p_bac": result.p_bac, "p_auc": result.p_auc})
    for metric, (low, high) in result.ci95.items():
        out[f"{metric}_ci_low"], out[f"{metric}_ci_high"] = low, high
    if aligned:
        out.update({"site_aligned_bac": aligned.bac, "site_aligned_auc": aligned.auc})
        out["site_aligned_p_bac"] = aligned.p_bac
    out["n"], out["responders"] = result.n, result.responders
    return {k: shown(v) for k, v in out.items() if v is not None and np.isfinite(v)}


CONTINUOUS_KEYS = ("r2", "pearson_r", "mae", "p_pearson_r", "calibration_slope")


def continuous_metrics(result: Mapping[str, Any]) -> dict[str, float]:
    """A regressor's continuous results of one cohort as flat MLflow metrics (``r2``, ``pearson_r``,
    ``spearman_r``, ``mae``, ``rmse``, CIs, p-values, calibration slope and intercept)."""
    out: dict[str, Any] = {k: result.get(k) for k in ("r2", "pearson_r", "spearman_r", "mae", "rmse")}
    out.update({k: result.get(k) for k in ("p_pearson_r", "p_mae")})
    for metric, (low, high) in (result.get("ci95") or {}).items():
        out[f"{metric}_ci_low"], out[f"{metric}_ci_high"] = low, high
    out["calibration_slope"] = result["calibration"]["slope"]
    out["calibration_intercept"] = result["calibration"]["intercept"]
    return {k: shown(v) for k, v in out.items() if v is not None and np.isfinite(v)}


def log_evaluation(
    settings: TrackingSettings,
    training: Mapping[str, Any],
    evaluation: Evaluation,
    model: EnsembleModel,
    outputs: Path,
) -> dict[str, str]:
    """Log every evaluation cohort as its own run and summarise them on the training run.

    ``evaluation`` (:func:`~src.evaluation.locked.evaluate_locked_model`) gives each cohort group's result,
    site-aligned result and scored table and the treatment-specificity tests; ``outputs`` is the written
    ``evaluate/`` folder (its files become artifacts); ``training`` the MLflow training record.

    Each cohort run holds MLflow's classifier evaluation of the registered model (``mlflow.models.evaluate``:
    accuracy, precision, recall, F1, ROC AUC, log loss, ROC/PR/calibration/confusion plots, the dataset as a
    run input) plus this project's metrics (BAC, sensitivity, specificity, PPV, NPV, permutation p, bootstrap
    CIs, site-aligned results). ``model`` is the verified registered ensemble
    (:func:`load_registered_model`). Returns ``{cohort: run_id}``.
    """
    import mlflow
    from mlflow.entities import Metric

    results, aligned, tables = evaluation.results, evaluation.aligned, evaluation.scored
    input_columns, specificity = model.input_columns, evaluation.specificity
    connect(settings)
    experiment_id = training[
        "experiment_id"
    ]  # beside the training run, whatever tracking.experiment says now
    client = mlflow.tracking.MlflowClient()
    model_uri = training_model_uri(training)
    pyfunc = verified_pyfunc(model)  # never mlflow.pyfunc.load_model: it follows the unverified MLmodel
    group = time.strftime("%Y%m%dT%H%M%S")
    tags = {
        ROLE_TAG: EVALUATION,
        "mlflow.parentRunId": training["run_id"],
        "training_run_id": training["run_id"],
        "model_uri": model_uri,
        "registered_model": str(training.get("registered_model")),
        "model_version": str(training.get("model_version")),
        "evaluation_id": group,
        "data_simulated": str(bool(model.info.get("simulated"))).lower(),
    }
    run_ids: dict[str, str] = {}
    numbers = {cohort: cohort_metrics(results[cohort], aligned.get(cohort)) for cohort in tables}
    continuous = evaluation.continuous
    if continuous is not None:  # a regressor: the continuous outcome's numbers beside the responder ones
        for cohort in tables:
            numbers[cohort].update(continuous_metrics(continuous["results"][cohort]))
    by_group = {}
    if evaluation.subgroups is not None:  # per level BAC/AUC and each grouping's heterogeneity p
        by_group = subgroup_metrics(evaluation.subgroups["cells"], evaluation.subgroups["heterogeneity"])
        for cohort in tables:
            numbers[cohort].update(by_group.get(cohort, {}))
    for cohort, table in tables.items():
        with (
            mlflow.start_run(
                experiment_id=experiment_id, run_name=f"evaluate {cohort}", tags={**tags, "cohort": cohort}
            ) as run,
            killed_on_interrupt(),
        ):
            if len(input_columns) > settings.wide_table_columns:
                log_dataset_input(table, input_columns, cohort, "evaluation", wide=True)
                mlflow.set_tag("mlflow_evaluate", f"not run: {len(input_columns)} input columns (wide table)")
            else:
                # a regressor: MLflow's regressor evaluation of the predicted outcome
                target = "outcome" if continuous is not None else "response"
                data = table[[*input_columns, target]].reset_index(drop=True)
                config = {"log_model_explainability": False}
                if continuous is None:
                    config.update({"pos_label": 1, "label_list": [0, 1]})
                with warnings.catch_warnings(), quiet_stderr():
                    warnings.simplefilter("ignore")
                    mlflow.models.evaluate(
                        pyfunc,
                        data,
                        targets=target,
                        model_type="classifier" if continuous is None else "regressor",
                        evaluator_config=config,
                    )
            mlflow.log_metrics(numbers[cohort])
            mlflow.log_table(
                table[["participant_id", "site", "treatment", "response", "decision", "probability"]],
                "predictions.json",
            )
            run_ids[cohort] = run.info.run_id

    now = int(time.time() * 1000)
    keys = ("bac", "auc", "sensitivity", "specificity", "p_bac", "p_auc", "site_aligned_bac")
    keys += CONTINUOUS_KEYS if continuous is not None else ()
    summary = {f"{cohort}_{k}": v for cohort in tables for k, v in numbers[cohort].items() if k in keys}
    if specificity:  # tested only with an external and a control cohort
        summary["specificity_auc_difference"] = specificity["auc_difference"]["difference"]
        summary["specificity_p"] = specificity["auc_difference"]["p_value"]
        summary["specificity_interaction_p"] = specificity["interaction"]["p_value"]
    if continuous is not None and continuous.get("interaction"):
        summary["specificity_continuous_interaction_p"] = continuous["interaction"]["p_value"]
    summary.update({f"discovery_{k}": v for k, v in by_group.get("discovery", {}).items()})
    client.log_batch(
        training["run_id"],
        metrics=[Metric(k, shown(v), now, 0) for k, v in summary.items() if np.isfinite(v)],
    )
    client.set_tag(training["run_id"], "last_evaluation_id", group)
    for path in sorted(outputs.iterdir()):
        if path.is_file() and path.name != TRACKING_FILE:  # written after logging, with the run ids
            client.log_artifact(training["run_id"], str(path), "evaluate")
    if (outputs / SUBGROUPS_DIR).is_dir():
        client.log_artifacts(training["run_id"], str(outputs / SUBGROUPS_DIR), f"evaluate/{SUBGROUPS_DIR}")
    return run_ids
