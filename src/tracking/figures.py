"""Figures logged with a training run: ROC and confusion matrix of the out-of-fold ensemble, and the Optuna
optimisation history / parameter importances of the inner-loop studies."""

from __future__ import annotations

import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay  # noqa: E402

from src.evaluation.continuous import predicted_vs_observed  # noqa: E402
from src.models.search_space import SearchSpace  # noqa: E402


def studies_from_trials(trials: pd.DataFrame, space: SearchSpace) -> list[optuna.Study]:
    """In-memory Optuna studies rebuilt from the engine's trial table, one per (repeat, outer fold), so that
    Optuna's own visualisations can draw them (the engine keeps tables, not study objects)."""
    distributions = space.distributions()
    optuna.logging.set_verbosity(optuna.logging.ERROR)  # one "study created" line per study otherwise
    studies = []
    for _, group in trials.groupby(["repeat", "fold"], sort=True):
        study = optuna.create_study(direction="maximize")
        study.add_trials(
            [
                optuna.trial.create_trial(
                    params={name: row[f"params_{name}"] for name in distributions},
                    distributions=distributions,
                    value=float(row["value"]),
                )
                for _, row in group.sort_values("number").iterrows()
            ]
        )
        studies.append(study)
    return studies


def ensemble_figures(y: np.ndarray, decision: np.ndarray, out: Path, title: str) -> list[Path]:
    """ROC curve and confusion matrix (threshold 0) of the out-of-fold ensemble decision scores."""
    paths = []
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    RocCurveDisplay.from_predictions(y, decision, ax=ax, name="out-of-fold ensemble", plot_chance_level=True)
    ax.set_title(f"{title}: discovery ROC")
    paths.append(_save(fig, out / "roc_curve.png"))
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ConfusionMatrixDisplay.from_predictions(
        y, (decision > 0).astype(int), display_labels=["non-responder", "responder"], ax=ax, colorbar=False
    )
    ax.set_title(f"{title}: discovery confusion matrix")
    paths.append(_save(fig, out / "confusion_matrix.png"))
    return paths


def regression_figures(
    observed: np.ndarray, predicted: np.ndarray, out: Path, title: str, cut: float | None
) -> list[Path]:
    """Observed vs out-of-fold ensemble prediction of a continuous outcome (:func:`predicted_vs_observed`)."""
    fig, ax = plt.subplots(figsize=(4.8, 4.5))
    predicted_vs_observed(observed, predicted, ax, "out-of-fold ensemble", cut)
    ax.set_title(f"{title}: discovery, predicted vs observed")
    ax.legend(loc="best", fontsize=8)
    return [_save(fig, out / "predicted_vs_observed.png")]


def optuna_figures(
    trials: pd.DataFrame, space: SearchSpace, out: Path, target: str = "inner BAC"
) -> list[Path]:
    """Optimisation history over all inner-loop studies (mean ± SD of the best value so far) and the
    parameter importances of the pooled trials (PED-ANOVA: milliseconds, where fANOVA's forest took ~25 s
    on the 3000 trials of the default analysis)."""
    # lazy: plotly, only for the MLflow figures
    from optuna.visualization import matplotlib as ovm

    studies = studies_from_trials(trials, space)
    paths = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        ax = ovm.plot_optimization_history(studies, error_bar=True, target_name=target)
        ax.set_title(f"Optimisation history of {len(studies)} inner-loop studies")
        paths.append(_save(ax.figure, out / "optuna_history.png"))
        if len(space.params) > 1:
            pooled = optuna.create_study(direction="maximize")
            pooled.add_trials([t for s in studies for t in s.trials])
            evaluator = optuna.importance.PedAnovaImportanceEvaluator()
            ax = ovm.plot_param_importances(pooled, evaluator=evaluator, target_name=target)
            ax.set_title("Hyperparameter importance (pooled trials, PED-ANOVA)")
            paths.append(_save(ax.figure, out / "optuna_param_importances.png"))
    return paths


def permutation_figure(
    null: np.ndarray, observed: float, out: Path, statistic: str = "mean_bac"
) -> list[Path]:
    """Histogram of the permutation null with the observed statistic, and the null as a table."""
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(null, bins=30, color="grey")
    ax.axvline(observed, color="crimson", label=f"observed {observed:.3f}")
    what = statistic.replace("mean_", "mean ").replace("_", " ").replace("bac", "BAC")
    ax.set(xlabel=f"{what} under permuted labels", ylabel="permutations", title="Permutation null")
    ax.legend()
    pd.DataFrame({statistic: null}).to_csv(out / "permutation_null.csv", index=False)
    return [_save(fig, out / "permutation_null.png"), out / "permutation_null.csv"]


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
