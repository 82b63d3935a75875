"""Label-permutation test of the whole nested-CV procedure (labels permuted, everything re-tuned)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from joblib import delayed

from src.models.search_space import SearchSpace
from src.utils.logging import RateLines
from src.utils.parallel import run_parallel
from src.validation.checkpoints import read_records, record_appender
from src.validation.metrics import permutation_p_value
from src.validation.nested_cv import CVConfig, run_nested_cv
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
        return permutation_p_value(self.observed, self.null)

    def to_dict(self) -> dict[str, Any]:
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
    from src.validation.metrics import binary_metrics

    return float(np.mean([binary_metrics(y, decision[:, r])["bac"] for r in range(decision.shape[1])]))


def _one_permutation(
    X: pd.DataFrame,
    y: np.ndarray,
    space: SearchSpace,
    cv: CVConfig,
    seed: int,
    i: int,
    covariates: Sequence[str],
    categorical: Sequence[str],
) -> float:
    y_perm = np.random.default_rng(derive_seed(seed, Stream.PERMUTATION, i)).permutation(y)
    result = run_nested_cv(
        X,
        y_perm,
        space,
        cv,
        seed,
        covariates=covariates,
        categorical=categorical,
        n_jobs=1,
        keep_models=False,
    )
    return _statistic(y_perm, result.decision_matrix())


def permutation_values(
    X: pd.DataFrame,
    y: np.ndarray,
    space: SearchSpace,
    cv: CVConfig,
    seed: int,
    indices: Sequence[int],
    *,
    covariates: Sequence[str] = ("age", "sex", "tiv", "site"),
    categorical: Sequence[str] = ("sex", "site"),
    n_jobs: int = 1,
    progress: bool = False,
    checkpoint: str | Path | None = None,
    status_lines: bool = False,
) -> tuple[dict[int, float], int]:
    """The null statistic of each permutation in ``indices`` (``cv`` already holds the permutation's
    repeats): ``({index: value}, how many were read from the checkpoint)``. Permutation i's labels and seeds
    derive from (seed, i) only, so any subset (a shard) gives the same values as a full run. ``progress``:
    a bar (a terminal); ``status_lines``: the rate and the estimated finish as status lines instead."""
    from tqdm.auto import tqdm

    y = np.asarray(y).astype(int)
    known = read_checkpoint(checkpoint)
    done = {i: known[i] for i in indices if i in known}
    todo = [i for i in indices if i not in done]
    jobs = (delayed(_one_permutation)(X, y, space, cv, seed, i, covariates, categorical) for i in todo)
    with (
        tqdm(
            total=len(indices), initial=len(done), desc="permutations", disable=not progress, leave=True
        ) as bar,
        record_appender(checkpoint) as record,
    ):
        lines = RateLines(len(indices), len(done), "permutations", enabled=status_lines and not progress)
        for i, value in zip(todo, run_parallel(jobs, n_jobs, shared=(X, y)), strict=True):
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


def observed_statistic(y: np.ndarray, observed_decision: np.ndarray, repeats: int) -> float:
    """The statistic of the real run that the null is compared with: mean BAC of its first ``repeats``
    repeats (the permutations use the same splits)."""
    return _statistic(np.asarray(y).astype(int), observed_decision[:, :repeats])


def permutation_test(
    X: pd.DataFrame,
    y: np.ndarray,
    space: SearchSpace,
    cv: CVConfig,
    seed: int,
    n: int,
    *,
    observed_decision: np.ndarray,
    covariates: Sequence[str] = ("age", "sex", "tiv", "site"),
    categorical: Sequence[str] = ("sex", "site"),
    repeats: int | None = None,
    n_jobs: int = 1,
    progress: bool = False,
    checkpoint: str | Path | None = None,
    status_lines: bool = False,
) -> PermutationResult:
    """Permutation test of the mean per-repeat BAC of repeated nested CV.

    Each permutation re-runs the whole procedure (splits, tuning, refit) on permuted labels with the same
    seeds. ``repeats`` (default: all of ``cv.repeats``) lets the null use fewer CV repeats; the observed
    statistic is then computed from the first ``repeats`` repeats of the real run, which use the same splits.

    Parameters
    ----------
    observed_decision : ndarray (n_subjects, cv.repeats)
        Out-of-fold decision scores of the real run (:meth:`NestedCVResult.decision_matrix`).
    checkpoint : path, optional
        A JSON-lines file of finished permutations (``{"i": index, "value": statistic}``), appended as each
        one finishes. Permutations already in it are not recomputed: a run interrupted or crashed after k
        permutations resumes at k, with the same null distribution as an uninterrupted run (each
        permutation's labels and seeds derive from its index only). Its name should carry
        :func:`checkpoint_key` so that other data, settings or code never reuse it.
    """
    cv_perm = permutation_cv(cv, repeats)
    observed = observed_statistic(y, observed_decision, cv_perm.repeats)
    values, resumed = permutation_values(
        X,
        y,
        space,
        cv_perm,
        seed,
        range(n),
        covariates=covariates,
        categorical=categorical,
        n_jobs=n_jobs,
        progress=progress,
        checkpoint=checkpoint,
        status_lines=status_lines,
    )
    null = np.asarray([values[i] for i in range(n)])
    return PermutationResult(
        statistic="mean_bac", observed=observed, null=null, repeats=cv_perm.repeats, resumed=resumed
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
