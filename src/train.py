"""Train one experiment: repeated nested cross-validation on the discovery cohort.

Needs the discovery cohort's feature table (``python -m src.features.build`` or ``dvc repro``). Runs
``cv.repeats`` x ``cv.outer_folds`` outer folds, each tuned by Optuna over ``cv.inner_folds`` inner folds,
and a ``permutation.n``-permutation test of the whole procedure; locks the ensemble of the fold models.

Writes ``${paths.run}/train/`` (default ``outputs/<experiment>/train/``): ``metrics.json``,
``predictions.csv`` (out-of-fold scores, one row per subject x repeat), ``folds.csv``, ``trials.csv``,
``permutation_null.csv``, ``model/`` (the locked ensemble with its resolved config) and ``tracking.json``
(the MLflow run and registered model version; null when tracking is off). With ``permutation.shard=i/N``
only that shard of the permutation test runs (merged by ``python -m src.merge_permutations``).

Example::

    python -m src.train +experiment=gm_only cv.repeats=10 permutation.n=1000 n_jobs=2
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from src.config.cli import composed, run, start
from src.config.settings import ExperimentConfig
from src.reporting.console import shard_summary, training_summary
from src.tracking.store import check_store
from src.utils.errors import UserInputError, user_errors
from src.utils.io import check_writable, write_json_atomic
from src.utils.logging import progress_wanted, status
from src.utils.parallel import parallel_backend
from src.validation.experiment import (
    experiment_inputs,
    remove_stale_evaluation,
    run_permutation_shard,
    run_training,
    write_training_outputs,
)

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@user_errors
def main(cfg: DictConfig) -> dict[str, Any]:
    """Repeated nested CV of one experiment, its permutation test and the locked model (``python -m
    src.train``)."""
    # everything that can fail without the CV fails before it: config, inputs, class sizes, outputs, store
    config = start(cfg)
    inputs = experiment_inputs(config)
    run = Path(config.paths.run)
    check_writable(run)
    sharded = config.permutation.shard is not None
    settings = config.tracking
    if settings.enabled and not sharded:  # a shard logs nothing
        check_store(settings)
    started, progress = time.time(), progress_wanted()
    with parallel_backend(config.parallel, config.n_jobs) as where:
        log.info("parallel: %s", where)
        if sharded:
            shard = run_permutation_shard(config, inputs, progress)
            print("\n".join(shard_summary(config.name, shard)))
            return shard
        try:
            outcome = run_training(config, inputs, progress)
        except (Exception, KeyboardInterrupt) as error:
            if settings.enabled and not isinstance(error, UserInputError):
                _record_failure(config, composed(cfg), started, error)
            raise
    out_dir = run / "train"
    write_training_outputs(out_dir, outcome, OmegaConf.to_yaml(cfg, resolve=True))
    remove_stale_evaluation(run, outcome.document["provenance"]["model_sha256"])
    # the results are on disk; a tracking failure now costs the MLflow copy, never the results
    params = composed(cfg)  # the configuration as composed: the MLflow run's params
    tracked = _track(config, params, inputs, outcome, out_dir, started) if settings.enabled else None
    resumed = outcome.result.extra.get("resumed_folds", 0), getattr(outcome.permutation, "resumed", 0)
    lines = training_summary(config.name, outcome.document, *resumed)
    lines.append(f"  outputs   {out_dir}")
    if tracked is not None:
        lines.append(f"  MLflow    run {tracked.run_id}, model {tracked.registry_uri or tracked.model_uri}")
        # lazy: the tracking modules load MLflow (0.9 s, benchmarks/import_time.py); not with tracking off
        from src.tracking.server import runs_page

        lines.append(
            f"  UI        `mlflow ui`, then {runs_page('http://127.0.0.1:5000', tracked.experiment_id)}"
        )
    print("\n".join(lines))
    return outcome.document


def _track(
    config: ExperimentConfig, params: dict, inputs: Any, outcome: Any, out_dir: Path, started: float
) -> Any:
    # lazy: the tracking modules load MLflow (0.9 s, benchmarks/import_time.py); not with tracking off
    from src.tracking.training import log_training

    status("logging the run to MLflow (model, scorer, figures, fold runs) ...")
    try:
        tracked = log_training(config, params, inputs, outcome, out_dir, started)
    except Exception as err:  # MLflow, SQLAlchemy and network errors have no common base
        log.warning(
            "MLflow logging failed (%s: %s); the results are complete in %s, not in MLflow. To log them once "
            "the store works, run the same command again: finished folds and permutations are read from %s, "
            "only the final refits are computed",
            type(err).__name__,
            str(err).splitlines()[0] if str(err) else "",
            out_dir,
            out_dir.parent / ".checkpoints",
        )
        return None
    write_json_atomic(out_dir / "tracking.json", tracked.to_dict())
    return tracked


def _record_failure(config: ExperimentConfig, params: dict, started: float, error: BaseException) -> None:
    # lazy: the tracking modules load MLflow (0.9 s, benchmarks/import_time.py); not with tracking off
    from src.tracking.training import record_failed_training

    try:
        run_id = record_failed_training(config, params, started, error)
        # an interruption is said once, by the entry point's one line; the record is for the MLflow view
        what = "interrupted" if isinstance(error, KeyboardInterrupt) else "failed"
        (log.info if what == "interrupted" else log.warning)(
            "training %s: recorded as MLflow run %s", what, run_id
        )
    except Exception as tracking_error:  # the training's own error is the one to show
        log.warning("could not record the failed training in MLflow: %s", tracking_error)


if __name__ == "__main__":
    run(main, __doc__)
