"""``python -m src.evaluate +experiment=gm_only``: the locked model on the external and control cohorts.

Loads the locked model from the MLflow model registry (the version ``src.train`` registered, recorded in
``${paths.run}/train/tracking.json``), or from the DVC-versioned ``${paths.run}/train/model`` when tracking is
off or the store does not hold that run, and the evaluation cohorts' feature tables; writes
``${paths.run}/evaluate/``: ``metrics.json`` (every cohort, with and without site alignment, CIs,
permutation p-values, treatment specificity), ``paper_table.csv``/``.md``, ``predictions.csv``,
``regions.csv`` (weights, CVR, sign consistency), ``calibration.csv``, ``decision_curve.csv``, figures, and
for voxel features ``weights.nii.gz``/``cvr.nii.gz``. The model is never refitted or re-tuned here. With
tracking on, every evaluation cohort becomes an MLflow run nested under the training run.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import hydra
import matplotlib
import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from src.data.cohorts import cohort_specs, evaluation_groups
from src.evaluation.clinical import calibration_table, decision_curve
from src.evaluation.harmonize import SiteAligner
from src.evaluation.specificity import auc_difference_test, interaction_test
from src.evaluation.statistics import bootstrap_ci, permutation_pvalues
from src.interpretation.regions import paint_features, read_feature_regions, weight_summary
from src.models.linear import AffineDecision
from src.reporting.document import markdown_table as report_markdown_table
from src.tracking.store import TrackingSettings
from src.utils.checks import check_config, check_writable
from src.utils.errors import MissingInputError, user_errors
from src.utils.io import atomic_directory, file_sha256, write_json_atomic, write_text_atomic
from src.utils.logging import configure_logging
from src.utils.provenance import git_state
from src.validation.ensemble import (
    EnsembleModel,
    ModelIntegrityError,
    load_model,
    model_file,
    train_metrics,
)
from src.validation.metrics import binary_metrics
from src.validation.shards import read_permutation

matplotlib.use("Agg")
log = logging.getLogger(__name__)


def read_tables(features_dir: Path, cohorts: list[str], model: EnsembleModel | None = None) -> pd.DataFrame:
    """The cohorts' feature tables, pooled (column ``_cohort`` names each row's cohort).

    With ``model``, each table is checked on its own before pooling (pooling would turn a column missing
    from one cohort into NaN): its columns against the model's and no missing value in them, the error
    naming the cohort, the file, the columns and the first subject concerned.
    """
    frames = []
    for name in cohorts:
        path = features_dir / f"{name}.parquet"
        if not path.is_file():
            raise MissingInputError(
                f"feature table {path} not found (cohort {name!r} of the data config): build it with "
                f"`python -m src.features.build features={features_dir.name}` (or `dvc repro`), with the "
                "same data= as training"
            )
        table = pd.read_parquet(path)
        if model is not None:
            model.checked_inputs(table, f"cohort {name!r} ({path})")
        frames.append(table.assign(_cohort=name))
    return pd.concat(frames, ignore_index=True)


def evaluate_cohort(y: np.ndarray, scores: np.ndarray, n_perm: int, n_boot: int, seed: int) -> dict[str, Any]:
    """Metrics, permutation p-values (predictions fixed) and stratified bootstrap CIs of one cohort."""
    y = np.asarray(y, int)
    out: dict[str, Any] = {"n": len(y), "responders": int(y.sum()), **binary_metrics(y, scores)}
    out.update(permutation_pvalues(y, scores, n=n_perm, seed=seed))
    out["ci95"] = bootstrap_ci(y, scores, n=n_boot, seed=seed)
    return out


def treatment_specificity(scored: dict[str, pd.DataFrame], n_perm: int, seed: int) -> dict[str, Any]:
    """AUC(external) - AUC(control) permutation test and the score x treatment interaction; empty when the
    data config has no external or no control cohort."""
    if "external" not in scored or "control" not in scored:
        return {}
    ket, ctl = scored["external"], scored["control"]
    return {
        "auc_difference": auc_difference_test(
            ket["response"], ket["decision"], ctl["response"], ctl["decision"], n=n_perm, seed=seed
        ),
        "interaction": interaction_test(
            np.r_[ket["response"], ctl["response"]],
            np.r_[ket["decision"], ctl["decision"]],
            np.r_[np.ones(len(ket)), np.zeros(len(ctl))],
        ),
    }


def paper_table(results: dict[str, dict[str, Any]], reference: dict[str, Any]) -> pd.DataFrame:
    rows = []
    for name, r in results.items():
        ref = reference.get(name, {})
        ci = r.get("ci95", {})
        rows.append(
            {
                "cohort": name,
                "n": r["n"],
                "responders": r["responders"],
                "BAC": 100 * r["bac"],
                "BAC 95% CI": _ci(ci.get("bac"), 100),
                "sens": 100 * r["sensitivity"],
                "spec": 100 * r["specificity"],
                "AUC": r["auc"],
                "AUC 95% CI": _ci(ci.get("auc"), 1),
                "p (BAC)": r.get("p_bac"),
                "paper n": ref.get("n"),
                "paper BAC": ref.get("bac"),
                "paper sens": ref.get("sensitivity"),
                "paper spec": ref.get("specificity"),
                "paper AUC": ref.get("auc"),
                "paper p": ref.get("p"),
            }
        )
    return pd.DataFrame(rows)


def _ci(ci: tuple[float, float] | None, scale: float) -> str:
    return (
        ""
        if ci is None
        else f"{scale * ci[0]:.{1 if scale == 100 else 2}f}-{scale * ci[1]:.{1 if scale == 100 else 2}f}"
    )


def markdown_table(table: pd.DataFrame) -> str:
    """The report's markdown table writer (counts as integers, BAC/sens/spec to 1 decimal, AUC to 2,
    p-values to 3 or '<0.001'; missing as '–'), with a final newline for the file."""
    return report_markdown_table(table) + "\n"


def interpretation(model: EnsembleModel, train: pd.DataFrame, features_dir: Path, seed: int) -> pd.DataFrame:
    """Weights (linear) or out-of-fold permutation importance (other kernels) per feature."""
    regions = read_feature_regions(features_dir)
    if all(isinstance(m, AffineDecision) for m in model.models):
        return weight_summary(model.models, model.feature_columns, train, regions)
    from sklearn.inspection import permutation_importance

    rows = []
    ids = train["participant_id"].to_numpy()
    for i, (fold_model, test_ids) in enumerate(zip(model.models, model.info["fold_test_ids"], strict=True)):
        test = train[np.isin(ids, test_ids)]
        result = permutation_importance(
            fold_model,
            test[model.input_columns],
            test["response"],
            scoring="roc_auc",
            n_repeats=5,
            random_state=seed + i,
        )
        rows.append(result.importances_mean[len(model.covariates) :])
    imp = np.vstack(rows)
    table = pd.DataFrame(
        {
            "feature": model.feature_columns,
            "auc_drop_mean": imp.mean(0),
            "auc_drop_se": imp.std(0, ddof=1) / np.sqrt(len(imp)),
        }
    )
    table = table.sort_values("auc_drop_mean", ascending=False, ignore_index=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def _figures(out: Path, curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> pd.DataFrame:
    import matplotlib.pyplot as plt
    from sklearn.metrics import roc_curve

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    dca_rows, cal_rows = [], []
    plots = {kind: out / "plots" / kind for kind in ("roc", "calibration", "decision_curve")}
    for folder in plots.values():
        folder.mkdir(parents=True)
    for name, (y, scores, proba) in curves.items():
        fpr, tpr, _ = roc_curve(y, scores)
        axes[0].plot(fpr, tpr, label=name)
        stem = name.split(" ")[0]
        pd.DataFrame({"fpr": fpr, "tpr": tpr}).to_csv(plots["roc"] / f"{stem}.csv", index=False)
        cal, brier = calibration_table(y, proba)
        cal.to_csv(plots["calibration"] / f"{stem}.csv", index=False)
        axes[1].plot(
            cal["mean_predicted"], cal["observed_fraction"], marker="o", label=f"{name} (Brier {brier:.3f})"
        )
        cal_rows.append(cal.assign(cohort=name, brier=brier))
        dca = decision_curve(y, proba)
        dca.to_csv(plots["decision_curve"] / f"{stem}.csv", index=False)
        dca = dca.assign(cohort=name)
        axes[2].plot(dca["threshold"], dca["net_benefit_model"], label=f"{name}: model")
        axes[2].plot(
            dca["threshold"], dca["net_benefit_treat_all"], linestyle=":", label=f"{name}: treat all"
        )
        dca_rows.append(dca)
    axes[0].plot([0, 1], [0, 1], color="grey", linewidth=0.5)
    axes[0].set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC")
    axes[1].plot([0, 1], [0, 1], color="grey", linewidth=0.5)
    axes[1].set(xlabel="predicted P(response)", ylabel="observed response rate", title="Calibration")
    axes[2].axhline(0, color="grey", linewidth=0.5, label="treat none")
    axes[2].set(
        xlabel="threshold probability", ylabel="net benefit", title="Decision curve", ylim=(-0.3, 0.6)
    )
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)
    pd.concat(cal_rows, ignore_index=True).to_csv(out / "calibration.csv", index=False)
    dca = pd.concat(dca_rows, ignore_index=True)
    dca.to_csv(out / "decision_curve.csv", index=False)
    return dca


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@user_errors
def main(cfg: DictConfig) -> dict[str, Any]:
    configure_logging(bool(cfg.verbose))
    check_config(cfg)
    # the registered model is downloaded here, verified, and used from here by MLflow's evaluation too
    with tempfile.TemporaryDirectory(prefix="ketamine-trd-model-") as local_dir:
        return evaluate(cfg, Path(local_dir))


def evaluate(cfg: DictConfig, local_dir: Path) -> dict[str, Any]:
    """Score the evaluation cohorts with the locked model and write ``${paths.run}/evaluate/``."""
    ev = OmegaConf.to_container(cfg.evaluation, resolve=True)
    run = Path(cfg.paths.run)
    settings = TrackingSettings.from_config(OmegaConf.to_container(cfg.tracking, resolve=True))
    model, training_run, model_source, model_path = locked_model(settings, run / "train", local_dir)
    features_dir = Path(cfg.paths.features) / cfg.features.name
    specs = cohort_specs(OmegaConf.to_container(cfg.data, resolve=True))
    roles = {spec.name: spec.role for spec in specs}
    groups = evaluation_groups(specs)  # from the cohorts' roles: external, control (+ each alone)
    train = read_tables(features_dir, [next(name for name, role in roles.items() if role == "discovery")])
    # every cohort's table is read and checked before any statistics: a bad last table fails now
    tables = {name: read_tables(features_dir, list(members), model) for name, members in groups.items()}
    check_writable(run)
    seed = int(cfg.seed)

    # discovery: the out-of-fold ensemble scores of the nested CV (never the locked model on its own data)
    oof = pd.read_csv(run / "train" / "predictions.csv")
    ens = oof.groupby("participant_id").agg(y=("y_true", "first"), decision=("decision", "mean"))
    train_config = OmegaConf.to_container(OmegaConf.load(run / "train" / "config.yaml"))  # provenance only
    results: dict[str, dict[str, Any]] = {
        "discovery": {
            "n": len(ens),
            "responders": int(ens["y"].sum()),
            **binary_metrics(ens["y"], ens["decision"]),
            "ci95": bootstrap_ci(ens["y"], ens["decision"], n=int(ev["n_bootstrap"]), seed=seed),
            "p_bac": _train_p(run),
        }
    }
    aligned: dict[str, dict[str, Any]] = {}
    scored: dict[str, pd.DataFrame] = {}
    aligner = (
        SiteAligner(model.feature_columns, method=ev["alignment_method"]).fit(train)
        if ev["harmonize"]
        else None
    )
    for name, table in tables.items():
        decision = model.decision_function(table.drop(columns="_cohort"))  # checks the columns too
        n_perm, n_boot = int(ev["n_permutations"]), int(ev["n_bootstrap"])
        results[name] = evaluate_cohort(table["response"], decision, n_perm, n_boot, seed)
        scored[name] = table.assign(decision=decision, probability=model.calibrate(decision))
        if aligner is not None:
            aligned_table = aligner.transform(table).drop(columns="_cohort")
            aligned[name] = evaluate_cohort(
                table["response"], model.decision_function(aligned_table), n_perm, n_boot, seed
            )

    specificity = treatment_specificity(scored, int(ev["n_permutations"]) // 5, seed)
    regions = interpretation(model, train, features_dir, seed)
    maps, maps_note = weight_maps(regions, features_dir)
    table = paper_table(results, ev["reference"])
    document = {
        "experiment": cfg.name,
        "positive_weight_means": "larger feature value -> predicted response",
        "cohorts": results,
        "groups": {name: {"role": roles[m[0]], "cohorts": m} for name, m in groups.items()},
        "cohorts_site_aligned": aligned,
        "treatment_specificity": specificity,
        "maps_note": maps_note or None,
        "provenance": {
            "git": git_state(),
            "model_sha256": file_sha256(model_file(run / "train" / "model")),
            "model_source": model_source,
            "mlflow_training_run": None if training_run is None else training_run["run_id"],
            "train_seed": train_config.get("seed"),
        },
    }
    with atomic_directory(run / "evaluate") as out:
        write_json_atomic(out / "metrics.json", document)
        table.to_csv(out / "paper_table.csv", index=False)
        write_text_atomic(out / "paper_table.md", markdown_table(table))
        pd.concat(scored.values(), ignore_index=True).drop_duplicates("participant_id")[
            ["participant_id", "_cohort", "site", "treatment", "response", "decision", "probability"]
        ].rename(columns={"_cohort": "cohort"}).to_csv(out / "predictions.csv", index=False)
        regions.to_csv(out / "regions.csv", index=False)
        oof_proba = model.calibrate(ens["decision"].to_numpy())
        curves = {"discovery (OOF)": (ens["y"].to_numpy(), ens["decision"].to_numpy(), oof_proba)}
        curves.update(
            {
                n: (
                    scored[n]["response"].to_numpy(),
                    scored[n]["decision"].to_numpy(),
                    scored[n]["probability"].to_numpy(),
                )
                for n in ("external", "control")
                if n in scored
            }
        )
        _figures(out, curves)
        # always created (a DVC output); without a map (non-linear kernels, user tables) a note says why
        (out / "maps").mkdir()
        if maps:
            _map_outputs(out / "maps", maps)
        else:
            write_text_atomic(out / "maps" / "README.txt", maps_note + "\n")
        evaluation_runs: dict[str, str] = {}
        promotion = None
        if training_run is not None:
            from src.tracking.evaluation import log_evaluation

            evaluation_runs = log_evaluation(
                settings,
                training_run,
                results=results,
                aligned=aligned,
                tables=scored,
                input_columns=model.input_columns,
                specificity=specificity,
                outputs=out,
                model_path=model_path,
            )
            from src.tracking.registry import promote_if_passing

            champion = ev["champion"]
            promotion = promote_if_passing(
                settings,
                training_run,
                results.get("external"),
                str(champion["alias"]),
                float(champion["max_p"]),
                _evidence(results, document["provenance"]),
            )
        write_json_atomic(
            out / "tracking.json",
            {
                "model_source": model_source,
                "training": training_run,
                "evaluation_runs": evaluation_runs,
                "registry": promotion,
            },
        )
    _print(cfg.name, table, specificity, aligned)
    if promotion:
        print(f"  {promotion}")
    return document


def _evidence(results: dict[str, dict[str, Any]], provenance: dict[str, Any]) -> str:
    """The registry description of an evaluated model: each cohort's numbers, the code and the model."""
    cohorts = "; ".join(
        f"{name}: BAC {100 * r['bac']:.1f} %, AUC {r['auc']:.2f}, n = {r['n']}"
        + ("" if r.get("p_bac") is None else f", p = {r['p_bac']:.3g}")
        for name, r in results.items()
    )
    git = provenance.get("git") or {}
    return (
        f"Evaluated {time.strftime('%Y-%m-%d %H:%M')}: {cohorts}. Code {git.get('commit')}"
        f"{' (uncommitted changes)' if git.get('dirty') else ''}, model sha256 {provenance['model_sha256']}."
    )


def locked_model(
    settings: TrackingSettings, train_dir: Path, local_dir: Path
) -> tuple[EnsembleModel, dict | None, str, Path | None]:
    """(model, training run record or None, where the model came from, verified local copy of the MLflow
    model or None).

    Every load is verified against a sha256 recorded at train time (``train/metrics.json`` for the DVC
    copy, ``train/tracking.json`` and the run's ``registry_model_sha256`` tag for MLflow's copy). With
    tracking on and a tracked training run, the model comes from the MLflow registry (downloaded to
    ``local_dir`` and verified); if the store does not hold that run or cannot be read (deleted or corrupted
    ``mlruns/``, another ``tracking.uri``), the DVC-versioned copy is used with one warning and nothing is
    logged to MLflow. A model file that fails verification is an error wherever it comes from.
    """
    sha256 = (train_metrics(train_dir).get("provenance") or {}).get("model_sha256")
    if settings.enabled:
        from src.tracking.evaluation import load_registered_model, read_training_run

        training = read_training_run(train_dir)
        if training is None:
            log.warning("%s was trained with tracking off: using %s", train_dir, train_dir / "model")
        else:
            try:
                # verified against the hash of MLflow's own copy, recorded at train time
                model, folder = load_registered_model(
                    settings, training, training.get("model_sha256"), local_dir
                )
                return model, training, training.get("registry_uri") or training["model_uri"], folder
            except ModelIntegrityError:
                raise  # a swapped or corrupted model is an error, never a silent fallback
            except Exception as error:  # store gone, corrupt or unreachable: MLflow/SQLAlchemy/network errors
                log.warning(
                    "%s; using the DVC-versioned model in %s, not logging to MLflow", error, train_dir
                )
    return load_model(train_dir / "model", sha256), None, str(train_dir / "model"), None


def _train_p(run: Path) -> float | None:
    perm = read_permutation(run)  # merged shards when they belong to this training, else the training's own
    return None if perm is None else perm["p_value"]


def weight_maps(regions: pd.DataFrame, features_dir: Path) -> tuple[dict[str, Any], str]:
    """Mean-weight and CVR brain maps of linear models (:func:`paint_features`); none, and a note saying why,
    for non-linear models."""
    if "cvr" not in regions:
        return {}, "no weight map: the model is not linear (see regions.csv for permutation importance)"
    return paint_features(regions, features_dir)


def _map_outputs(out: Path, maps: dict[str, Any]) -> None:
    import nibabel as nib
    from nilearn import plotting

    for name, img in maps.items():
        nib.save(img, out / f"{name}.nii.gz")
    display = plotting.plot_stat_map(
        maps["cvr"],
        threshold=2.0,
        display_mode="z",
        cut_coords=7,
        title="CV-ratio |CVR| > 2 (red: towards response, blue: towards non-response)",
    )
    display.savefig(str(out / "cvr_map.png"), dpi=120)
    display.close()


def _print(name: str, table: pd.DataFrame, specificity: dict[str, Any], aligned: dict[str, Any]) -> None:
    print(f"{name}: locked model on the evaluation cohorts")
    print(
        markdown_table(
            table[
                [
                    "cohort",
                    "n",
                    "responders",
                    "BAC",
                    "BAC 95% CI",
                    "sens",
                    "spec",
                    "AUC",
                    "p (BAC)",
                    "paper BAC",
                    "paper AUC",
                ]
            ]
        )
    )
    if not specificity:
        print("treatment specificity: not tested (the data config has no external or no control cohort)")
    else:
        diff = specificity["auc_difference"]
        print(
            f"treatment specificity: AUC external {diff['auc_a']:.3f} vs control {diff['auc_b']:.3f}, "
            f"difference {diff['difference']:.3f}, permutation p = {diff['p_value']:.4f}; "
            f"score x treatment LR p = {specificity['interaction']['p_value']:.4f}"
        )
    for cohort, r in aligned.items():
        print(
            f"  site-aligned {cohort}: BAC {100 * r['bac']:.1f}, AUC {r['auc']:.3f}, p(BAC) {r['p_bac']:.4f}"
        )


if __name__ == "__main__":
    main()
