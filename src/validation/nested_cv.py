"""Repeated nested cross-validation with Optuna in the inner loop (NeuroMiner's CV2 x CV1, in Python).

For each repeat r and outer fold k (stratified): an Optuna study on the outer-training rows maximises the
mean balanced accuracy over stratified inner folds; the best parameters are refitted on all outer-training
rows and that pipeline scores the outer-test rows once. Nothing is fitted on rows outside the training
part of a split, in the inner loop or in the outer refit.

The fold loop is written out (not ``cross_val_predict(GridSearchCV)``) for speed: the residualiser and the
scaler do not depend on the SVC's hyperparameters, so they are fitted once per inner split and reused by
every trial, and PCA is fitted once per inner split with all components and truncated per trial. This is
exactly what a Pipeline refitted per trial computes (tests/test_nested_cv.py checks it against sklearn).
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
from joblib import delayed
from sklearn.model_selection import KFold, StratifiedKFold
from sklearn.pipeline import Pipeline
from threadpoolctl import ThreadpoolController
from tqdm.auto import tqdm

from src.config.settings import CVConfig
from src.data.clinical import imputed_columns, is_clinical_column
from src.models.linear import AffineDecision, compact
from src.models.pipeline import build_pipeline, is_regressor
from src.models.residualize import CovariateResidualizer
from src.models.search_space import SearchSpace, from_choice, to_choice
from src.utils.errors import UserInputError
from src.utils.parallel import run_parallel
from src.validation.checkpoints import read_records, record_appender
from src.validation.kernels import CovariateCodes, SplitKernel, fit_decision, linear_affine
from src.validation.metrics import (
    METRICS,
    REGRESSION_METRICS,
    REGRESSION_OBJECTIVES,
    binary_metrics,
    regression_metrics,
    regression_score,
)
from src.validation.seeds import Stream, derive_seed

log = logging.getLogger(__name__)
# ERROR: Optuna logs a trial stopped by Ctrl-C/SIGTERM ("Trial 3 failed ... KeyboardInterrupt") as a WARNING
# with a traceback, before the entry point's one line; a real error in a trial is re-raised by Optuna anyway
optuna.logging.set_verbosity(optuna.logging.ERROR)


@dataclass
class FoldResult:
    """One (repeat, outer fold): test rows, their scores, the tuned parameters and the study's trials."""

    repeat: int
    fold: int
    train: np.ndarray
    test: np.ndarray
    decision: np.ndarray
    best_params: dict[str, Any]
    inner_best: float
    trials: pd.DataFrame
    model: Pipeline | AffineDecision | None
    seconds: float
    # with inner_oof: the tuned model's inner out-of-fold scores of the training rows (in ``train`` order):
    # what a stacking meta-learner is fitted on, never on the outer-test rows
    inner_decision: np.ndarray | None = None


def check_class_sizes(y: np.ndarray, n_splits: int, where: str) -> None:
    """A clear error when a class is too small for stratified ``n_splits``-fold CV."""
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise UserInputError(
            f"{where}: only one class present (label {classes.tolist()}); cannot cross-validate"
        )
    if counts.min() < n_splits:
        small = classes[counts.argmin()]
        raise UserInputError(
            f"{where}: class {small} has {counts.min()} subject(s), fewer than the {n_splits} folds "
            "requested; lower the number of folds"
        )


def check_fold_sizes(y: np.ndarray, cv: CVConfig, where: str) -> None:
    """Before any work: the smaller class fills every outer fold and, within the smallest outer-training
    part, every inner fold (``cv.inner_folds=60`` fails here, not after a minute of tuning)."""
    check_class_sizes(y, cv.outer_folds, where)
    _, counts = np.unique(y, return_counts=True)
    smallest_train = int(counts.min() - np.ceil(counts.min() / cv.outer_folds))
    if smallest_train < cv.inner_folds:
        raise UserInputError(
            f"{where}: the smaller class has {counts.min()} subjects, {smallest_train} in the smallest "
            f"outer-training part, fewer than cv.inner_folds={cv.inner_folds}; lower cv.inner_folds"
        )


def check_continuous(y: np.ndarray, cv: CVConfig, where: str) -> None:
    """A continuous outcome: finite, not constant, and enough subjects for the outer and inner folds."""
    if not np.all(np.isfinite(y)):
        raise UserInputError(f"{where}: the continuous outcome has missing or infinite values")
    if np.ptp(y) == 0:
        raise UserInputError(f"{where}: the continuous outcome is constant ({y[0]:g}); nothing to predict")
    smallest_train = len(y) - int(np.ceil(len(y) / cv.outer_folds))
    if len(y) < cv.outer_folds or smallest_train < cv.inner_folds:
        raise UserInputError(
            f"{where}: {len(y)} subjects are too few for {cv.outer_folds} outer x {cv.inner_folds} inner "
            "folds; lower cv.outer_folds or cv.inner_folds"
        )


def _splitter(n_splits: int, seed: int, regression: bool) -> KFold | StratifiedKFold:
    # a continuous outcome has no classes to stratify on: shuffled KFold with the same derived seeds
    kind = KFold if regression else StratifiedKFold
    return kind(n_splits, shuffle=True, random_state=seed)


def outer_splits(
    y: np.ndarray, cv: CVConfig, seed: int, regression: bool = False
) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """(repeat, fold, train, test) of every outer split; repeat r shuffles with its own derived seed
    (stratified by class; plain shuffled K-fold for a continuous outcome)."""
    if regression:
        check_continuous(y, cv, "outer CV")
    else:
        check_class_sizes(y, cv.outer_folds, "outer CV")
    out = []
    for r in range(cv.repeats):
        splitter = _splitter(cv.outer_folds, derive_seed(seed, Stream.OUTER_SPLIT, r), regression)
        for k, (train, test) in enumerate(splitter.split(np.zeros(len(y)), y)):
            out.append((r, k, train, test))
    return out


def inner_splitter(cv: CVConfig, seed: int, repeat: int, regression: bool = False) -> KFold | StratifiedKFold:
    """The inner CV of every outer fold of repeat ``repeat``.

    One splitter per repeat (its folds still differ between outer folds, which hold different rows), so a
    repeat is exactly ``cross_val_predict(GridSearchCV(cv=inner_splitter(...)), cv=outer splits)``.
    """
    return _splitter(cv.inner_folds, derive_seed(seed, Stream.INNER_SPLIT, repeat), regression)


def make_sampler(cv: CVConfig, space: SearchSpace, seed: int) -> optuna.samplers.BaseSampler:
    """The Optuna sampler of ``cv.sampler`` (tpe, random or grid), seeded."""
    if cv.sampler == "grid":
        return optuna.samplers.GridSampler(space.grid(), seed=seed)
    if cv.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=cv.n_startup_trials)


class InnerKernels:
    """The inner splits of one outer-training part in kernel space (:mod:`src.validation.kernels`), shared
    by all trials of its study: preprocessing fitted once per split, each trial a kernel transform and a
    libsvm fit on the precomputed kernel."""

    def __init__(
        self,
        X: pd.DataFrame,
        y: np.ndarray,
        rows: np.ndarray,
        splitter: KFold | StratifiedKFold,
        covariates: Sequence[str],
        categorical: Sequence[str],
        use_pca: bool,
        objective: str = "balanced_accuracy",
        features: np.ndarray | None = None,
    ) -> None:
        """``X``, ``y``: all subjects; ``rows``: the outer-training part, split by ``splitter``;
        ``objective``: the score of each split (balanced accuracy, or a regression objective);
        ``features``: :func:`feature_matrix` of ``X`` when the caller has it already."""
        self.y, self.use_pca, self.objective = y, use_pca, objective
        self.features = feature_matrix(X, covariates) if features is None else features
        self.codes = CovariateCodes(X, covariates, categorical) if len(covariates) else None
        self.impute = impute_positions(X.columns.drop(list(covariates)))
        self.splits = [
            (
                rows[b],
                SplitKernel.build(
                    self.features, self.codes, y, rows[a], rows[b], use_pca, impute=self.impute
                ),
            )
            for a, b in splitter.split(np.zeros(len(rows)), y[rows])
        ]

    def outer_decision(self, train: np.ndarray, test: np.ndarray, params: dict[str, Any]) -> np.ndarray:
        """Decision scores of the outer-test rows by the pipeline with ``params`` refitted on the outer-
        training rows, computed in kernel space (equal to ``build_pipeline(params).fit(...)
        .decision_function(...)`` up to rounding; tests/test_nested_cv.py compares them)."""
        split = SplitKernel.build(
            self.features, self.codes, self.y, train, test, self.use_pca, impute=self.impute
        )
        n_components = None
        if split.cumulative_ratio is not None:
            n_components = _n_components(params, split.cumulative_ratio, len(split.cumulative_ratio))
        gram, cross = split.kernels(params, n_components)
        return fit_decision(gram, split.y, cross, params)

    def linear_refit(self, X: pd.DataFrame, train: np.ndarray, params: dict[str, Any]) -> AffineDecision:
        """The locked fold model of a linear SVC: :func:`affine_refit` on the outer-training rows."""
        return affine_refit(self.features, self.codes, self.y, train, params, X.columns)

    def _decisions(self, params: dict[str, Any]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """(test rows, decision scores of ``params``) of every inner split, from its cached kernels."""
        for test, split in self.splits:
            n_components = None
            if split.cumulative_ratio is not None:
                n_components = _n_components(params, split.cumulative_ratio, len(split.cumulative_ratio))
            gram, cross = split.kernels(params, n_components)
            yield test, fit_decision(gram, split.y, cross, params)

    def inner_decision(self, rows: np.ndarray, params: dict[str, Any]) -> np.ndarray:
        """The decision scores of ``params`` on every inner split's test rows, as one out-of-fold vector in
        the order of ``rows`` (the outer-training part the splits came from)."""
        out = np.full(len(self.y), np.nan)
        for test, decision in self._decisions(params):
            out[test] = decision
        return out[rows]

    def score(self, params: dict[str, Any]) -> list[float]:
        """The objective (balanced accuracy by default) of ``params`` on every inner split."""
        if self.objective != "balanced_accuracy":  # a regression objective, against the split's training mean
            return [
                regression_score(self.objective, self.y[test], predicted, float(split.y.mean()))
                for (test, predicted), (_, split) in zip(self._decisions(params), self.splits, strict=True)
            ]
        # as SVC.predict: libsvm's vote goes to class 1 unless its decision is > 0 for class 0
        return [
            balanced_accuracy(self.y[test], (decision >= 0).astype(int))
            for test, decision in self._decisions(params)
        ]


def affine_refit(
    features: np.ndarray,
    codes: CovariateCodes | None,
    y: np.ndarray,
    train: np.ndarray,
    params: dict[str, Any],
    columns: Sequence[str],
) -> AffineDecision:
    """The linear pipeline with ``params`` refitted on the ``train`` rows, in its exact affine form (what
    :meth:`AffineDecision.from_pipeline` gives for ``build_pipeline(params).fit(...)``, up to rounding:
    tests/test_nested_cv.py compares them), computed in kernel space: no SVD of the voxel matrix."""
    use_pca = any(params.get(p) is not None for p in ("pca_variance", "pca_components"))
    covariates = codes.covariates if codes is not None else ()
    feature_names = [c for c in columns if c not in frozenset(covariates)]
    impute = impute_positions(feature_names)
    split = SplitKernel.build(
        features, codes, y, train, train[:0], use_pca, keep_transform=True, impute=impute
    )
    n_components = None
    if split.cumulative_ratio is not None:
        n_components = _n_components(params, split.cumulative_ratio, len(split.cumulative_ratio))
    weights, covariate_weights, intercept = linear_affine(split, params, n_components)
    # only the design is kept, as in AffineDecision.from_pipeline
    design = CovariateResidualizer.from_parts(
        covariates,
        codes.categorical if codes is not None else (),
        codes.training_levels(train) if codes is not None else {},
        list(columns),
        impute_positions=impute,
        fill=split.transform["fill"],
        impute=[feature_names[i] for i in impute],
    )
    return AffineDecision(weights, covariate_weights, intercept, design)


def feature_matrix(X: pd.DataFrame, covariates: Sequence[str]) -> np.ndarray:
    """The feature columns of ``X`` (all but the covariates) as one array: float32 when every one of them is
    (a voxel table's stored type; :meth:`SplitKernel.build` casts each block to float64, exactly), else
    float64 — a float64 copy of a 2 mm voxel table would be 145 MB more in every worker."""
    features = X.iloc[:, np.flatnonzero(~X.columns.isin(list(covariates)))]  # X.drop checks 181 k labels
    dtype = np.float32 if len(features.columns) and (features.dtypes == np.float32).all() else float
    # row-major: the splits gather rows (a voxel table is read column-major, which made that a transpose)
    return np.ascontiguousarray(features.to_numpy(dtype=dtype))


def impute_positions(columns: Sequence[str]) -> np.ndarray:
    """Positions of :func:`imputed_columns` among the feature ``columns``."""
    return np.asarray([i for i, c in enumerate(columns) if is_clinical_column(c)], dtype=np.intp)


def _imputed(X: pd.DataFrame, covariates: Sequence[str]) -> list[str]:
    return imputed_columns([c for c in X.columns if c not in frozenset(covariates)])


def balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Balanced accuracy of 0/1 labels, computed as sklearn's ``balanced_accuracy_score`` does (mean of the
    per-class recalls of the confusion matrix; a class absent from ``y_true`` left out), without its input
    checks: this runs once per inner fold per trial, 1500 times a permutation, where sklearn's checks took
    ~30x the arithmetic and a vectorised numpy version still ~10x this one (the counts in two bincounts, the
    mean of two numbers in Python: the same floating-point operations as ``np.mean``). tests/test_nested_cv.py
    checks equality with sklearn."""
    y_true = np.asarray(y_true).astype(np.intp, copy=False)
    c0, c1 = np.bincount(y_true, minlength=2).tolist()
    h0, h1 = np.bincount(y_true[y_true == y_pred], minlength=2).tolist()
    if c0 and c1:
        return (h0 / c0 + h1 / c1) / 2
    return h0 / c0 if c0 else h1 / c1


def _n_components(params: dict[str, Any], cumsum: np.ndarray, available: int) -> int:
    """Components sklearn's PCA keeps for ``pca_variance`` (its ``_fit_full`` rule) or ``pca_components``."""
    if params.get("pca_variance") is not None:
        return int(min(np.searchsorted(cumsum, float(params["pca_variance"]), side="right") + 1, available))
    return int(min(int(params["pca_components"]), available))


TIE_BREAK = ("C", "gamma", "pca_variance", "pca_components")


def objective_of(space: SearchSpace, objective: str = "auto") -> str:
    """The inner objective: ``objective``, or with ``"auto"`` balanced accuracy for a classifier and the
    negative MAE for a regressor; a classification objective for a regressor (or the reverse) is refused."""
    regression = is_regressor(space.fixed)
    if "estimator" in space.params:
        raise UserInputError("model.search_space: 'estimator' cannot be tuned; fix it under model.fixed")
    if objective == "auto":
        return "neg_mae" if regression else "balanced_accuracy"
    if regression and objective not in REGRESSION_OBJECTIVES:
        raise UserInputError(
            f"model.objective={objective!r} is for classifiers; a regressor takes one of "
            f"{REGRESSION_OBJECTIVES}"
        )
    if not regression and objective != "balanced_accuracy":
        raise UserInputError(
            f"model.objective={objective!r} needs a regression model (model.fixed.estimator)"
        )
    return objective


def select_best(trials: Sequence[optuna.trial.FrozenTrial]) -> optuna.trial.FrozenTrial:
    """Best trial: highest inner score; ties go to the most regularised model (smallest C, then smallest
    gamma, then fewest PCA components/variance), then to the earliest trial."""
    finished = [t for t in trials if t.value is not None]
    top = max(t.value for t in finished)
    best = [t for t in finished if t.value == top]
    tuned = [name for name in TIE_BREAK if any(name in t.params for t in best)]
    return min(best, key=lambda t: (*(t.params.get(name, np.inf) for name in tuned), t.number))


_THREADS = None


def _single_threaded_blas(function: Any) -> Any:
    """Run ``function`` with one BLAS thread: a fold's matrices are small (~100 rows), where threads cost
    more than they bring, and two workers with two threads each would oversubscribe the cores."""

    @functools.wraps(function)
    def limited(*args: Any, **kwargs: Any) -> Any:
        global _THREADS
        if _THREADS is None:
            _THREADS = ThreadpoolController()
        with _THREADS.limit(limits=1, user_api="blas"):
            return function(*args, **kwargs)

    return limited


@_single_threaded_blas
def fit_outer_fold(
    X: pd.DataFrame,
    y: np.ndarray,
    repeat: int,
    fold: int,
    train: np.ndarray,
    test: np.ndarray,
    space: SearchSpace,
    cv: CVConfig,
    seed: int,
    covariates: Sequence[str],
    categorical: Sequence[str],
    keep_model: bool = True,
    inner_oof: bool = False,
    objective: str = "auto",
    features: np.ndarray | None = None,
) -> FoldResult:
    """Tune on the outer-training rows (Optuna over inner CV), refit, score the outer-test rows once.

    ``keep_model`` keeps the refitted model and the table of trials (a permutation needs neither);
    ``inner_oof`` also returns the tuned parameters' inner out-of-fold scores of the training rows;
    ``objective``: :func:`objective_of` (a regressor's scores are its predicted outcomes); ``features``:
    :func:`feature_matrix` of ``X``, computed once by :func:`run_nested_cv` for all its folds (for a 2 mm
    voxel table that was 10 % of a fold's time)."""
    start = time.perf_counter()
    y_train = y[train]
    objective = objective_of(space, objective)
    regression = objective != "balanced_accuracy"
    if not regression:
        check_class_sizes(y_train, cv.inner_folds, f"inner CV of repeat {repeat}, fold {fold}")
    uses_pca = any(p in space.params or p in space.fixed for p in ("pca_variance", "pca_components"))
    splitter = inner_splitter(cv, seed, repeat, regression)
    cache = InnerKernels(X, y, train, splitter, covariates, categorical, uses_pca, objective, features)

    def objective(trial: optuna.Trial) -> float:
        scores = cache.score(space.suggest(trial))
        trial.set_user_attr("inner_scores", scores)
        return float(np.mean(scores))

    sampler = make_sampler(cv, space, derive_seed(seed, Stream.SAMPLER, repeat, fold))
    study = optuna.create_study(direction="maximize", sampler=sampler)
    n_trials = min(cv.n_trials, space.grid_size()) if cv.sampler == "grid" else cv.n_trials
    study.optimize(objective, n_trials=n_trials)
    # the study's own trial objects: `study.trials` deep-copies all of them (~4 % of a permutation's time)
    best = select_best(study.get_trials(deepcopy=False))
    best_params = {**space.fixed, **{name: _py(best.params[name]) for name in space.params}}
    best_params = {k: from_choice(v) for k, v in best_params.items()}
    trials = pd.DataFrame()
    model = None
    if keep_model and best_params.get("kernel") == "linear":
        # the locked fold model: the exact affine form of the refitted pipeline, derived in kernel space
        model = cache.linear_refit(X, train, best_params)
        decision = model.decision_function(X.iloc[test], cache.features[test])
    elif keep_model:  # other kernels keep the fitted pipeline itself
        model = build_pipeline(best_params, covariates, categorical, impute=_imputed(X, covariates)).fit(
            X.iloc[train], y_train
        )
        decision = model.decision_function(X.iloc[test])
    else:  # a permutation needs only the outer-test scores: the same refit, in kernel space
        decision = cache.outer_decision(train, test, best_params)
    if keep_model:
        trials = study.trials_dataframe(attrs=("number", "value", "params", "duration", "user_attrs"))
        trials["duration"] = trials["duration"].dt.total_seconds()
        trials.insert(0, "fold", fold)
        trials.insert(0, "repeat", repeat)
    return FoldResult(
        repeat=repeat,
        fold=fold,
        train=train,
        test=test,
        decision=np.asarray(decision, float),
        best_params=best_params,
        inner_best=float(best.value),
        trials=trials,
        # the locked model keeps linear pipelines in their exact affine form (small; the weights are explicit)
        model=compact(model) if isinstance(model, Pipeline) else model,
        seconds=time.perf_counter() - start,
        inner_decision=cache.inner_decision(train, best_params) if inner_oof else None,
    )


def _share_feature_names(model: Any, names: np.ndarray, feature_columns: list[str]) -> None:
    """Let a linear fold model's design hold the run's one copy of the column names. Each fold model comes
    back from its worker with its own copy (for a 2 mm voxel table 181 k strings, ~14 MB: 1.4 GB over 100 fold
    models, in the process that then builds the ensemble)."""
    design = model.residualizer if isinstance(model, AffineDecision) else None
    if design is None or design.feature_names_in_ is names:
        return
    if np.array_equal(design.feature_names_in_, names) and design.feature_columns_ == feature_columns:
        design.feature_names_in_, design.feature_columns_ = names, feature_columns


def _py(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def fold_record(fold: FoldResult) -> dict[str, Any]:
    """A finished outer fold as JSON (for checkpoints): everything but the fitted model, which is refitted
    from ``best_params`` on resume (one fit, instead of the whole Optuna study)."""
    return {
        "repeat": fold.repeat,
        "fold": fold.fold,
        "decision": fold.decision,
        "best_params": fold.best_params,
        "inner_best": fold.inner_best,
        "trials": {"columns": list(fold.trials.columns), "rows": fold.trials.to_numpy(dtype=object).tolist()},
        "seconds": fold.seconds,
        **({"inner_decision": fold.inner_decision} if fold.inner_decision is not None else {}),
    }


def fold_from_record(
    record: dict[str, Any],
    X: pd.DataFrame,
    y: np.ndarray,
    train: np.ndarray,
    test: np.ndarray,
    covariates: Sequence[str],
    categorical: Sequence[str],
    keep_model: bool,
) -> FoldResult:
    """The :class:`FoldResult` of a checkpointed fold; its model refitted with the recorded parameters (the
    fit is deterministic, so the model is the one the uninterrupted run kept)."""
    model: Any = None
    params = dict(record["best_params"])
    if keep_model and params.get("kernel") == "linear":  # refitted as fit_outer_fold does
        features = feature_matrix(X, covariates)
        codes = CovariateCodes(X, covariates, categorical) if len(covariates) else None
        model = affine_refit(features, codes, y, train, params, X.columns)
    elif keep_model:
        pipeline = build_pipeline(params, covariates, categorical, impute=_imputed(X, covariates))
        model = compact(pipeline.fit(X.iloc[train], y[train]))
    decision = np.asarray(record["decision"], dtype=float)
    if decision.shape != (len(test),):
        raise ValueError(f"checkpointed fold {record['repeat']}/{record['fold']} does not match its split")
    return FoldResult(
        repeat=int(record["repeat"]),
        fold=int(record["fold"]),
        train=train,
        test=test,
        decision=decision,
        best_params=dict(record["best_params"]),
        inner_best=float(record["inner_best"]),
        trials=pd.DataFrame(record["trials"]["rows"], columns=record["trials"]["columns"]),
        model=model,
        seconds=float(record["seconds"]),
        inner_decision=np.asarray(record["inner_decision"], dtype=float)
        if "inner_decision" in record
        else None,
    )


@dataclass
class NestedCVResult:
    """Everything a repeated nested CV produced.

    Attributes
    ----------
    ids : list of str
        Subject identifiers, in the order of ``y``.
    y : ndarray
        Labels (1 = positive class).
    folds : list of FoldResult
        One per (repeat, outer fold), in that order.
    cv, seed : the scheme and the run seed.
    feature_columns, covariates, categorical : the model's inputs.
    """

    ids: list[str]
    y: np.ndarray
    folds: list[FoldResult]
    cv: CVConfig
    seed: int
    feature_columns: list[str]
    covariates: list[str]
    categorical: list[str]
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def oof(self) -> pd.DataFrame:
        """Out-of-fold decision scores and predictions: one row per subject x repeat."""
        rows = []
        for f in self.folds:
            rows.append(
                pd.DataFrame(
                    {
                        "participant_id": np.asarray(self.ids)[f.test],
                        "repeat": f.repeat,
                        "fold": f.fold,
                        "y_true": self.y[f.test],
                        "decision": f.decision,
                        "prediction": (f.decision > 0).astype(int),
                    }
                )
            )
        return pd.concat(rows, ignore_index=True).sort_values(["repeat", "participant_id"], ignore_index=True)

    def decision_matrix(self) -> np.ndarray:
        """(n_subjects, repeats) out-of-fold decision scores."""
        out = np.full((len(self.y), self.cv.repeats), np.nan)
        for f in self.folds:
            out[f.test, f.repeat] = f.decision
        return out

    def per_repeat(self) -> pd.DataFrame:
        """Metrics of each repeat's out-of-fold predictions."""
        scores = self.decision_matrix()
        return pd.DataFrame(
            [{"repeat": r, **binary_metrics(self.y, scores[:, r])} for r in range(self.cv.repeats)]
        )

    def ensemble_scores(self) -> np.ndarray:
        """Mean out-of-fold decision score per subject across repeats (NeuroMiner's reporting)."""
        return self.decision_matrix().mean(axis=1)

    def ensemble_metrics(self) -> dict[str, float]:
        """Metrics of :meth:`ensemble_scores` (the mean out-of-fold score per subject)."""
        return binary_metrics(self.y, self.ensemble_scores())

    def summary(self) -> dict[str, Any]:
        """Ensemble metrics, and the mean, SD and 2.5-97.5 % range of per-repeat metrics."""
        return self._summary(METRICS)

    def _summary(self, metrics: Sequence[str]) -> dict[str, Any]:
        per = self.per_repeat()
        out: dict[str, Any] = {"ensemble": self.ensemble_metrics(), "repeats": {}}
        for metric in metrics:
            values = per[metric].to_numpy()
            out["repeats"][metric] = {
                "mean": float(np.nanmean(values)),
                "sd": float(np.nanstd(values, ddof=1)) if len(values) > 1 else 0.0,
                "q025": float(np.nanpercentile(values, 2.5)),
                "q975": float(np.nanpercentile(values, 97.5)),
            }
        return out

    def fold_table(self) -> pd.DataFrame:
        """Per outer fold: sizes, best parameters, inner best BAC, outer-fold metrics, time."""
        rows = []
        for f in self.folds:
            metrics = binary_metrics(self.y[f.test], f.decision)
            rows.append(
                {
                    "repeat": f.repeat,
                    "fold": f.fold,
                    "n_train": len(f.train),
                    "n_test": len(f.test),
                    **{f"best_{k}": to_choice(v) for k, v in f.best_params.items()},
                    "inner_best_bac": f.inner_best,
                    **{f"outer_{k}": v for k, v in metrics.items()},
                    "seconds": f.seconds,
                }
            )
        return pd.DataFrame(rows)

    def trials(self) -> pd.DataFrame:
        """Every trial of every study: repeat, fold, number, value (mean inner BAC), params, duration."""
        return pd.concat([f.trials for f in self.folds], ignore_index=True)

    @property
    def models(self) -> list[Pipeline | AffineDecision]:
        """The kept outer-fold models, in fold order."""
        return [f.model for f in self.folds if f.model is not None]


class RegressionCVResult(NestedCVResult):
    """:class:`NestedCVResult` of a continuous outcome: ``y`` is the outcome, each fold's ``decision`` its
    predicted outcome, and the metrics are :func:`~src.validation.metrics.regression_metrics` — R² against
    each subject's training-fold mean (per repeat: that repeat's fold; for the ensemble: the mean over
    repeats), Pearson/Spearman r, MAE, RMSE, and with ``extra["responder_cut"]`` the BAC & co. of the
    thresholded predictions."""

    @property
    def responder_cut(self) -> float | None:
        """The outcome's responder threshold (None: not reported)."""
        return self.extra.get("responder_cut")

    @property
    def objective(self) -> str:
        """The inner loop's objective."""
        return str(self.extra.get("objective", "neg_mae"))

    def metric_names(self) -> tuple[str, ...]:
        """The reported metrics, in order."""
        return REGRESSION_METRICS + (METRICS if self.responder_cut is not None else ())

    def training_means(self) -> np.ndarray:
        """(n_subjects, repeats): the mean outcome of the outer-training rows of each subject's test fold."""
        out = np.full((len(self.y), self.cv.repeats), np.nan)
        for f in self.folds:
            out[f.test, f.repeat] = float(self.y[f.train].mean())
        return out

    @property
    def oof(self) -> pd.DataFrame:
        """Out-of-fold predictions: one row per subject x repeat (``prediction``: the predicted outcome,
        ``training_mean``: the mean outcome of the rows its fold model was trained on)."""
        rows = [
            pd.DataFrame(
                {
                    "participant_id": np.asarray(self.ids)[f.test],
                    "repeat": f.repeat,
                    "fold": f.fold,
                    "y_true": self.y[f.test],
                    "prediction": f.decision,
                    "training_mean": float(self.y[f.train].mean()),
                }
            )
            for f in self.folds
        ]
        return pd.concat(rows, ignore_index=True).sort_values(["repeat", "participant_id"], ignore_index=True)

    def _metrics(self, truth: np.ndarray, predicted: np.ndarray, reference: np.ndarray) -> dict[str, float]:
        return regression_metrics(truth, predicted, reference, self.responder_cut)

    def per_repeat(self) -> pd.DataFrame:
        """Metrics of each repeat's out-of-fold predictions."""
        scores, means = self.decision_matrix(), self.training_means()
        return pd.DataFrame(
            [
                {"repeat": r, **self._metrics(self.y, scores[:, r], means[:, r])}
                for r in range(self.cv.repeats)
            ]
        )

    def ensemble_metrics(self) -> dict[str, float]:
        """Metrics of the mean out-of-fold prediction per subject (reference: the mean training mean)."""
        return self._metrics(self.y, self.ensemble_scores(), self.training_means().mean(axis=1))

    def summary(self) -> dict[str, Any]:
        """Ensemble metrics, and the mean, SD and 2.5-97.5 % range of per-repeat metrics."""
        return self._summary(self.metric_names())

    def fold_table(self) -> pd.DataFrame:
        """Per outer fold: sizes, best parameters, best inner objective, outer-fold metrics, time."""
        rows = []
        for f in self.folds:
            metrics = regression_metrics(self.y[f.test], f.decision, float(self.y[f.train].mean()))
            rows.append(
                {
                    "repeat": f.repeat,
                    "fold": f.fold,
                    "n_train": len(f.train),
                    "n_test": len(f.test),
                    **{f"best_{k}": to_choice(v) for k, v in f.best_params.items()},
                    f"inner_best_{self.objective}": f.inner_best,
                    **{f"outer_{k}": v for k, v in metrics.items()},
                    "seconds": f.seconds,
                }
            )
        return pd.DataFrame(rows)


def run_nested_cv(
    X: pd.DataFrame,
    y: np.ndarray,
    space: SearchSpace,
    cv: CVConfig,
    seed: int,
    *,
    covariates: Sequence[str] = ("age", "sex", "tiv", "site"),
    categorical: Sequence[str] = ("sex", "site"),
    ids: Sequence[str] | None = None,
    n_jobs: int = 1,
    progress: bool = False,
    keep_models: bool = True,
    checkpoint: str | Path | None = None,
    inner_oof: bool = False,
    objective: str = "auto",
    responder_cut: float | None = None,
) -> NestedCVResult:
    """Run repeated nested CV.

    Parameters
    ----------
    X : DataFrame
        Covariate columns and feature columns (covariates are consumed by the residualiser).
    y : array of {0, 1}
        Labels, 1 = the positive class.
    space : SearchSpace
        The inner loop's Optuna search space and fixed parameters.
    cv : CVConfig
        Repeats, outer and inner folds, trials, sampler.
    seed : int
        Run seed; splits and samplers derive their seeds from it and the (repeat, fold) coordinates.
    covariates, categorical : sequence of str
        Covariate columns of ``X`` regressed out inside every training split; those coded as categories.
    ids : sequence of str, optional
        Subject identifiers in the order of ``y`` (default: row numbers).
    n_jobs : int
        Workers over outer folds; results are identical for any value.
    progress : bool
        Show a progress bar over outer folds.
    keep_models : bool
        Keep the R x K fitted pipelines (needed for the final ensemble; not for permutations).
    checkpoint : path, optional
        A JSON-lines file of finished outer folds (:func:`fold_record`), appended as each finishes. Folds
        already in it are not tuned again (their models are refitted from the recorded parameters): a run
        interrupted after k folds resumes at k with the same results. Its name should carry
        :func:`~src.validation.checkpoints.checkpoint_key` of the data, labels, settings, seed and code.
    inner_oof : bool
        Also keep each fold's inner out-of-fold scores of its training rows (``FoldResult.inner_decision``):
        what a stacking meta-learner learns from (:class:`~src.validation.stacking.StackedNestedCV`).
    objective : str
        The inner loop's objective (:func:`objective_of`); a regression model (``estimator: svr`` or
        ``kernel_ridge`` in ``space.fixed``) takes a continuous ``y`` and gives a :class:`RegressionCVResult`.
    responder_cut : float, optional
        A continuous outcome's responder threshold: the result also reports the BAC & co. of the
        thresholded predictions.
    """
    objective = objective_of(space, objective)
    regression = objective != "balanced_accuracy"
    y = np.asarray(y, dtype=float) if regression else np.asarray(y).astype(int)
    if len(X) != len(y):
        raise ValueError(f"X has {len(X)} rows but y has {len(y)}")
    X = X.reset_index(drop=True)
    splits = outer_splits(y, cv, seed, regression)
    done = {
        (int(rec["repeat"]), int(rec["fold"])): rec
        for rec in read_records(checkpoint)
        if "trials" in rec and (not inner_oof or "inner_decision" in rec)
    }
    todo = [split for split in splits if split[:2] not in done]
    features = feature_matrix(X, covariates)  # once for all folds (shared with the workers, not copied)
    jobs = (
        delayed(fit_outer_fold)(
            X,
            y,
            r,
            k,
            train,
            test,
            space,
            cv,
            seed,
            covariates,
            categorical,
            keep_models,
            inner_oof,
            objective,
            features,
        )
        for r, k, train, test in todo
    )
    finished: dict[tuple[int, int], FoldResult] = {}
    names = np.asarray(X.columns, dtype=object)
    feature_columns = X.columns.drop(list(covariates)).tolist()
    with (
        tqdm(
            total=len(splits),
            initial=len(splits) - len(todo),
            desc="outer folds",
            disable=not progress,
            leave=True,
        ) as bar,
        record_appender(checkpoint) as append,
    ):
        for fold in run_parallel(jobs, n_jobs, shared=(X, y, features)):
            _share_feature_names(fold.model, names, feature_columns)
            finished[fold.repeat, fold.fold] = fold
            append(fold_record(fold))
            bar.update()
    for r, k, train, test in splits:
        if (r, k) in done:
            finished[r, k] = fold_from_record(
                done[r, k], X, y, train, test, covariates, categorical, keep_models
            )
    folds = [finished[r, k] for r, k, _, _ in splits]
    extra: dict[str, Any] = {"resumed_folds": len(splits) - len(todo)}
    if regression:
        extra.update(objective=objective, responder_cut=responder_cut)
    return (RegressionCVResult if regression else NestedCVResult)(
        ids=list(ids) if ids is not None else [str(i) for i in range(len(y))],
        y=y,
        folds=folds,
        cv=cv,
        seed=seed,
        feature_columns=feature_columns,
        covariates=list(covariates),
        categorical=list(categorical),
        extra=extra,
    )
