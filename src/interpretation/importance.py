"""Which features drive the locked model: fold-weight summaries of linear models, out-of-fold permutation
importance of the others."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from sklearn.inspection import permutation_importance

from src.interpretation.regions import read_feature_regions, weight_summary
from src.interpretation.weight_test import weight_permutation_test
from src.utils.logging import status
from src.validation.ensemble import EnsembleModel

FDR = 0.05  # the false-discovery rate of the regions called selected


def test_fraction(model: EnsembleModel) -> float | None:
    """Mean share of the training subjects in an outer test fold (1/K), from the fold models' test ids."""
    folds = model.info.get("fold_test_ids")
    if not folds:
        return None
    n = len({subject for fold in folds for subject in fold})
    return float(np.mean([len(fold) for fold in folds])) / n


def model_regions(
    model: EnsembleModel,
    training: pd.DataFrame,
    features_dir: str | Path,
    n_permutations: int = 0,
    seed: int = 0,
) -> pd.DataFrame | None:
    """The weight summary of a linear ensemble (:func:`weight_summary`, with corrected CVR when the fold
    test ids are known); None for other kernels.

    With ``n_permutations`` and a model that records its folds' parameters, the label-permutation test of
    the weights (:func:`~src.interpretation.weight_test.weight_permutation_test`) adds ``p_perm`` and
    ``q_perm``, and ``selected`` (what the report, the maps and the cards call selected) becomes
    ``q_perm < 0.05``: the corrected CV-ratio's own FDR selection (``q_value``) does not control what it
    claims when the fold models share most subjects (83 of 120 regions on the simulated default)."""
    if not model.is_linear:
        return None
    table = weight_summary(
        model.models,
        model.feature_columns,
        training,
        read_feature_regions(features_dir),
        test_fraction=test_fraction(model),
    )
    fold_params = model.info.get("fold_params")
    target = "outcome" if model.is_regression else "response"
    if n_permutations and fold_params and target in training:
        status(f"weights: permutation test, {n_permutations} permutations of the first repeat's folds ...")
        # a stacked model: each block's own fold models (its columns, covariates and tuned parameters)
        blocks = (model.info.get("stack") or {}).get("blocks") or {
            "": {
                "features": model.feature_columns,
                "covariates": model.covariates,
                "categorical": model.categorical_covariates,
            }
        }
        tested = pd.concat(
            [
                weight_permutation_test(
                    [_block_params(params, name) for params in fold_params],
                    model.info["fold_test_ids"],
                    training,
                    block["features"],
                    block["covariates"],
                    block["categorical"],
                    n_permutations,
                    seed,
                    target,
                )
                for name, block in blocks.items()
            ],
            ignore_index=True,
        )
        table = table.merge(tested[["feature", "p_perm", "q_perm"]], on="feature", how="left")
        table["selected"] = table["q_perm"] < FDR
    return table


def _block_params(params: dict, block: str) -> dict:
    """A fold's tuned parameters of one stacked block (``imaging__C`` -> ``C``); all of them for ``""``."""
    if not block:
        return params
    return {k.split("__", 1)[1]: v for k, v in params.items() if k.startswith(f"{block}__")}


def _fold_importance(
    fold_model: object, test: pd.DataFrame, columns: list[str], n_covariates: int, seed: int, regression: bool
):
    # a regressor's drop in (negative) MAE: the increase of its error when the feature is shuffled
    target, scoring = ("outcome", "neg_mean_absolute_error") if regression else ("response", "roc_auc")
    result = permutation_importance(
        fold_model, test[columns], test[target], scoring=scoring, n_repeats=5, random_state=seed
    )
    return result.importances_mean[n_covariates:]


def permutation_importance_table(
    model: EnsembleModel, training: pd.DataFrame, seed: int, n_jobs: int = 1
) -> pd.DataFrame:
    """Out-of-fold permutation importance (AUC drop) per feature: each fold model scored on the subjects it
    never saw (``sklearn.inspection.permutation_importance``, 5 shuffles, seed + fold), mean and SE over
    the fold models; the fold models in ``n_jobs`` processes (same numbers with any number)."""
    status(
        f"permutation importance: {len(model.feature_columns)} features x {len(model.models)} fold models ..."
    )
    ids = training["participant_id"].to_numpy()
    jobs = (
        delayed(_fold_importance)(
            fold_model,
            training[np.isin(ids, test_ids)],
            model.input_columns,
            len(model.covariates),
            seed + i,
            model.is_regression,
        )
        for i, (fold_model, test_ids) in enumerate(
            zip(model.models, model.info["fold_test_ids"], strict=True)
        )
    )
    importance = np.vstack(Parallel(n_jobs=n_jobs)(jobs))
    what = "mae_increase" if model.is_regression else "auc_drop"
    table = pd.DataFrame(
        {
            "feature": model.feature_columns,
            f"{what}_mean": importance.mean(0),
            f"{what}_se": importance.std(0, ddof=1) / np.sqrt(len(importance)),
        }
    )
    table = table.sort_values(f"{what}_mean", ascending=False, ignore_index=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def feature_importance(
    model: EnsembleModel,
    training: pd.DataFrame,
    features_dir: str | Path,
    seed: int,
    n_jobs: int = 1,
    n_weight_permutations: int = 0,
) -> pd.DataFrame:
    """Weights (linear ensembles; with ``n_weight_permutations``, their permutation test) or out-of-fold
    permutation importance (other kernels) per feature."""
    regions = model_regions(model, training, features_dir, n_weight_permutations, seed)
    return regions if regions is not None else permutation_importance_table(model, training, seed, n_jobs)
