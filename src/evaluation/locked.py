"""The locked model on the evaluation cohorts: scores, statistics per cohort, treatment specificity,
interpretation and the outputs of ``${paths.run}/evaluate/``.

Takes the typed settings (:class:`~src.config.settings.ExperimentConfig`); no Hydra, no MLflow
(``src.evaluate`` hands the result to :mod:`src.tracking.evaluation`). The model is never refitted or
re-tuned here.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.config.settings import ExperimentConfig
from src.data.cohorts import cohort_specs, discovery_cohort, evaluation_groups
from src.evaluation.continuous import continuous_result, interaction
from src.evaluation.results import CohortResult
from src.evaluation.specificity import auc_difference_test, interaction_test
from src.evaluation.statistics import bootstrap_ci, permutation_pvalues
from src.evaluation.subgroups import check_columns, evaluate_subgroups, read_participants
from src.features.tables import feature_table_path, read_feature_table
from src.interpretation.importance import feature_importance
from src.models.harmonize import SiteAligner
from src.utils.errors import UserInputError
from src.utils.io import file_sha256
from src.utils.provenance import git_state
from src.validation.ensemble import EnsembleModel, model_file
from src.validation.shards import read_permutation

log = logging.getLogger(__name__)


@dataclass
class Evaluation:
    """Everything ``${paths.run}/evaluate/`` holds, before it is written.

    ``results``/``aligned``: per cohort group (discovery = out-of-fold, external, control and each cohort
    of a role alone), metrics, p-values and CIs, without / with site alignment; ``scored``: each group's
    table with its decision and probability; ``curves``: (y, decision, probability) for the figures.
    """

    results: dict[str, CohortResult]
    aligned: dict[str, CohortResult]
    scored: dict[str, pd.DataFrame]
    specificity: dict[str, Any]
    regions: pd.DataFrame
    paper_table: pd.DataFrame
    document: dict[str, Any]
    curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    # a regressor's: per group (observed, predicted) and the continuous results (src.evaluation.continuous)
    continuous: dict[str, Any] | None = None
    # performance per subgroup (src.evaluation.subgroups): {"cells": DataFrame, "heterogeneity": DataFrame}
    subgroups: dict[str, pd.DataFrame] | None = None


def read_tables(
    features_root: str | Path, feature_set: str, cohorts: list[str], model: EnsembleModel | None = None
) -> pd.DataFrame:
    """The cohorts' feature tables, pooled (column ``_cohort`` names each row's cohort).

    With ``model``, each table is checked on its own before pooling (pooling would turn a column missing
    from one cohort into NaN): its columns against the model's and no missing value in them, the error
    naming the cohort, the file, the columns and the first subject concerned.
    """
    frames = []
    for name in cohorts:
        path = feature_table_path(features_root, feature_set, name)
        table = read_feature_table(path, name)
        if model is not None:
            model.checked_inputs(table, f"cohort {name!r} ({path})")
        frames.append(table.assign(_cohort=name))
    return pd.concat(frames, ignore_index=True)


def evaluate_cohort(y: np.ndarray, scores: np.ndarray, n_perm: int, n_boot: int, seed: int) -> CohortResult:
    """Metrics, permutation p-values (predictions fixed) and stratified bootstrap CIs of one cohort."""
    y = np.asarray(y, int)
    p_values = permutation_pvalues(y, scores, n=n_perm, seed=seed)
    return CohortResult.of_scores(y, scores, ci95=bootstrap_ci(y, scores, n=n_boot, seed=seed), **p_values)


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


def paper_table(results: dict[str, CohortResult], reference: Mapping[str, Any]) -> pd.DataFrame:
    """One row per cohort group: our numbers (percentages for BAC/sens/spec) beside the paper's."""
    rows = []
    for name, r in results.items():
        ref = reference.get(name, {})
        rows.append(
            {
                "cohort": name,
                "n": r.n,
                "responders": r.responders,
                "BAC": 100 * r.bac,
                "BAC 95% CI": _ci(r.ci95.get("bac"), 100, 1),
                "sens": 100 * r.sensitivity,
                "spec": 100 * r.specificity,
                "AUC": r.auc,
                "AUC 95% CI": _ci(r.ci95.get("auc"), 1, 2),
                "p (BAC)": r.p_bac,
                "paper n": ref.get("n"),
                "paper BAC": ref.get("bac"),
                "paper sens": ref.get("sensitivity"),
                "paper spec": ref.get("specificity"),
                "paper AUC": ref.get("auc"),
                "paper p": ref.get("p"),
            }
        )
    return pd.DataFrame(rows)


def _ci(ci: tuple[float, float] | None, scale: float, decimals: int) -> str:
    return "" if ci is None else f"{scale * ci[0]:.{decimals}f}-{scale * ci[1]:.{decimals}f}"


def discovery_results(
    train_dir: Path, n_boot: int, seed: int, cut: float | None = None
) -> tuple[CohortResult, pd.DataFrame]:
    """The discovery cohort's row: the out-of-fold ensemble scores of the nested CV (never the locked model
    on its own training data), with the permutation p of the whole procedure. Also returns those scores.

    A regressor's out-of-fold table (``prediction``, ``training_mean``) is read with its responder threshold
    ``cut``: label ``outcome >= cut``, decision ``prediction - cut``; the returned table also holds
    ``observed``, ``predicted`` and ``reference`` (the mean training mean) per subject."""
    oof = pd.read_csv(train_dir / "predictions.csv", dtype={"participant_id": str})
    if "prediction" in oof.columns and "decision" not in oof.columns:
        ens = oof.groupby("participant_id").agg(
            observed=("y_true", "first"),
            predicted=("prediction", "mean"),
            reference=("training_mean", "mean"),
        )
        ens["y"] = (ens["observed"] >= cut - 1e-9).astype(int)
        ens["decision"] = ens["predicted"] - cut + 1e-9  # >= cut responds, as the label
    else:
        ens = oof.groupby("participant_id").agg(y=("y_true", "first"), decision=("decision", "mean"))
    perm = read_permutation(train_dir.parent)  # merged shards when they belong to this training
    ci95 = bootstrap_ci(ens["y"], ens["decision"], n=n_boot, seed=seed)
    p_bac = None if perm is None else perm["p_value"]
    return CohortResult.of_scores(ens["y"], ens["decision"], ci95=ci95, p_bac=p_bac), ens


def evaluate_locked_model(
    config: ExperimentConfig, model: EnsembleModel, provenance: Mapping[str, Any]
) -> Evaluation:
    """Score every evaluation group with ``model`` (and, with ``evaluation.harmonize``, after label-free
    alignment of each unseen site) and gather the statistics, interpretation and paper table.

    ``provenance`` (model source, MLflow run) is added to the document's provenance. Every cohort's table is
    read and checked before any statistics: a bad last table fails before any work."""
    ev = config.evaluation
    run = Path(config.paths.run)
    features_root, feature_set = config.paths.features, config.features.name
    specs = cohort_specs(config.data)
    roles = {spec.name: spec.role for spec in specs}
    groups = evaluation_groups(specs)  # from the cohorts' roles: external, control (+ each alone)
    train = read_tables(features_root, feature_set, [discovery_cohort(config.data)])
    # each cohort read and checked once (a cohort is in its role's pooled group and alone), then grouped
    cohorts = {c: read_tables(features_root, feature_set, [c], model) for m in groups.values() for c in m}
    tables = {
        name: pd.concat([cohorts[c] for c in members], ignore_index=True) for name, members in groups.items()
    }
    seed, n_perm, n_boot = config.seed, ev.n_permutations, ev.n_bootstrap
    participants = subgroup_participants(config, specs, groups)  # a listed column missing fails here
    cut = responder_cut(model)
    if cut is not None:  # a regressor: the responder label from its own outcome and threshold
        for table in tables.values():
            table["response"] = (table["outcome"] >= cut - 1e-9).astype(int)

    discovery, oof = discovery_results(run / "train", n_boot, seed, cut)
    results = {"discovery": discovery}
    aligned: dict[str, CohortResult] = {}
    scored: dict[str, pd.DataFrame] = {}
    aligner = None
    if ev.harmonize and model.imaging_columns:  # scanner effects: the imaging columns, never clinical ones
        aligner = SiteAligner(model.imaging_columns, method=ev.alignment_method).fit(train)
    unseen = model.unseen_levels(pd.concat(tables.values(), ignore_index=True)).get("site")
    if unseen:  # expected for external cohorts: one line, not one per cohort or fold model
        log.info(
            "site(s) %s not in training: scored with the reference site's adjustment%s",
            unseen,
            "; also reported after site alignment" if aligner is not None else "",
        )
    for name, table in tables.items():
        predicted = model.decision_function(table.drop(columns="_cohort"))  # checks the columns too
        decision, probability = responder_decision(model, predicted)
        results[name] = evaluate_cohort(table["response"], decision, n_perm, n_boot, seed)
        scored[name] = table.assign(decision=decision, probability=probability)
        if cut is not None:
            scored[name]["predicted"] = predicted
        if aligner is not None:
            aligned_table = aligner.transform(table).drop(columns="_cohort")
            aligned_decision, _ = responder_decision(model, model.decision_function(aligned_table))
            aligned[name] = evaluate_cohort(table["response"], aligned_decision, n_perm, n_boot, seed)
    specificity = treatment_specificity(scored, n_perm // 5, seed)
    regions = feature_importance(
        model,
        train,
        Path(features_root) / feature_set,
        seed,
        config.n_jobs,
        n_weight_permutations=ev.weight_permutations or 0,
    )
    document = {
        "experiment": config.name,
        "positive_weight_means": "larger feature value -> predicted response",
        "cohorts": {name: result.to_dict() for name, result in results.items()},
        "groups": {name: {"role": roles[m[0]], "cohorts": m} for name, m in groups.items()},
        "cohorts_site_aligned": {name: result.to_dict() for name, result in aligned.items()},
        "site_alignment": {"method": ev.alignment_method} if aligner is not None else None,
        "treatment_specificity": specificity,
        "provenance": {
            "git": git_state(),
            "model_sha256": file_sha256(model_file(run / "train" / "model")),
            # the data config of this evaluation's cohorts and whether the model's data were simulated
            "data": str(config.data.name),
            "simulated": bool(model.info.get("simulated")),
            **provenance,
        },
    }
    continuous = None
    if cut is not None:
        continuous = continuous_evaluation(config, model, scored, oof, document)
    curves = {
        "discovery (OOF)": (
            oof["y"].to_numpy(),
            oof["decision"].to_numpy(),
            responder_decision(model, oof["predicted"].to_numpy())[1]
            if cut is not None
            else model.calibrate(oof["decision"].to_numpy()),
        )
    }
    for name in ("external", "control"):
        if name in scored:
            s = scored[name]
            curves[name] = (s["response"].to_numpy(), s["decision"].to_numpy(), s["probability"].to_numpy())
    discovery_table = oof.reset_index()[["participant_id"]].merge(train, on="participant_id", how="left")
    subgroup_inputs = {"discovery": (discovery_table, *curves["discovery (OOF)"])}
    subgroup_inputs.update(
        {name: (scored[name], *curves[name]) for name in ("external", "control") if name in scored}
    )
    subgroups = evaluate_subgroups(
        subgroup_inputs,
        participants,
        ev.subgroups,
        config.data.outcome.baseline,
        n_boot=n_boot,
        seed=seed,
    )
    document["subgroups"] = {
        "settings": dataclasses.asdict(ev.subgroups),
        # NaN (an untested grouping's LR, a tested one's note) as null: metrics.json stays strict JSON
        "heterogeneity": _records(subgroups["heterogeneity"]),
    }
    return Evaluation(
        results,
        aligned,
        scored,
        specificity,
        regions,
        paper_table(results, ev.reference),
        document,
        curves,
        continuous,
        subgroups,
    )


def _records(table: pd.DataFrame) -> list[dict[str, Any]]:
    """The table's rows as mappings with None for missing values."""
    return [{k: (None if pd.isna(v) else v) for k, v in row.items()} for row in table.to_dict("records")]


def subgroup_participants(
    config: ExperimentConfig, specs: list[Any], groups: Mapping[str, list[str]]
) -> dict[str, pd.DataFrame]:
    """The participants.tsv rows of the discovery cohort and of each pooled evaluation group (``external``,
    ``control``), the discovery cohort's first; every listed subgroup column checked in every cohort. A
    group whose cohort folder has no participants.tsv (tables built elsewhere) is left out."""
    folders = {spec.name: spec.folder(config.data.root) for spec in specs}
    columns = list(config.evaluation.subgroups.columns)
    read = {}
    for name, folder in folders.items():
        read[name] = read_participants(folder)
        check_columns(read[name], columns, f"cohort {name!r} ({folder / 'participants.tsv'})")
    out = {"discovery": read[discovery_cohort(config.data)]}
    for name in ("external", "control"):
        if name in groups:
            frames = [read[c] for c in groups[name]]
            out[name] = None if any(f is None for f in frames) else pd.concat(frames, ignore_index=True)
    return {name: frame for name, frame in out.items() if frame is not None}


def responder_cut(model: EnsembleModel) -> float | None:
    """A regressor's responder threshold (None for a classifier); a regressor without one is refused."""
    if not model.is_regression:
        return None
    cut = model.info["outcome"].get("responder_cut")
    if cut is None:
        raise UserInputError(
            "evaluating a continuous model whose outcome has no responder threshold (data.outcome.target "
            "is a column of your own) is not supported yet: the evaluation reports the responder metrics "
            "beside the continuous ones; train on target=percent_reduction or evaluate with your own script"
        )
    return float(cut)


def responder_decision(model: EnsembleModel, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(decision, P(positive class)) of the model's ensemble scores: a classifier's as they are (Platt); a
    regressor's predicted outcome shifted by its responder threshold (>= cut responds) with P(response) of
    its residual model."""
    scores = np.asarray(scores, float)
    cut = responder_cut(model)
    if cut is None:
        return scores, model.calibrate(scores)
    return scores - cut + 1e-9, model.calibrate(scores)


def continuous_evaluation(
    config: ExperimentConfig,
    model: EnsembleModel,
    scored: Mapping[str, pd.DataFrame],
    oof: pd.DataFrame,
    document: dict[str, Any],
) -> dict[str, Any]:
    """A regressor's continuous results per group (:func:`~src.evaluation.continuous.continuous_result`):
    the discovery cohort's out-of-fold predictions against their training-fold means, each evaluation
    group's locked predictions against the discovery cohort's mean outcome; the predicted x treatment
    interaction; added to ``document["continuous"]``. Returns them with the (observed, predicted) pairs."""
    ev, seed = config.evaluation, config.seed
    cut = responder_cut(model)
    train_metrics = json.loads((Path(config.paths.run) / "train" / "metrics.json").read_text())
    training_mean = float(train_metrics["outcome"]["mean"])
    perm = read_permutation(Path(config.paths.run))
    results = {
        "discovery": continuous_result(
            oof["observed"],
            oof["predicted"],
            oof["reference"],
            cut,
            0,
            ev.n_bootstrap,
            seed,
            None if perm is None else perm["p_value"],
        )
    }
    pairs = {"discovery (OOF)": (oof["observed"].to_numpy(), oof["predicted"].to_numpy())}
    for name, table in scored.items():
        observed, predicted = table["outcome"].to_numpy(float), table["predicted"].to_numpy(float)
        results[name] = continuous_result(
            observed, predicted, training_mean, cut, ev.n_permutations, ev.n_bootstrap, seed
        )
        pairs[name] = (observed, predicted)
    specificity = None
    if "external" in scored and "control" in scored:
        ket, ctl = scored["external"], scored["control"]
        specificity = interaction(
            np.r_[ket["outcome"], ctl["outcome"]],
            np.r_[ket["predicted"], ctl["predicted"]],
            np.r_[np.ones(len(ket)), np.zeros(len(ctl))],
        )
    document["continuous"] = {
        "target": train_metrics["outcome"]["target"],
        "responder_cut": cut,
        "training_mean": training_mean,
        "r2_reference": "discovery: each subject's training-fold mean; other cohorts: the discovery mean",
        "cohorts": results,
        "treatment_interaction": specificity,
    }
    return {"results": results, "pairs": pairs, "cut": cut, "interaction": specificity}
