"""One experiment's training, as the entry points run it: inputs, nested CV, permutation test, outputs.

Everything here takes the typed settings (:class:`~src.config.settings.ExperimentConfig`) and imports
neither Hydra nor MLflow: ``src.train``, ``src.merge_permutations`` and the
benchmarks call it, and tracking is a layer on top (:mod:`src.tracking.training`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.config.settings import ExperimentConfig, ModelSettings
from src.data.cohorts import discovery_cohort, is_simulated
from src.features.tables import continuous_outcome, feature_table_path, read_feature_table, training_arrays
from src.models.search_space import SearchSpace
from src.utils.errors import UserInputError
from src.utils.io import atomic_directory, file_md5, file_record, write_json_atomic, write_text_atomic
from src.utils.logging import status
from src.utils.provenance import code_fingerprint, git_state, package_versions
from src.validation.checkpoints import checkpoint_key
from src.validation.ensemble import EnsembleModel
from src.validation.estimator import NestedCVClassifier
from src.validation.metrics import REGRESSION_METRICS
from src.validation.nested_cv import (
    CVConfig,
    NestedCVResult,
    check_continuous,
    check_fold_sizes,
    objective_of,
)
from src.validation.permutation import (
    PermutationResult,
    permutation_test,
    permutation_values,
    permuted_estimator,
)
from src.validation.regression import NestedCVRegressor
from src.validation.shards import parse_shard, shard_indices, write_shard
from src.validation.stacking import StackedNestedCV

log = logging.getLogger(__name__)


@dataclass
class TrainingInputs:
    """What an experiment trains on: the discovery table and its arrays, the model and CV settings."""

    model: ModelSettings
    path: Path
    table: pd.DataFrame
    X: pd.DataFrame
    y: np.ndarray
    cv: CVConfig
    space: SearchSpace
    cohort: str
    # a continuous outcome (data.outcome.kind): y is the outcome; None for the binary response
    responder_cut: float | None = None
    continuous: bool = False

    @property
    def covariates(self) -> list[str]:
        """The model's covariate columns."""
        return list(self.model.covariates)

    @property
    def categorical(self) -> list[str]:
        """The covariates coded as categories."""
        return list(self.model.categorical)


@dataclass
class TrainingOutcome:
    """A finished training: the nested-CV result, the permutation test (None when not run inline), the
    metrics document and the locked model."""

    result: NestedCVResult
    permutation: PermutationResult | None
    document: dict[str, Any]
    model: EnsembleModel


def experiment_inputs(config: ExperimentConfig) -> TrainingInputs:
    """Read and check the experiment's training data and settings (nothing is fitted yet)."""
    cohort = discovery_cohort(config.data)
    path = feature_table_path(config.paths.features, config.features.name, cohort)
    table = read_feature_table(path, cohort)
    X, y = training_arrays(table, list(config.model.covariates), path)
    space = SearchSpace.from_settings(config.model)
    outcome = config.data.outcome
    continuous = outcome.kind == "continuous"
    objective = objective_of(space, config.model.objective)  # a model of the wrong kind fails here
    if continuous != (objective != "balanced_accuracy"):
        raise UserInputError(
            f"data.outcome.kind={outcome.kind} needs a "
            + (
                "regression model (e.g. model=svr_linear)"
                if continuous
                else "classifier (e.g. model=svc_linear)"
            )
            + f", got model={config.model.name}"
        )
    if continuous:
        y = continuous_outcome(table, path, outcome.target)
        check_continuous(y, config.cv, str(path))
        if config.model.stack is not None:
            raise UserInputError(
                "model.stack: stacking is for a binary outcome only (not data.outcome.kind=continuous)"
            )
    else:
        check_fold_sizes(y, config.cv, str(path))
    return TrainingInputs(
        config.model,
        path,
        table,
        X,
        y,
        config.cv,
        space,
        cohort,
        outcome.responder_cut if continuous else None,
        continuous,
    )


def checkpoint_path(config: ExperimentConfig, kind: str, inputs: TrainingInputs) -> Path:
    """Where finished outer folds (``kind="folds"``) or permutations (``"permutations"``) are kept, so an
    interrupted run resumes: under the run's folder, named by a hash of the data, labels, CV and model
    settings, seed and code version (another dataset, setting or code edit never reuses it; a larger
    ``permutation.n`` extends the permutations)."""
    model = dataclasses.asdict(inputs.model)  # the key of today's files: the model section as a mapping
    parts: list[Any] = [inputs.X, inputs.y, inputs.cv.__dict__, model, config.seed]
    if kind == "permutations":
        parts.append(config.permutation.repeats)
    key = checkpoint_key(*parts, code_fingerprint())
    return Path(config.paths.run) / ".checkpoints" / f"{kind}-{key}.jsonl"


def permutation_key(config: ExperimentConfig, inputs: TrainingInputs) -> str:
    """The key of everything a permutation's value depends on: recorded by training and by every shard,
    compared by the merge (:func:`~src.validation.shards.merge_shards`)."""
    return checkpoint_path(config, "permutations", inputs).stem.removeprefix("permutations-")


def run_permutation_shard(config: ExperimentConfig, inputs: TrainingInputs, progress: bool) -> dict[str, Any]:
    """``permutation.shard=i/N``: only permutations i, i+N, ... of ``permutation.n`` (no nested CV on the
    true labels, no model), written to ``<run>/permutation/shard-i-of-N.json`` with the key that
    ``python -m src.merge_permutations`` checks. Resumes from its own checkpoint like a full run."""
    shard, shards = parse_shard(config.permutation.shard)
    n = config.permutation.n
    checkpoint = checkpoint_path(config, "permutations", inputs)
    permuted = permuted_estimator(training_estimator(config, inputs), config.permutation.repeats)
    values, resumed = permutation_values(
        permuted,
        inputs.X,
        inputs.y,
        shard_indices(n, shard, shards),
        progress=progress,
        checkpoint=checkpoint.with_name(f"{checkpoint.stem}-shard-{shard}-of-{shards}.jsonl"),
        status_lines=True,
    )
    folder = Path(config.paths.run) / "permutation"
    path = write_shard(folder, permutation_key(config, inputs), shard, shards, n, permuted.cv.repeats, values)
    return {"shard": [shard, shards], "n": n, "values": values, "resumed": resumed, "path": str(path)}


def training_estimator(
    config: ExperimentConfig, inputs: TrainingInputs, progress: bool = False
) -> NestedCVClassifier:
    """The experiment's method, unfitted: its search space, CV scheme, covariates, seed and workers; the
    stacking sibling when the model stacks modalities (``model.stack``)."""
    settings = {
        "search_space": inputs.space,
        "cv": inputs.cv,
        "covariates": inputs.covariates,
        "categorical": inputs.categorical,
        "random_state": config.seed,
        "n_jobs": config.n_jobs,
        "progress": progress,
    }
    if inputs.continuous:
        return NestedCVRegressor(
            **settings,
            objective=objective_of(inputs.space, config.model.objective),
            responder_cut=inputs.responder_cut,
        )
    stack = config.model.stack
    if stack is not None:
        return StackedNestedCV(
            **settings, clinical_covariates=tuple(stack.clinical_covariates), meta_cs=tuple(stack.meta_cs)
        )
    return NestedCVClassifier(**settings)


def run_training(config: ExperimentConfig, inputs: TrainingInputs, progress: bool) -> TrainingOutcome:
    """The repeated nested CV, the inline permutation test (``permutation.n > 0`` and ``inline``), the
    metrics document and the locked ensemble."""
    cv = inputs.cv
    status(
        f"{config.name}: nested CV, {cv.repeats} x {cv.outer_folds} outer folds x {cv.inner_folds} inner "
        f"folds, {cv.n_trials} trials, {len(inputs.y)} subjects x {inputs.X.shape[1]} columns ..."
    )
    estimator = training_estimator(config, inputs, progress=progress)
    estimator.set_params(checkpoint=checkpoint_path(config, "folds", inputs))
    estimator.fit(
        inputs.X,
        inputs.y,
        ids=inputs.table["participant_id"].tolist(),
        info={
            "experiment": config.name,
            "seed": config.seed,
            "data": str(config.data.name),
            "simulated": is_simulated(config.data),
            "feature_table_md5": file_md5(inputs.path),
        },
    )
    result = estimator.result_
    settings = config.permutation
    perm = None
    if settings.n > 0 and settings.inline:
        status(f"{config.name}: permutation test, {settings.n} permutations of the whole CV ...")
        perm = permutation_test(
            estimator,
            inputs.X,
            inputs.y,
            settings.n,
            repeats=settings.repeats,
            progress=progress,
            checkpoint=checkpoint_path(config, "permutations", inputs),
            status_lines=True,  # without a terminal's bar: the rate and the estimated finish
        )
    document = metrics_document(config, inputs, result, perm, file_md5(inputs.path))
    model = estimator.ensemble_
    return TrainingOutcome(result, perm, document, model)


def convergence(trials: pd.DataFrame) -> dict[str, float]:
    """Trial number at which each study first reached its best inner score: median and 90th percentile."""
    reached = trials.groupby(["repeat", "fold"]).apply(
        lambda t: int(t.loc[t["value"] == t["value"].max(), "number"].min()), include_groups=False
    )
    return {
        "best_reached_at_median": float(reached.median()),
        "best_reached_at_p90": float(reached.quantile(0.9)),
    }


def metrics_document(
    config: ExperimentConfig,
    inputs: TrainingInputs,
    result: NestedCVResult,
    perm: PermutationResult | None,
    table_md5: str,
) -> dict[str, Any]:
    """``train/metrics.json``: the experiment, the CV scheme, ensemble and per-repeat metrics, the
    permutation test and the provenance (git, feature table md5, packages, permutation key)."""
    summary = result.summary()
    outcome = config.data.outcome
    return {
        "experiment": config.name,
        "cohort": inputs.cohort,
        "n": len(result.y),
        "responders": int(inputs.table["response"].sum()),
        "outcome": {
            "kind": outcome.kind,
            **(
                {
                    "target": outcome.target,
                    "objective": result.objective,
                    "responder_cut": inputs.responder_cut,
                    "mean": float(np.mean(result.y)),
                    "sd": float(np.std(result.y, ddof=1)),
                }
                if inputs.continuous
                else {}
            ),
        },
        "n_features": len(result.feature_columns),
        "cv": result.cv.__dict__,
        "seed": config.seed,
        "ensemble": summary["ensemble"],
        "repeats": summary["repeats"],
        "permutation": perm.to_dict() if perm is not None else None,
        "trials": convergence(result.trials()),
        "provenance": {
            "git": git_state(),
            "feature_table_md5": table_md5,
            # which data config trained it, and whether its cohorts were simulated (the simulator's mark or
            # the simulated data config), whatever that config is called
            "data": str(config.data.name),
            "simulated": is_simulated(config.data),
            "packages": package_versions(),
            "permutation_key": permutation_key(config, inputs),
        },
    }


SUMMARY_FILE = "summary.json"  # what dvc.yaml declares as metrics: numbers and the data's name, a screen wide


def training_summary_metrics(document: Mapping[str, Any]) -> dict[str, float | str]:
    """The training's DVC metrics: the data config it ran on (``dvc metrics show`` says which data each row
    comes from), the out-of-fold ensemble, the spread of the repeats' BAC and the permutation p (the whole
    document, provenance included, stays in ``metrics.json``)."""
    ensemble = document["ensemble"]
    keys = ("bac", "auc", "sensitivity", "specificity")
    if (document.get("outcome") or {}).get("kind") == "continuous":
        keys = tuple(k for k in (*REGRESSION_METRICS, *keys) if k in ensemble)
    out: dict[str, float | str] = {"data": str((document.get("provenance") or {}).get("data"))}
    out.update({f"discovery_{k}": round(float(ensemble[k]), 4) for k in keys})
    main = "r2" if "r2" in ensemble else "bac"
    out[f"discovery_{main}_repeat_sd"] = round(float(document["repeats"][main]["sd"]), 4)
    permutation = document.get("permutation") or {}
    if permutation.get("p_value") is not None:
        out["permutation_p"] = round(float(permutation["p_value"]), 4)
    return out


# the training's tables that compare, report and plan read (their sha256 in metrics.json's provenance);
# not config.yaml, whose resolved paths differ between two runs of the same config in other folders (the
# metrics document stays byte-identical for them)
TRAINING_FILES = ("predictions.csv", "folds.csv")


def write_training_outputs(out_dir: Path, outcome: TrainingOutcome, config_yaml: str) -> None:
    """``${paths.run}/train`` in one atomic step: the model (its sha256 into the metrics document), metrics,
    the resolved config, out-of-fold predictions, folds, trials, their timings (``timings.csv``: the only
    file that differs between two runs of the same config), the permutation null and a null
    ``tracking.json`` (always written: a DVC output; filled in once the run is in MLflow)."""
    document, result, perm = outcome.document, outcome.result, outcome.permutation
    with atomic_directory(out_dir) as out:
        # the model's sha256 is recorded with the metrics (and in MLflow) and verified before every load
        document["provenance"]["model_sha256"] = outcome.model.save(out / "model", config_yaml)
        write_text_atomic(out / "config.yaml", config_yaml)
        result.oof.to_csv(out / "predictions.csv", index=False)
        # timings apart: folds.csv and trials.csv are byte-identical for the same config (resumed or not)
        folds, trials = result.fold_table(), result.trials()
        folds.drop(columns="seconds").to_csv(out / "folds.csv", index=False)
        trials.drop(columns="duration").to_csv(out / "trials.csv", index=False)
        # what later stages read of this training, hashed: a reader refuses an edited or swapped table
        document["provenance"]["files"] = file_record(out, list(TRAINING_FILES))
        write_json_atomic(out / "metrics.json", document)
        write_json_atomic(out / SUMMARY_FILE, training_summary_metrics(document))
        timings = trials[["repeat", "fold", "number", "duration"]].rename(
            columns={"duration": "trial_seconds"}
        )
        timings = timings.merge(folds[["repeat", "fold", "seconds"]], on=["repeat", "fold"], how="left")
        timings.rename(columns={"seconds": "fold_seconds"}).to_csv(out / "timings.csv", index=False)
        if perm is not None:
            pd.DataFrame({"permutation": np.arange(len(perm.null)), perm.statistic: perm.null}).to_csv(
                out / "permutation_null.csv", index=False
            )
        write_json_atomic(out / "tracking.json", None)


def remove_stale_evaluation(run: Path, model_sha256: str) -> None:
    """A retrained model makes the experiment's earlier evaluation stale: it is removed (the report would
    refuse to combine it with the new training anyway). An evaluation of this very model is kept."""
    metrics = run / "evaluate" / "metrics.json"
    if not (run / "evaluate").exists():
        return
    try:
        evaluated = json.loads(metrics.read_text())["provenance"]["model_sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        evaluated = None
    if evaluated != model_sha256:
        shutil.rmtree(run / "evaluate")
        log.warning(
            "removed %s: it evaluated an earlier model; run `python -m src.evaluate` again", run / "evaluate"
        )
