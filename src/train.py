"""``python -m src.train +experiment=gm_only``: repeated nested CV of one experiment on the discovery cohort.

Writes to ``${paths.run}/train`` (default ``outputs/<experiment>/train/``): ``metrics.json``,
``predictions.csv`` (out-of-fold scores, one row per subject x repeat), ``folds.csv``, ``trials.csv``,
``permutation_null.csv``, ``model/`` (the locked ensemble with its resolved config) and ``tracking.json`` (the
MLflow run and registered model version the evaluation loads; null when tracking is off).
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from src.data.cohorts import discovery_cohort
from src.data.contract import TABLE_META_COLUMNS
from src.interpretation.regions import read_feature_regions, weight_summary
from src.models.linear import AffineDecision
from src.models.search_space import SearchSpace
from src.tracking.store import TrackingSettings, check_store
from src.utils.checks import check_config, check_writable
from src.utils.errors import MissingInputError, UserInputError, user_errors
from src.utils.io import atomic_directory, file_md5, write_json_atomic, write_text_atomic
from src.utils.logging import configure_logging
from src.utils.parallel import ParallelSettings, parallel_backend
from src.utils.provenance import code_fingerprint, dvc_output_md5, git_state, package_versions
from src.validation.checkpoints import checkpoint_key
from src.validation.ensemble import EnsembleModel
from src.validation.nested_cv import CVConfig, NestedCVResult, check_fold_sizes, run_nested_cv
from src.validation.permutation import PermutationResult, permutation_cv, permutation_test, permutation_values
from src.validation.shards import parse_shard, shard_indices, write_shard

log = logging.getLogger(__name__)


def discovery(cfg: DictConfig) -> str:
    """The training cohort: the one whose role is ``discovery`` in the data config."""
    return discovery_cohort(OmegaConf.to_container(cfg.data, resolve=True))


def feature_table_path(cfg: DictConfig, cohort: str) -> Path:
    return Path(cfg.paths.features) / cfg.features.name / f"{cohort}.parquet"


def load_training_data(path: Path, covariates: list[str]) -> tuple[pd.DataFrame, pd.DataFrame, np.ndarray]:
    """(table, X = covariates + feature columns, y) of a feature table, with a clear error if it is absent."""
    if not path.is_file():
        raise MissingInputError(
            f"feature table {path} not found: build it with `dvc repro` or "
            f"`python -m src.features.build features={path.parent.name}`"
        )
    table = pd.read_parquet(path)
    features = [c for c in table.columns if c not in TABLE_META_COLUMNS]
    missing = [c for c in [*covariates, "participant_id", "response"] if c not in table.columns]
    if missing:
        raise UserInputError(f"{path}: column(s) {missing} missing")
    labels = table["response"]
    wrong = ~labels.isin([0, 1])
    if wrong.any():
        raise UserInputError(
            f"{path}: response must be 0 or 1; subject(s) {table.loc[wrong, 'participant_id'].tolist()[:5]} "
            f"have {labels[wrong].unique().tolist()[:5]}"
        )
    holes = table[[*covariates, *features]].isna()
    if holes.to_numpy().any():
        row, column = np.argwhere(holes.to_numpy())[0]
        raise UserInputError(
            f"{path}: {int(holes.to_numpy().sum())} missing value(s), e.g. subject "
            f"{table['participant_id'].iloc[row]}, column {holes.columns[column]!r}; rebuild the table or "
            "remove the subject"
        )
    return table, table[[*covariates, *features]], labels.to_numpy(dtype=int)


def experiment_inputs(
    cfg: DictConfig,
) -> tuple[dict[str, Any], Path, pd.DataFrame, pd.DataFrame, np.ndarray, CVConfig]:
    """What the experiment trains on: (model config, discovery table path, table, X, y, CV scheme)."""
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    path = feature_table_path(cfg, discovery(cfg))
    table, X, y = load_training_data(path, list(model_cfg["covariates"]))
    return model_cfg, path, table, X, y, CVConfig.from_config(OmegaConf.to_container(cfg.cv, resolve=True))


def checkpoint_path(
    cfg: DictConfig, kind: str, X: pd.DataFrame, y: np.ndarray, cv: CVConfig, model_cfg: dict[str, Any]
) -> Path:
    """Where finished outer folds (``kind="folds"``) or permutations (``"permutations"``) are kept, so an
    interrupted run resumes: under the run's folder, named by a hash of the data, labels, CV and model
    settings, seed and code version (another dataset, setting or code edit never reuses it; a larger
    ``permutation.n`` extends the permutations)."""
    parts: list[Any] = [X, y, cv.__dict__, model_cfg, int(cfg.seed)]
    if kind == "permutations":
        parts.append(cfg.permutation.repeats)
    key = checkpoint_key(*parts, code_fingerprint())
    return Path(cfg.paths.run) / ".checkpoints" / f"{kind}-{key}.jsonl"


def permutation_key(
    cfg: DictConfig, X: pd.DataFrame, y: np.ndarray, cv: CVConfig, model_cfg: dict[str, Any]
) -> str:
    """The key of everything a permutation's value depends on: recorded by training and by every shard,
    compared by the merge (:func:`~src.validation.shards.merge_shards`)."""
    return checkpoint_path(cfg, "permutations", X, y, cv, model_cfg).stem.removeprefix("permutations-")


def permutation_shard(
    cfg: DictConfig,
    X: pd.DataFrame,
    y: np.ndarray,
    space: SearchSpace,
    cv: CVConfig,
    model_cfg: dict[str, Any],
    progress: bool,
) -> dict[str, Any]:
    """``permutation.shard=i/N``: only permutations i, i+N, ... of ``permutation.n`` (no nested CV on the
    true labels, no model), written to ``<run>/permutation/shard-i-of-N.json`` with the key that
    ``python -m src.merge_permutations`` checks. Resumes from its own checkpoint like a full run."""
    shard, shards = parse_shard(cfg.permutation.shard)
    n = int(cfg.permutation.n)
    checkpoint = checkpoint_path(cfg, "permutations", X, y, cv, model_cfg)
    key = permutation_key(cfg, X, y, cv, model_cfg)
    cv_perm = permutation_cv(cv, cfg.permutation.repeats)
    values, resumed = permutation_values(
        X,
        y,
        space,
        cv_perm,
        int(cfg.seed),
        shard_indices(n, shard, shards),
        covariates=list(model_cfg["covariates"]),
        categorical=list(model_cfg["categorical"]),
        n_jobs=int(cfg.n_jobs),
        progress=progress,
        checkpoint=checkpoint.with_name(f"{checkpoint.stem}-shard-{shard}-of-{shards}.jsonl"),
    )
    path = write_shard(Path(cfg.paths.run) / "permutation", key, shard, shards, n, cv_perm.repeats, values)
    print(
        f"{cfg.name}: permutation shard {shard}/{shards}: {len(values)} of {n} permutations"
        + (f" ({resumed} resumed from a checkpoint)" if resumed else "")
    )
    print(f"  written   {path}")
    return {"shard": [shard, shards], "values": values, "path": str(path)}


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
    cfg: DictConfig, result: NestedCVResult, perm: PermutationResult | None, table_md5: str
) -> dict[str, Any]:
    summary = result.summary()
    return {
        "experiment": cfg.name,
        "cohort": discovery(cfg),
        "n": len(result.y),
        "responders": int(result.y.sum()),
        "n_features": len(result.feature_columns),
        "cv": result.cv.__dict__,
        "seed": int(cfg.seed),
        "ensemble": summary["ensemble"],
        "repeats": summary["repeats"],
        "permutation": perm.to_dict() if perm is not None else None,
        "trials": convergence(result.trials()),
        "provenance": {"git": git_state(), "feature_table_md5": table_md5, "packages": package_versions()},
    }


def track(
    cfg: DictConfig,
    settings: TrackingSettings,
    document: dict[str, Any],
    result: NestedCVResult,
    model: EnsembleModel,
    space: SearchSpace,
    outputs: Path,
    table: pd.DataFrame,
    table_path: Path,
    perm: PermutationResult | None,
) -> Any:
    """Hand the results to the MLflow layer (imported here: the engine runs without MLflow)."""
    from src.tracking.training import log_training

    regions = None
    if all(isinstance(m, AffineDecision) for m in model.models):
        atlas = read_feature_regions(table_path.parent)
        regions = weight_summary(model.models, model.feature_columns, table, atlas)
    return log_training(
        settings,
        config=OmegaConf.to_container(cfg, resolve=True),
        document=document,
        result=result,
        model=model,
        space=space,
        outputs=outputs,
        example=table[model.input_columns].head(5),
        feature_tables={discovery(cfg): document["provenance"]["feature_table_md5"]},
        dvc_md5=dvc_output_md5(table_path.parent),
        regions=regions,
        permutation_null=None if perm is None else perm.null,
    )


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@user_errors
def main(cfg: DictConfig) -> dict[str, Any]:
    configure_logging(bool(cfg.verbose))
    # everything that can fail without the CV fails before it: config, inputs, class sizes, outputs, store
    check_config(cfg)
    model_cfg, path, table, X, y, cv = experiment_inputs(cfg)
    covariates, categorical = list(model_cfg["covariates"]), list(model_cfg["categorical"])
    space = SearchSpace.from_config(model_cfg)
    check_fold_sizes(y, cv, str(path))
    out_dir = Path(cfg.paths.run) / "train"
    check_writable(out_dir.parent)
    settings = TrackingSettings.from_config(OmegaConf.to_container(cfg.tracking, resolve=True))
    if settings.enabled and cfg.permutation.get("shard") is None:  # a shard logs nothing
        check_store(settings)
    progress = sys.stderr.isatty()
    with parallel_backend(ParallelSettings.from_config(cfg.get("parallel")), int(cfg.n_jobs)) as where:
        log.info("parallel: %s", where)
        if cfg.permutation.get("shard") is not None:
            return permutation_shard(cfg, X, y, space, cv, model_cfg, progress)
        result = run_nested_cv(
            X,
            y,
            space,
            cv,
            int(cfg.seed),
            covariates=covariates,
            categorical=categorical,
            ids=table["participant_id"].tolist(),
            n_jobs=int(cfg.n_jobs),
            progress=progress,
            checkpoint=checkpoint_path(cfg, "folds", X, y, cv, model_cfg),
        )
        perm = None
        if int(cfg.permutation.n) > 0 and cfg.permutation.get("inline", True):
            perm = permutation_test(
                X,
                y,
                space,
                cv,
                int(cfg.seed),
                int(cfg.permutation.n),
                observed_decision=result.decision_matrix(),
                covariates=covariates,
                categorical=categorical,
                repeats=cfg.permutation.repeats,
                n_jobs=int(cfg.n_jobs),
                progress=progress,
                checkpoint=checkpoint_path(cfg, "permutations", X, y, cv, model_cfg),
            )
    document = metrics_document(cfg, result, perm, file_md5(path))
    document["provenance"]["permutation_key"] = permutation_key(cfg, X, y, cv, model_cfg)
    config_yaml = OmegaConf.to_yaml(cfg, resolve=True)
    model = EnsembleModel.from_result(
        result,
        info={
            "experiment": cfg.name,
            "seed": int(cfg.seed),
            "feature_table_md5": document["provenance"]["feature_table_md5"],
        },
        training=X,  # the covariate model that explains a new patient's prediction (src.predict)
    )
    with atomic_directory(out_dir) as out:
        # the model's sha256 is recorded with the metrics (and in MLflow) and verified before every load
        document["provenance"]["model_sha256"] = model.save(out / "model", config_yaml)
        write_json_atomic(out / "metrics.json", document)
        write_text_atomic(out / "config.yaml", config_yaml)
        result.oof.to_csv(out / "predictions.csv", index=False)
        result.fold_table().to_csv(out / "folds.csv", index=False)
        result.trials().to_csv(out / "trials.csv", index=False)
        if perm is not None:
            pd.DataFrame({"permutation": np.arange(len(perm.null)), "mean_bac": perm.null}).to_csv(
                out / "permutation_null.csv", index=False
            )
        # always written (a DVC output): null until the run is in MLflow
        write_json_atomic(out / "tracking.json", None)
    remove_stale_evaluation(Path(cfg.paths.run), document["provenance"]["model_sha256"])
    # the results are on disk; a tracking failure now costs the MLflow copy, never the results
    tracked = None
    if settings.enabled:
        try:
            tracked = track(cfg, settings, document, result, model, space, out_dir, table, path, perm)
        except Exception as err:  # MLflow, SQLAlchemy and network errors have no common base
            log.warning(
                "MLflow logging failed (%s: %s); the results are complete in %s, not in MLflow. To log them "
                "once the store works, run the same command again: finished folds and permutations are "
                "read from %s, only the final refits are computed",
                type(err).__name__,
                str(err).splitlines()[0] if str(err) else "",
                out_dir,
                Path(cfg.paths.run) / ".checkpoints",
            )
        else:
            write_json_atomic(out_dir / "tracking.json", tracked.to_dict())
    ens, rep = document["ensemble"], document["repeats"]
    resumed_folds = result.extra.get("resumed_folds", 0)
    print(
        f"{cfg.name}: n={document['n']} ({document['responders']} responders), "
        f"{cv.repeats}x{cv.outer_folds} outer x {cv.inner_folds} inner folds, {cv.n_trials} trials"
        + (f", {resumed_folds} fold(s) resumed from a checkpoint" if resumed_folds else "")
    )
    print(
        f"  ensemble  BAC {ens['bac']:.3f}  sens {ens['sensitivity']:.3f}  spec {ens['specificity']:.3f}  "
        f"AUC {ens['auc']:.3f}"
    )
    print(
        f"  repeats   BAC {rep['bac']['mean']:.3f} ± {rep['bac']['sd']:.3f} "
        f"[{rep['bac']['q025']:.3f}, {rep['bac']['q975']:.3f}]  AUC {rep['auc']['mean']:.3f}"
    )
    if perm is not None:
        resumed = f", {perm.resumed} resumed from a checkpoint" if perm.resumed else ""
        print(
            f"  permutation p = {perm.p_value:.4f} (n = {len(perm.null)}, "
            f"mean BAC over {perm.repeats} repeat(s){resumed})"
        )
    print(f"  outputs   {out_dir}")
    if tracked is not None:
        print(f"  MLflow    run {tracked.run_id}, model {tracked.registry_uri or tracked.model_uri}")
    return document


if __name__ == "__main__":
    main()
