"""Plan the next study: does more data still help, and how many patients are needed?

Needs a trained experiment (``python -m src.train``). Three answers, from the experiment's own data and
out-of-fold scores:

* **learning curve**: the whole nested CV rerun on stratified subsamples of the discovery cohort
  (``plan.learning_curve``: fractions, draws, repeats), mean and SD of BAC and AUC per size;
* **development sample size**: Riley et al.'s minimum n for the experiment's candidate predictors at the
  anticipated C statistic (the discovery out-of-fold AUC unless ``plan.sample_size.anticipated_auc``), beside
  the discovery n;
* **external validation sample size**: by simulation from the out-of-fold scores per class, the n for 80 %
  and 90 % power that BAC and AUC exceed chance and the n that estimates each within +-0.1; also from the
  external cohorts' own scores once ``src.evaluate`` has run.

Writes ``${paths.run}/plan/``: ``plan.json``, ``plan.md`` (also in the report), ``learning_curve.csv``,
``power.csv`` and ``plan.png``.

Example::

    python -m src.plan +experiment=gm_only plan.learning_curve.draws=10
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from src.config.cli import run, start, trained_settings
from src.config.settings import ExperimentConfig
from src.data.cohorts import cohort_specs
from src.evaluation.artefacts import check_experiment
from src.evaluation.planning import plan_figure, plan_markdown, summary_lines
from src.evaluation.sample_size import cstat_to_r2cs, external_sample_size, riley_binary
from src.tracking.evaluation import read_training_run
from src.tracking.store import quiet_stderr
from src.utils.errors import UserInputError, user_errors
from src.utils.io import atomic_directory, check_writable, write_json_atomic, write_text_atomic
from src.utils.logging import progress_wanted, status
from src.utils.parallel import parallel_backend
from src.validation.experiment import experiment_inputs, training_estimator
from src.validation.learning_curve import curve_summary, learning_curve
from src.validation.metrics import binary_metrics
from src.validation.nested_cv import check_continuous, check_fold_sizes
from src.validation.seeds import Stream, derive_seed
from src.validation.shards import read_permutation

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@user_errors
def main(cfg: DictConfig) -> dict[str, Any]:
    """Learning curve and sample sizes of one experiment (``python -m src.plan``); returns the plan."""
    config = start(cfg)
    run_dir = Path(config.paths.run)
    oof_path = run_dir / "train" / "predictions.csv"
    if not oof_path.is_file():
        raise UserInputError(
            f"{oof_path} not found: run `python -m src.train +experiment={config.name}` first"
        )
    # the learning curve and the sample sizes are those of the trained model's design, not this command's
    config = trained_settings(config, run_dir / "train")
    check_experiment(config.name, run_dir)  # the predictions it reads are the training's and evaluation's
    inputs = experiment_inputs(config)
    check_writable(run_dir)
    scores = None if inputs.continuous else out_of_fold_scores(oof_path)
    external = (
        None if inputs.continuous else external_scores(config, run_dir / "evaluate" / "predictions.csv")
    )

    curve_settings = config.plan.learning_curve
    fractions, skipped = usable_fractions(inputs.y, curve_settings.fractions, config)
    status(
        f"{config.name}: learning curve, {len(fractions)} sizes x {curve_settings.draws} draws of the nested "
        f"CV ({curve_settings.repeats} repeat each) ..."
    )
    with parallel_backend(config.parallel, config.n_jobs):
        curve = learning_curve(
            training_estimator(config, inputs),
            inputs.X,
            inputs.y,
            fractions,
            curve_settings.draws,
            repeats=curve_settings.repeats,
            seed=config.seed,
            n_jobs=config.n_jobs,
            progress=progress_wanted(),
        )
    status(f"{config.name}: sample sizes ...")
    plan = (
        continuous_plan(config, inputs)
        if inputs.continuous
        else sample_sizes(config, inputs, scores, external)
    )
    plan["discovery_significance"] = discovery_significance(read_permutation(run_dir))
    plan["learning_curve"] = {
        "fractions": fractions,
        "skipped_fractions": skipped,
        "draws": curve_settings.draws,
        "repeats": curve_settings.repeats,
        # a classifier's BAC, or a regressor's objective (mean_neg_mae: higher is better)
        "statistic": curve.attrs.get("statistic"),
        "summary": curve_summary(curve).to_dict("records"),
    }
    out = run_dir / "plan"
    with atomic_directory(out) as tmp:
        curve.to_csv(tmp / "learning_curve.csv", index=False)
        tables = [s["table"].assign(scenario=name) for name, s in plan.pop("_power_tables").items()]
        power = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame(columns=["n", "scenario"])
        power.to_csv(tmp / "power.csv", index=False)
        write_json_atomic(tmp / "plan.json", plan)
        write_text_atomic(tmp / "plan.md", plan_markdown(plan))
        plan_figure(tmp / "plan.png", curve, power, plan)
    lines = summary_lines(config.name, plan, out)
    training = read_training_run(run_dir / "train") if config.tracking.enabled else None
    if training is not None:
        lines.append("  " + _track(config, training, plan, out))
    print("\n".join(lines))
    return plan


def _track(config: ExperimentConfig, training: dict[str, Any], plan: dict[str, Any], out: Path) -> str:
    """The plan on the training run in MLflow; a store that fails costs the MLflow copy only (warned)."""
    from src.tracking.planning import log_plan  # lazy: MLflow loads in ~1 s

    try:
        with quiet_stderr():
            return log_plan(config.tracking, training, plan, out)
    except Exception as err:  # MLflow, SQLAlchemy and network errors have no common base
        log.warning("MLflow logging of the plan failed (%s); it is complete in %s", type(err).__name__, out)
        return f"MLflow: not logged ({type(err).__name__})"


def discovery_significance(permutation: dict[str, Any] | None, alpha: float = 0.05) -> dict[str, Any]:
    """Whether the discovery model itself beat chance (its permutation test of the whole nested CV), with
    the caveat every power figure then carries: sample sizes planned from a performance that chance
    explains rest on nothing."""
    p = None if not permutation else permutation.get("p_value")
    n = None if not permutation else permutation.get("n")
    if p is None:
        note = (
            "The discovery model has no permutation test (permutation.n=0): whether its performance beats "
            "chance is unknown, and the sample sizes below assume that it does."
        )
    elif p >= alpha:
        note = (
            f"The discovery model is not significant: its permutation p is {p:.3g} ({n} permutations of the "
            "whole nested CV), so chance explains its discovery performance. The external-validation sample "
            "sizes below are computed from that performance as if it were real; they are what a study would "
            "need if it were, not evidence that it is."
        )
    else:
        note = f"The discovery model beats chance: permutation p = {p:.3g} ({n} permutations)."
    return {"p_value": p, "n_permutations": n, "significant": p is not None and p < alpha, "note": note}


def out_of_fold_scores(path: Path) -> pd.DataFrame:
    """The discovery out-of-fold ensemble: one row per subject, ``y`` and the mean decision over repeats."""
    oof = pd.read_csv(path, dtype={"participant_id": str})
    if "decision" not in oof:
        raise UserInputError(f"{path}: no 'decision' column (a regressor's predictions?)")
    return oof.groupby("participant_id").agg(y=("y_true", "first"), decision=("decision", "mean"))


def external_scores(config: ExperimentConfig, path: Path) -> pd.DataFrame | None:
    """The pooled external cohorts' locked-model scores (``evaluate/predictions.csv``), when evaluated."""
    if not path.is_file():
        return None
    table = pd.read_csv(path, dtype={"participant_id": str})
    external = {spec.name for spec in cohort_specs(config.data) if spec.role == "external"}
    table = table[table["cohort"].isin(external)]
    if table.empty or table["response"].nunique() < 2:
        return None
    return table.rename(columns={"response": "y"})[["y", "decision"]]


def usable_fractions(y: np.ndarray, fractions: list[float], config: ExperimentConfig) -> tuple[list, list]:
    """The fractions whose subsamples can fill the outer and inner folds (the others, with the reason)."""
    usable, skipped = [], []
    continuous = config.data.outcome.kind == "continuous"
    for fraction in sorted(float(f) for f in fractions):
        size = len(y) if fraction >= 1 else int(round(fraction * len(y)))
        where = f"learning curve at {fraction:g} ({size} subjects)"
        try:
            if continuous:
                check_continuous(np.asarray(y, float)[:size], config.cv, where)
            else:  # the class counts of a stratified subsample of that size
                share = np.bincount(np.asarray(y, int), minlength=2) / len(y)
                check_fold_sizes(np.repeat([0, 1], np.round(share * size).astype(int)), config.cv, where)
        except UserInputError as err:
            skipped.append({"fraction": fraction, "reason": str(err)})
            continue
        usable.append(fraction)
    if not usable:
        raise UserInputError(
            f"learning curve: no fraction of {fractions} can fill the CV folds ({skipped[0]})"
        )
    return usable, skipped


def candidate_parameters(config: ExperimentConfig, inputs: Any) -> tuple[int, str]:
    """The candidate predictor parameters of Riley's criteria and how they were counted: the feature columns
    plus the covariates (a categorical covariate one per level beyond the first); with PCA in the model, the
    components it can keep at most (n - 1)."""
    covariates = set(inputs.covariates)
    features = [c for c in inputs.X.columns if c not in covariates]
    levels = sum(max(inputs.X[c].nunique() - 1, 0) for c in inputs.categorical if c in inputs.X)
    numeric = len([c for c in covariates if c not in set(inputs.categorical) and c in inputs.X])
    count, how = len(features), f"{len(features)} feature columns"
    if "pca_variance" in config.model.search_space or "pca" in str(config.model.fixed):
        count = min(count, len(inputs.y) - 1)
        how = f"at most {count} principal components of {len(features)} feature columns"
    total = count + numeric + levels
    return total, f"{how} + {numeric} numeric covariates + {levels} covariate levels"


def continuous_plan(config: ExperimentConfig, inputs: Any) -> dict[str, Any]:
    """A continuous outcome: the learning curve of its objective only (the sample-size statements here are
    Riley's binary-outcome criteria and the responder tests; not computed, said)."""
    note = (
        "not computed for a continuous outcome (data.outcome.kind=continuous): the criteria here are those "
        "of a binary outcome; Riley et al. 2020 give the continuous ones (pmsampsize type 'c')"
    )
    return {
        "experiment": config.name,
        "discovery": {"n": int(len(inputs.y))},
        "development": {"note": note},
        "external_validation": {},
        "powers": list(config.plan.sample_size.powers),
        "_power_tables": {},
    }


def sample_sizes(
    config: ExperimentConfig, inputs: Any, scores: pd.DataFrame, external: pd.DataFrame | None
) -> dict[str, Any]:
    """Riley et al.'s development sample size and the simulated external-validation sizes."""
    settings = config.plan.sample_size
    y = scores["y"].to_numpy(int)
    prevalence = float(settings.prevalence or y.mean())
    oof = binary_metrics(y, scores["decision"].to_numpy())
    auc = float(settings.anticipated_auc or oof["auc"])
    parameters, counted = candidate_parameters(config, inputs)
    development: dict[str, Any] = {"anticipated_auc": auc, "parameters_counted": counted}
    if auc <= 0.5:
        development["note"] = f"anticipated AUC {auc:.3f} <= 0.5: no sample size makes such a model useful"
    else:
        r2cs = cstat_to_r2cs(auc, prevalence)
        development.update(riley_binary(r2cs, parameters, prevalence, settings.shrinkage))
    development["discovery_n"] = int(len(y))
    scenarios = {"discovery out-of-fold scores": scores}
    if external is not None:
        scenarios["external cohorts' scores"] = external
    tables, external_sizes = {}, {}
    for i, (name, frame) in enumerate(scenarios.items()):
        labels, decision = frame["y"].to_numpy(int), frame["decision"].to_numpy(float)
        result = external_sample_size(
            decision[labels == 1],
            decision[labels == 0],
            prevalence,
            powers=settings.powers,
            precision=settings.precision,
            n_sim=settings.n_sim,
            alpha=settings.alpha,
            seed=derive_seed(config.seed, Stream.PLANNING, i),
        )
        observed = binary_metrics(labels, decision)
        external_sizes[name] = {
            **result["summary"],
            "source_n": int(len(labels)),
            "source_bac": observed["bac"],
            "source_auc": observed["auc"],
        }
        tables[name] = result
    return {
        "experiment": config.name,
        "discovery": {
            "n": int(len(y)),
            "prevalence": float(y.mean()),
            "oof_bac": oof["bac"],
            "oof_auc": oof["auc"],
        },
        "development": development,
        "powers": list(settings.powers),
        "external_validation": external_sizes,
        "_power_tables": tables,
    }


if __name__ == "__main__":
    run(main, __doc__)
