"""Late fusion: one nested-CV model per modality, combined by a logistic meta-learner inside every outer fold.

:class:`StackedNestedCV` is the stacking sibling of :class:`~src.validation.estimator.NestedCVClassifier`
(same settings, same engine). Its blocks are the imaging columns (covariates regressed out inside the folds)
and the clinical predictors (missing values imputed inside the folds). For every outer split (repeat r,
fold k), the same split for both blocks since the splits derive from the seed and labels only:

1. each block is tuned on the outer-training rows (its own Optuna study over the inner folds) and refitted on
   them; its tuned parameters' inner out-of-fold scores of the outer-training rows are kept
   (``run_nested_cv(inner_oof=True)``) — scores of rows the scoring model did not see, from the training
   part only, never from the outer-test rows;
2. the meta-learner — standardised block scores into an L2 logistic regression (balanced classes) whose C
   is chosen by ``GridSearchCV`` (log loss) over folds of the outer-training rows — is fitted on those
   scores of the outer-training rows;
3. the outer-test rows are scored once: the refitted blocks' decisions through the meta-learner.

A permutation of the whole fused procedure is ``clone(stack).fit(X, y_permuted)``, as for one block. With
linear blocks the fold's stacked decision is itself affine in the features and covariates
(``b0 + sum_b c_b (w_b . x_b - design . u_b + i_b)``), so each fold is locked as one
:class:`~src.models.linear.AffineDecision` over both blocks: the locked model, its file, weights, regional
tables, patient contributions and each modality's share are those of any linear model (tests/test_stacking.py
checks the affine form against the meta-learner's own scores).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, StratifiedKFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from src.data.clinical import imputed_columns
from src.models.linear import AffineDecision
from src.models.residualize import CovariateResidualizer
from src.models.search_space import default_search_space
from src.utils.errors import UserInputError
from src.validation.estimator import (
    DEFAULT_CATEGORICAL,
    DEFAULT_COVARIATES,
    DEFAULT_CV,
    NestedCVClassifier,
)
from src.validation.nested_cv import CVConfig, FoldResult, NestedCVResult, run_nested_cv
from src.validation.seeds import Stream, derive_seed

BLOCKS = ("imaging", "clinical")
DEFAULT_META_CS = (0.01, 0.1, 1.0, 10.0, 100.0)


class StackedNestedCV(NestedCVClassifier):
    """Repeated nested CV of one linear SVC per modality (imaging, clinical), stacked by a logistic
    meta-learner fitted inside every outer fold on the blocks' inner out-of-fold scores (module docstring).

    Parameters
    ----------
    search_space, cv, covariates, categorical, random_state, n_jobs, checkpoint, keep_models, progress
        See :class:`~src.validation.estimator.NestedCVBase`; ``search_space`` is each block's, ``covariates``
        the imaging block's.
    clinical_covariates : sequence of str
        Covariates regressed out of the clinical block (default none: the clinical predictors are used as
        they are); empty or equal to ``covariates``.
    meta_cs : sequence of float
        The inverse regularisation strengths the meta-learner chooses from (by inner CV, log loss).

    Attributes
    ----------
    block_results_ : dict of str to NestedCVResult
        Each block's own nested CV (its out-of-fold scores are the single-modality model's).
    meta_weights_ : DataFrame
        Per outer fold, the meta-learner's chosen C and its weight on each block's (standardised) score.
    result_, folds_, oof_decision_, ensemble_, coef_, ...
        As :class:`~src.validation.estimator.NestedCVClassifier`, for the stacked model.
    """

    def __init__(
        self,
        search_space: Any = None,
        cv: CVConfig = DEFAULT_CV,
        covariates: Sequence[str] = DEFAULT_COVARIATES,
        categorical: Sequence[str] = DEFAULT_CATEGORICAL,
        random_state: int = 0,
        n_jobs: int = 1,
        checkpoint: str | Path | None = None,
        keep_models: bool = True,
        progress: bool = False,
        clinical_covariates: Sequence[str] = (),
        meta_cs: Sequence[float] = DEFAULT_META_CS,
    ) -> None:
        super().__init__(
            search_space, cv, covariates, categorical, random_state, n_jobs, checkpoint, keep_models, progress
        )
        self.clinical_covariates = clinical_covariates
        self.meta_cs = meta_cs

    def _blocks(self, X: pd.DataFrame) -> dict[str, tuple[list[str], list[str], list[str]]]:
        """Block -> (feature columns, covariates, categorical covariates)."""
        covariates = list(self.covariates)
        features = [c for c in X.columns if c not in set(covariates)]
        clinical = imputed_columns(features)
        imaging = [c for c in features if c not in set(clinical)]
        if not clinical or not imaging:
            raise UserInputError(
                "a stacked model needs imaging and clinical columns; the table has "
                f"{len(imaging)} imaging and {len(clinical)} clinical (clin_*) feature columns"
            )
        extra = list(self.clinical_covariates)
        if extra and extra != covariates:
            raise UserInputError(
                f"clinical_covariates must be empty or the model's covariates {covariates}, got {extra}"
            )
        categorical = [c for c in self.categorical if c in extra]
        return {
            "imaging": (imaging, covariates, list(self.categorical)),
            "clinical": (clinical, extra, categorical),
        }

    def _lock(self, X: pd.DataFrame, info: dict[str, Any] | None) -> Any:
        # each block's columns and covariates: what the weight permutation test refits block by block
        blocks = {
            name: {"features": features, "covariates": covariates, "categorical": categorical}
            for name, (features, covariates, categorical) in self._blocks(X).items()
        }
        return super()._lock(X, {**(info or {}), "stack": {"blocks": blocks}})

    def _run(self, X: pd.DataFrame, y: np.ndarray, ids: Sequence[str] | None) -> NestedCVResult:
        space = self.search_space if self.search_space is not None else default_search_space()
        if space.fixed.get("kernel") != "linear" or "kernel" in space.params:
            raise UserInputError("a stacked model stacks linear SVC blocks (model.fixed.kernel: linear)")
        X = X.reset_index(drop=True)
        y = np.asarray(y).astype(int)
        self.block_results_ = {}
        for name, (features, covariates, categorical) in self._blocks(X).items():
            checkpoint = None
            if self.checkpoint is not None:
                path = Path(self.checkpoint)
                checkpoint = path.with_name(f"{path.stem}-{name}{path.suffix}")
            self.block_results_[name] = run_nested_cv(
                X[[*covariates, *features]],
                y,
                space,
                self.cv,
                int(self.random_state),
                covariates=covariates,
                categorical=categorical,
                ids=ids,
                n_jobs=self.n_jobs,
                progress=self.progress,
                keep_models=self.keep_models,
                checkpoint=checkpoint,
                inner_oof=True,
            )
        first = self.block_results_["imaging"]
        folds = [self._stack_fold(X, y, i) for i in range(len(first.folds))]
        self.meta_weights_ = pd.DataFrame(
            [
                {
                    "repeat": f.repeat,
                    "fold": f.fold,
                    **{k: v for k, v in f.best_params.items() if k.startswith("meta_")},
                }
                for f in folds
            ]
        )
        return dataclasses.replace(
            first,
            folds=folds,
            feature_columns=[c for c in X.columns if c not in set(self.covariates)],
            extra={"blocks": {name: result.feature_columns for name, result in self.block_results_.items()}},
        )

    def _stack_fold(self, X: pd.DataFrame, y: np.ndarray, i: int) -> FoldResult:
        parts = {name: result.folds[i] for name, result in self.block_results_.items()}
        first = parts["imaging"]
        train, test = first.train, first.test
        for part in parts.values():  # the blocks share the outer splits (seed and labels only)
            if not (np.array_equal(part.train, train) and np.array_equal(part.test, test)):
                raise RuntimeError("stacked blocks were split differently")
        train_scores = np.column_stack([parts[b].inner_decision for b in BLOCKS])
        test_scores = np.column_stack([parts[b].decision for b in BLOCKS])
        splitter = _meta_splitter(self.cv, int(self.random_state), first.repeat, first.fold)
        search = GridSearchCV(
            make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000)),
            {"logisticregression__C": [float(c) for c in self.meta_cs]},
            cv=splitter,
            scoring="neg_log_loss",
        ).fit(train_scores, y[train])
        scaler, logistic = search.best_estimator_[0], search.best_estimator_[-1]
        coef = logistic.coef_[0] / scaler.scale_  # per unit of each block's raw decision score
        offset = float(logistic.intercept_[0] - coef @ scaler.mean_)
        decision = test_scores @ coef + offset  # = meta.decision_function(test_scores)
        params: dict[str, Any] = {}
        for b in BLOCKS:
            params.update({f"{b}__{k}": v for k, v in parts[b].best_params.items()})
        params["meta_C"] = float(logistic.C)
        params.update({f"meta_weight_{b}": float(c) for b, c in zip(BLOCKS, logistic.coef_[0], strict=True)})
        kept = [p.trials.assign(block=b) for b, p in parts.items() if not p.trials.empty]
        trials = pd.concat(kept, ignore_index=True) if kept else pd.DataFrame()
        model = None
        if all(isinstance(parts[b].model, AffineDecision) for b in BLOCKS):
            model = _affine_stack(X, self.covariates, parts, coef, offset)
        return FoldResult(
            repeat=first.repeat,
            fold=first.fold,
            train=train,
            test=test,
            decision=decision,
            best_params=params,
            inner_best=float(np.mean([p.inner_best for p in parts.values()])),
            trials=trials,
            model=model,
            seconds=float(sum(p.seconds for p in parts.values())),
        )


def _meta_splitter(cv: CVConfig, seed: int, repeat: int, fold: int) -> StratifiedKFold:
    """The meta-learner's folds over an outer-training part: its own derived seed per (repeat, fold)."""
    seed = derive_seed(seed, Stream.META_SPLIT, repeat, fold)
    return StratifiedKFold(cv.inner_folds, shuffle=True, random_state=seed)


def _affine_stack(
    X: pd.DataFrame,
    covariates: Sequence[str],
    parts: dict[str, FoldResult],
    coef: np.ndarray,
    offset: float,
) -> AffineDecision:
    """One fold's stacked decision as one affine model over all feature columns of ``X``: each block's
    weights scaled by its meta weight, the covariate weights of the blocks that residualise added (they share
    the design: the same covariates and training rows), intercepts collected; the clinical block's
    imputation kept."""
    features = [c for c in X.columns if c not in set(covariates)]
    position = {c: j for j, c in enumerate(features)}
    weights = np.zeros(len(features))
    intercept = offset
    covariate_weights: np.ndarray | None = None
    design = None
    impute, fill = [], np.zeros(0)
    for c, b in zip(coef, BLOCKS, strict=True):
        model: AffineDecision = parts[b].model  # type: ignore[assignment]
        residualizer = model.residualizer
        weights[[position[name] for name in model.feature_columns]] += c * model.weights
        intercept += c * model.intercept
        if model.covariate_weights.size:
            covariate_weights = c * model.covariate_weights + (
                0 if covariate_weights is None else covariate_weights
            )
            design = residualizer
        if len(getattr(residualizer, "impute", ())):
            impute, fill = list(residualizer.impute), residualizer.fill_
    source = design or parts["imaging"].model.residualizer  # type: ignore[union-attr]
    stacked = CovariateResidualizer.from_parts(
        source.covariates,
        source.categorical,
        source.levels_,
        list(X.columns),
        impute_positions=[position[c] for c in impute],
        fill=fill,
        impute=impute,
    )
    return AffineDecision(
        weights,
        covariate_weights if covariate_weights is not None else np.zeros(0),
        float(intercept),
        stacked,
    )
