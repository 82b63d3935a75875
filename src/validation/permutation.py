"""Label-permutation test of the whole nested-CV procedure (labels permuted, everything re-tuned)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from joblib import delayed
from sklearn.base import clone
from tqdm.auto import tqdm

from src.utils.logging import RateLines
from src.utils.parallel import run_parallel
from src.validation.checkpoints import read_records, record_appender
from src.validation.estimator import NestedCVClassifier
from src.validation.metrics import binary_metrics, permutation_p_value
from src.validation.nested_cv import CVConfig
from src.validation.regression import NestedCVRegressor
from src.validation.seeds import Stream, derive_seed


@dataclass
class PermutationResult:
    """Observed statistic, null distribution and p = (1 + #{null >= observed}) / (1 + n)."""

    statistic: str
    observed: float
    null: np.ndarray
    repeats: int
    resumed: int = 0  # permutations read from a checkpoint instead of computed

    @property
    def p_value(self) -> float:
        """``(1 + #{null >= observed}) / (1 + n)``."""
        return permutation_p_value(self.observed, self.null)

    def to_dict(self) -> dict[str, Any]:
        """The test as JSON (``metrics.json``'s ``permutation``): statistic, observed, n, p, null summary."""
        return {
            "statistic": self.statistic,
            "observed": self.observed,
            "n": int(len(self.null)),
            "repeats": self.repeats,
            "p_value": self.p_value,
            "null_mean": float(np.mean(self.null)) if len(self.null) else float("nan"),
            "null_q95": float(np.quantile(self.null, 0.95)) if len(self.null) else float("nan"),
        }


def _statistic(y: np.ndarray, decision: np.ndarray) -> float:

    return float(np.mean([binary_metrics(y, decision[:, r])["bac"] for r in range(decision.shape[1])]))


def fitted_statistic(estimator: Any, repeats: int | None = None) -> float:
    """The statistic of a fitted estimator over its first ``repeats`` repeats: the mean per-repeat BAC of a
    classifier; a regressor's own (:meth:`NestedCVRegressor.cv_statistic`, its objective)."""
    if isinstance(estimator, NestedCVRegressor):
        return estimator.cv_statistic(repeats)
    repeats = int(repeats or estimator.cv.repeats)
    return _statistic(estimator.result_.y, estimator.oof_decision_[:, :repeats])


def statistic_name(estimator: Any) -> str:
    """``mean_bac``, or ``mean_<objective>`` of a regressor."""
    return f"mean_{estimator.objective}" if isinstance(estimator, NestedCVRegressor) else "mean_bac"


def _labels(estimator: Any, y: Any) -> np.ndarray:
    # a classifier's labels are 0/1 integers; a regressor's outcome stays continuous
    return np.asarray(y, float) if isinstance(estimator, NestedCVRegressor) else np.asarray(y).astype(int)


def _one_permutation(estimator: NestedCVClassifier, X: pd.DataFrame, y: np.ndarray, i: int) -> float:
    """Permutation ``i``: the whole procedure refitted on labels permuted with a seed derived from
    (``random_state``, i) only, so any subset of permutations (a shard) gives the same values."""
    seed = int(estimator.random_state)
    y_perm = np.random.default_rng(derive_seed(seed, Stream.PERMUTATION, i)).permutation(y)
    fitted = clone(estimator).set_params(n_jobs=1, keep_models=False, checkpoint=None, progress=False)
    return fitted_statistic(fitted.fit(X, y_perm))


def permutation_values(
    estimator: NestedCVClassifier,
    X: pd.DataFrame,
    y: np.ndarray,
    indices: Sequence[int],
    *,
    progress: bool = False,
    checkpoint: str | Path | None = None,
    status_lines: bool = False,
) -> tuple[dict[int, float], int]:
    """The null statistic of each permutation in ``indices``: ``({index: value}, how many were read from
    the checkpoint)``. Each permutation is ``clone(estimator).fit(X, y_permuted)`` with the estimator's CV
    scheme (:func:`permutation_cv` gives one with fewer repeats); ``estimator.n_jobs`` workers run
    permutations side by side. ``progress``: a bar (a terminal); ``status_lines``: the rate and the
    estimated finish as status lines instead."""
    y = _labels(estimator, y)
    known = read_checkpoint(checkpoint)
    done = {i: known[i] for i in indices if i in known}
    todo = [i for i in indices if i not in done]
    jobs = (delayed(_one_permutation)(estimator, X, y, i) for i in todo)
    with (
        tqdm(
            total=len(indices), initial=len(done), desc="permutations", disable=not progress, leave=True
        ) as bar,
        record_appender(checkpoint) as record,
    ):
        lines = RateLines(len(indices), len(done), "permutations", enabled=status_lines and not progress)
        for i, value in zip(todo, run_parallel(jobs, estimator.n_jobs, shared=(X, y)), strict=True):
            done[i] = value
            record({"i": i, "value": value})
            bar.update()
            lines.update()
    return {i: done[i] for i in indices}, len(indices) - len(todo)


def permutation_cv(cv: CVConfig, repeats: int | None) -> CVConfig:
    """The CV scheme of each permutation: ``repeats`` (default: all of ``cv.repeats``) repeats of ``cv``."""
    repeats = int(repeats or cv.repeats)
    if repeats > cv.repeats:
        raise ValueError(f"permutation.repeats ({repeats}) exceeds cv.repeats ({cv.repeats})")
    return CVConfig(**{**cv.__dict__, "repeats": repeats})


def permuted_estimator(estimator: NestedCVClassifier, repeats: int | None) -> NestedCVClassifier:
    """An unfitted copy of ``estimator`` with the permutations' CV scheme (:func:`permutation_cv`)."""
    return clone(estimator).set_params(cv=permutation_cv(estimator.cv, repeats))


def observed_statistic(y: np.ndarray, observed_decision: np.ndarray, repeats: int) -> float:
    """The statistic of the real run that the null is compared with: mean BAC of its first ``repeats``
    repeats (the permutations use the same splits)."""
    return _statistic(np.asarray(y).astype(int), observed_decision[:, :repeats])


def permutation_test(
    estimator: NestedCVClassifier,
    X: pd.DataFrame,
    y: np.ndarray,
    n: int,
    *,
    repeats: int | None = None,
    checkpoint: str | Path | None = None,
    progress: bool = False,
    status_lines: bool = False,
) -> PermutationResult:
    """Permutation test of the mean per-repeat BAC (a regressor: its objective, e.g. the negative MAE) of
    repeated nested CV.

    Each permutation re-runs the whole procedure (splits, tuning, refit) on permuted labels with the same
    seeds: ``clone(estimator).fit(X, y_permuted)``. ``repeats`` (default: all of ``cv.repeats``) lets the
    null use fewer CV repeats; the observed statistic is then computed from the first ``repeats`` repeats of
    the real run, which use the same splits.

    Parameters
    ----------
    estimator : NestedCVClassifier
        Fitted on ``X``, ``y`` (its out-of-fold scores give the observed statistic); an unfitted one is
        fitted first, without keeping its models.
    X : DataFrame
        The data it was fitted on (covariates and features).
    y : array of {0, 1}
        The true labels.
    n : int
        Number of permutations.
    repeats : int, optional
        CV repeats per permutation.
    checkpoint : path, optional
        A JSON-lines file of finished permutations (``{"i": index, "value": statistic}``), appended as each
        one finishes. Permutations already in it are not recomputed: a run interrupted or crashed after k
        permutations resumes at k, with the same null distribution as an uninterrupted run (each
        permutation's labels and seeds derive from its index only). Its name should carry
        :func:`checkpoint_key` so that other data, settings or code never reuse it.
    progress, status_lines : bool
        A progress bar; or, without a terminal, status lines with the rate and the estimated finish.

    Returns
    -------
    PermutationResult
    """
    if not estimator.__sklearn_is_fitted__():
        estimator = clone(estimator).set_params(keep_models=False, checkpoint=None).fit(X, y)
    permuted = permuted_estimator(estimator, repeats)
    observed = fitted_statistic(estimator, permuted.cv.repeats)
    values, resumed = permutation_values(
        permuted, X, y, range(n), progress=progress, checkpoint=checkpoint, status_lines=status_lines
    )
    null = np.asarray([values[i] for i in range(n)])
    return PermutationResult(
        statistic=statistic_name(estimator),
        observed=observed,
        null=null,
        repeats=permuted.cv.repeats,
        resumed=resumed,
    )


def read_checkpoint(path: str | Path | None) -> dict[int, float]:
    """Finished permutations of a checkpoint file: ``{index: statistic}``."""
    done: dict[int, float] = {}
    for entry in read_records(path):
        try:
            done[int(entry["i"])] = float(entry["value"])
        except (ValueError, KeyError, TypeError):
            continue
    return done
