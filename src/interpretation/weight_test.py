"""Which features' weights are larger than chance: a label-permutation test of the fold models' weights.

The corrected CV-ratio treats the fold models as if they were independent samples; they share most of their
training subjects, so on the simulated default it selected 83 of 120 regions at q < 0.05. Here the null is
made by the procedure itself: the folds of the first CV repeat are refitted with their tuned parameters on
permuted labels (Mourão-Miranda et al. 2005; the tuning is not repeated, which keeps 1000 permutations to
seconds), and each feature's observed mean weight is compared with its null.

- Per fold, the preprocessing (residualise, scale, PCA) is fitted on the fold's training rows; it does not
  use the labels, so it is the same for every permutation, and so is the linear kernel of the transformed
  rows. Each permutation then fits a C-SVC on that kernel with the fold's ``C`` and ``class_weight``
  (libsvm, as the nested CV's engine calls it: ``src.validation.kernels.fit_svc``, tested equal to
  ``SVC(kernel="precomputed")``) and maps its weights back to the standardised features.
- Statistic: per feature, the mean over the folds of the unit-length standardised weight vector (scale-free
  across folds with different ``C``). Two-sided p = (1 + #{|null| >= |observed|}) / (1 + n), then
  Benjamini-Hochberg across features (``scipy.stats.false_discovery_control``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import false_discovery_control

from src.data.clinical import imputed_columns
from src.models.pipeline import build_pipeline, is_regressor
from src.validation.kernels import fit_dual
from src.validation.seeds import Stream, derive_seed


def first_repeat(fold_test_ids: Sequence[Sequence[str]]) -> int:
    """How many folds the first CV repeat has: the folds are stored repeat by repeat, each repeat's test
    parts covering every training subject once."""
    everyone = {subject for fold in fold_test_ids for subject in fold}
    seen: set[str] = set()
    for k, fold in enumerate(fold_test_ids, start=1):
        seen |= set(fold)
        if seen == everyone:
            return k
    return len(fold_test_ids)


class _Fold:
    """One fold's label-free part: the transformed training rows, their linear kernel and the map from the
    transformed space back to the standardised features."""

    def __init__(
        self,
        params: Mapping[str, Any],
        X: pd.DataFrame,
        y: np.ndarray,
        covariates: Sequence[str],
        categorical: Sequence[str],
    ) -> None:
        # the preprocessing steps only: the SVC is what each permutation refits
        features = [c for c in X.columns if c not in frozenset(covariates)]
        impute = imputed_columns(features)
        pipeline = build_pipeline(params, covariates, categorical, impute=impute)
        # a regressor's pipeline sits inside its target scaler (which the permutations' fit_dual redoes)
        steps = pipeline.regressor if is_regressor(params) else pipeline
        preprocessing = steps[:-1].fit(X, y)
        self.rows = preprocessing.transform(X)
        pca = preprocessing.named_steps["pca"]
        self.back = pca.components_ if hasattr(pca, "components_") else None
        self.kernel = self.rows @ self.rows.T
        keep = ("C", "class_weight", "tol", "estimator", "epsilon", "alpha")
        self.svc = {k: params[k] for k in keep if k in params}

    def weights(self, y: np.ndarray) -> np.ndarray:
        support, dual, _ = fit_dual(self.kernel, y.astype(float), self.svc)
        w = dual @ self.rows[support]
        if self.back is not None:
            w = w @ self.back
        norm = np.linalg.norm(w)
        return w / norm if norm > 0 else w


def weight_permutation_test(
    fold_params: Sequence[Mapping[str, Any]],
    fold_test_ids: Sequence[Sequence[str]],
    training: pd.DataFrame,
    feature_columns: Sequence[str],
    covariates: Sequence[str],
    categorical: Sequence[str],
    n_permutations: int,
    seed: int,
    target: str = "response",
) -> pd.DataFrame:
    """``feature``, ``weight_z`` (observed mean unit-length standardised weight over the first repeat's
    folds), ``p_perm`` and ``q_perm`` (Benjamini-Hochberg) of each feature.

    ``training``: the discovery table (``participant_id``, covariates, features, ``response``), in any row
    order; ``fold_params``/``fold_test_ids``: the locked model's folds (``EnsembleModel.info``), repeat by
    repeat. Permutation i's labels derive from (``seed``, i) only. ``target``: the column the fold models
    were trained on (``outcome`` for a regressor: its continuous outcome is what is permuted)."""
    k = first_repeat(fold_test_ids)
    ids = training["participant_id"].astype(str).to_numpy()
    y = training[target].to_numpy().astype(float if target == "outcome" else int)
    X = training[[*covariates, *feature_columns]]
    folds, rows = [], []
    for params, test_ids in zip(fold_params[:k], fold_test_ids[:k], strict=True):
        train = ~np.isin(ids, [str(t) for t in test_ids])
        folds.append(_Fold(params, X[train], y[train], covariates, categorical))
        rows.append(train)

    def statistic(labels: np.ndarray) -> np.ndarray:
        return np.mean([fold.weights(labels[train]) for fold, train in zip(folds, rows, strict=True)], axis=0)

    observed = statistic(y)
    exceed = np.zeros(len(observed))
    for i in range(n_permutations):
        labels = np.random.default_rng(derive_seed(seed, Stream.WEIGHT_PERMUTATION, i)).permutation(y)
        exceed += np.abs(statistic(labels)) >= np.abs(observed) - 1e-12  # ties count as extreme
    p = (1 + exceed) / (1 + n_permutations)
    return pd.DataFrame(
        {
            "feature": list(feature_columns),
            "weight_z": observed,
            "p_perm": p,
            "q_perm": false_discovery_control(p),
        }
    )
