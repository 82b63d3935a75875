"""Evaluate the locked model of one experiment on the external and control cohorts.

Needs a trained experiment (``python -m src.train``) and the evaluation cohorts' feature tables. The model
comes from the MLflow registry (the version training registered, verified against its sha256), or from the
DVC-versioned ``${paths.run}/train/model`` when tracking is off or the store lacks that run; it is never
refitted or re-tuned. Every cohort group (external and control roles pooled, and each cohort alone) gets
BAC/sens/spec/AUC, label-permutation p-values and bootstrap CIs, with and without label-free site alignment;
treatment specificity compares external with control.

Writes ``${paths.run}/evaluate/``: ``metrics.json``, ``paper_table.csv``/``.md`` (beside the paper's numbers),
``predictions.csv``, ``regions.csv`` (weights, corrected CVR with FDR, sign consistency; permutation
importance for non-linear models), ``calibration.csv``, ``decision_curve.csv``, ``curves.png``, ``maps/``,
``subgroups/`` (performance per subgroup, heterogeneity tests, forest plot), ``model_card.md`` and
``tracking.json``. With tracking on, each cohort group becomes an MLflow run under the training run, and the
model gets the registry alias ``evaluation.champion.alias`` when the external p-value passes.

Example::

    python -m src.evaluate +experiment=gm_only evaluation.n_permutations=10000
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from src.config.cli import run, start, trained_settings
from src.config.settings import ExperimentConfig, TrackingSettings
from src.data.cohorts import cohort_specs, discovery_cohort, is_simulated
from src.evaluation.locked import evaluate_locked_model
from src.evaluation.outputs import write_evaluation
from src.evaluation.subgroups import read_participants
from src.features.tables import feature_table_path, read_feature_table
from src.reporting.console import continuous_summary, evaluation_summary
from src.reporting.model_card import model_card
from src.tracking.registry import load_locked_model
from src.tracking.store import check_store, quiet_stderr
from src.utils.errors import user_errors
from src.utils.io import atomic_directory, check_writable, write_json_atomic, write_text_atomic
from src.utils.logging import status

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@user_errors
def main(cfg: DictConfig) -> dict[str, Any]:
    """Score the locked model on the evaluation cohorts (``python -m src.evaluate``); returns the metrics
    document."""
    config = start(cfg)
    train_dir = Path(config.paths.run) / "train"
    settings = config.tracking
    # the registered model is downloaded here, verified, and built from the verified file
    with tempfile.TemporaryDirectory(prefix="ketamine-trd-model-") as local_dir:
        locked = load_locked_model(settings, train_dir, Path(local_dir))
    # the documents (card, registry text, MLflow params) describe the trained model, not this command
    config = trained_settings(config, train_dir)
    check_writable(train_dir.parent)
    if locked.training is not None:
        check_store(settings)  # before the work: a store that cannot be opened is one error
    ev = config.evaluation
    status(
        f"{config.name}: scoring the evaluation cohorts ({ev.n_permutations} permutations, "
        f"{ev.n_bootstrap} bootstrap resamples each) ..."
    )
    provenance = {
        "model_source": locked.source,
        "mlflow_training_run": None if locked.training is None else locked.training["run_id"],
        "train_seed": OmegaConf.load(train_dir / "config.yaml").get("seed"),
    }
    evaluation = evaluate_locked_model(config, locked.model, provenance)
    features_dir = Path(config.paths.features) / config.features.name
    tracking: dict[str, Any] = {
        "model_source": locked.source,
        "training": locked.training,
        "evaluation_runs": {},
        "registry": None,
    }
    out = train_dir.parent / "evaluate"
    card = card_of(config, locked, evaluation)
    # the results reach the disk before tracking: a store that fails now costs the MLflow copy, not them
    with atomic_directory(out) as tmp:
        write_evaluation(tmp, evaluation, features_dir)
        write_text_atomic(tmp / MODEL_CARD_FILE, card)
        write_json_atomic(tmp / "tracking.json", tracking)
    if locked.training is not None:
        tracking.update(_track(settings, config, locked, evaluation, out))
        write_json_atomic(out / "tracking.json", tracking)
    lines = evaluation_summary(
        config.name, evaluation.paper_table, evaluation.specificity, evaluation.aligned
    )
    if evaluation.continuous is not None:
        lines += continuous_summary(evaluation.continuous)
    for key in ("registry", "model_card"):
        if tracking.get(key):
            lines.append(f"  {tracking[key]}")
    lines.append(f"  model card: {out / MODEL_CARD_FILE}")
    print("\n".join(lines))
    return evaluation.document


def _track(
    settings: TrackingSettings, config: ExperimentConfig, locked: Any, evaluation: Any, out: Path
) -> dict:
    """The evaluation runs in MLflow and the champion alias (imported here: evaluating needs no MLflow). A
    failure is one warning: the results are already complete in ``out``."""
    # lazy: the tracking modules load MLflow (0.9 s, benchmarks/import_time.py); not with tracking off
    from src.tracking.evaluation import log_evaluation
    from src.tracking.registry import attach_model_card, evidence_description, promote_if_passing

    status("logging the evaluation to MLflow ...")
    try:
        with quiet_stderr():
            runs = log_evaluation(settings, locked.training, evaluation, locked.model, out)
            champion = config.evaluation.champion
            promotion = promote_if_passing(
                settings,
                locked.training,
                evaluation.results.get("external"),
                champion.alias,
                champion.max_p,
                evidence_description(evaluation.results, evaluation.document["provenance"]),
                simulated=bool(locked.model.info.get("simulated")),
                allow_simulated=champion.allow_simulated,
            )
            card = attach_model_card(settings, locked.training, out / MODEL_CARD_FILE)
    except Exception as err:  # MLflow, SQLAlchemy and network errors have no common base
        error = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:300]}"
        log.warning(
            "MLflow logging failed (%s); the evaluation is complete in %s, not in MLflow. Run the same "
            "command again once the store accepts writes",
            error,
            out,
        )
        return {"tracking_error": error}
    return {"evaluation_runs": runs, "registry": promotion, "model_card": card}


MODEL_CARD_FILE = "model_card.md"


def card_of(config: ExperimentConfig, locked: Any, evaluation: Any) -> str:
    """The model card (:func:`~src.reporting.model_card.model_card`) from this run's own documents."""
    train_dir = Path(config.paths.run) / "train"
    discovery = discovery_cohort(config.data)
    table = read_feature_table(
        feature_table_path(config.paths.features, config.features.name, discovery), discovery
    )
    folder = next(s.folder(config.data.root) for s in cohort_specs(config.data) if s.name == discovery)
    evaluated_sites = {str(v) for name, t in evaluation.scored.items() for v in t["site"].unique()}
    return model_card(
        config=config,
        train=json.loads((train_dir / "metrics.json").read_text()),
        evaluation=evaluation.document,
        training_table=table,
        participants=read_participants(folder),
        subgroups=evaluation.subgroups,
        calibration={name: (y, p) for name, (y, _, p) in evaluation.curves.items()},
        unseen_sites=sorted(evaluated_sites - set(table["site"].astype(str))),
        registry=locked.training,
        simulated=bool(locked.model.info.get("simulated")) or is_simulated(config.data),
        n_fold_models=len(locked.model.models),
    )


if __name__ == "__main__":
    run(main, __doc__)
