"""Weights back to the brain and importance of non-linear models: each value lands where its feature came
from, and the planted feature comes out on top."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from src.interpretation.importance import permutation_importance_table
from src.interpretation.regions import map_values, region_maps, voxel_maps, weight_summary


def test_voxel_map_round_trip_puts_each_weight_in_its_voxel():
    """Column ``gm_v<j>`` is the j-th voxel of the mask in C order: painting and reading back voxel (i, j, k)
    gives that column's weight, and nothing outside the mask."""
    mask = np.zeros((4, 5, 3), dtype=np.uint8)
    mask[1:3, 1:4, 1] = 1
    mask[3, 4, 2] = 1
    img = nib.Nifti1Image(mask, np.diag([2.0, 2.0, 2.0, 1.0]))
    voxels = np.argwhere(mask)  # C order, as the feature columns are numbered
    rng = np.random.default_rng(0)
    table = pd.DataFrame(
        {"feature": [f"gm_v{j}" for j in range(len(voxels))], "mean_weight": rng.normal(size=len(voxels))}
    )
    table["cvr"] = table["mean_weight"] * 10
    shuffled = table.sample(frac=1, random_state=1)  # the summary's row order (by |CVR|) must not matter
    maps = voxel_maps(shuffled, img)
    weight = np.asarray(maps["weight"].dataobj)
    for j, (x, y, z) in enumerate(voxels):
        assert weight[x, y, z] == pytest.approx(table["mean_weight"][j])
    assert np.all(weight[mask == 0] == 0)
    np.testing.assert_allclose(np.asarray(maps["cvr"].dataobj)[mask == 1], table["cvr"])


def test_atlas_map_round_trip_paints_each_region_with_its_value():
    atlas = np.zeros((6, 6, 6), dtype=np.int16)
    atlas[:3, :, :3] = 7
    atlas[3:, :, :3] = 12
    atlas[:, :, 3:] = 30  # a label without a feature stays 0
    img = nib.Nifti1Image(atlas, np.eye(4))
    regions = pd.DataFrame(
        {"column": ["gm_A", "gm_B", "wm_A"], "tissue": ["GM", "GM", "WM"], "index": [7, 12, 7], "atlas": "x"}
    )
    table = pd.DataFrame(
        {
            "feature": ["gm_B", "gm_A", "wm_A"],
            "mean_weight": [0.5, -0.25, 9.0],
            "cvr": [3.0, -6.0, 9.0],
            "cvr_corrected": [0.9, -4.0, 9.0],
            "selected": [False, True, True],
        }
    )
    maps = region_maps(table, regions, img)
    weight, cvr = np.asarray(maps["weight"].dataobj), np.asarray(maps["cvr"].dataobj)
    assert np.all(weight[atlas == 7] == -0.25) and np.all(weight[atlas == 12] == 0.5)
    assert np.all(weight[atlas == 30] == 0) and np.all(weight[atlas == 0] == 0)  # WM rows never painted here
    # the CVR map shows the corrected CVR of the FDR-selected regions only
    assert np.all(cvr[atlas == 7] == -4.0) and np.all(cvr[atlas == 12] == 0)
    np.testing.assert_array_equal(map_values(table)["cvr"], [0.0, -4.0, 9.0])


def test_corrected_cvr_follows_nadeau_bengio_and_selects_nothing_by_itself():
    """CVR / sqrt((1/J + n_test/n_train) J), checked against the formula computed here from the weights."""
    from src.models.linear import AffineDecision
    from src.models.residualize import CovariateResidualizer

    rng = np.random.default_rng(3)
    J, p = 20, 30
    true = np.r_[np.full(5, 0.5), np.zeros(p - 5)]
    W = true + rng.normal(0, 1.0, (J, p))
    design = CovariateResidualizer.from_parts((), (), {}, [f"gm_{j}" for j in range(p)])
    models = [AffineDecision(w, np.zeros(1), 0.0, design) for w in W]
    table = weight_summary(models, [f"gm_{j}" for j in range(p)], test_fraction=0.2).set_index("feature")
    cvr = W.mean(0) / (W.std(0, ddof=1) / np.sqrt(J))
    corrected = cvr / np.sqrt((1 / J + 0.2 / 0.8) * J)
    np.testing.assert_allclose(table.loc[[f"gm_{j}" for j in range(p)], "cvr_corrected"], corrected)
    # one answer per question: the corrected CVR is a reliability figure, never a normal-theory q-value
    # (it called null clinical predictors significant); selection is the permutation test's alone
    assert "q_value" not in table and "selected" not in table


@pytest.mark.slow
def test_rbf_permutation_importance_ranks_the_planted_feature_first():
    """An RBF ensemble trained where only gm_0 carries the outcome: out-of-fold permutation importance puts
    gm_0 first, with an AUC drop well above the others'."""
    from test_train import contract_table

    from src.models.search_space import SearchSpace
    from src.validation.ensemble import EnsembleModel
    from src.validation.nested_cv import CVConfig, run_nested_cv

    table = contract_table(n=60, seed=4, signal=2.5)
    features = [c for c in table.columns if c.startswith("gm_")]
    table[features[1:]] = np.random.default_rng(5).normal(size=(60, len(features) - 1))  # noise only
    X = table[["age", "sex", "tiv", "site", *features]]
    space = SearchSpace.from_config(
        {
            "search_space": {"C": {"type": "float", "low": 1.0, "high": 10.0, "log": True}},
            "fixed": {"kernel": "rbf", "gamma": "scale"},
        }
    )
    result = run_nested_cv(
        X,
        table["response"].to_numpy(),
        space,
        CVConfig(repeats=1, outer_folds=3, inner_folds=3, n_trials=2),
        0,
        ids=table["participant_id"].tolist(),
    )
    model = EnsembleModel.from_result(result, training=X)
    assert not model.is_linear
    importance = permutation_importance_table(model, table, seed=0)
    assert importance.iloc[0]["feature"] == features[0]
    assert importance.iloc[0]["auc_drop_mean"] > 0.1 > importance.iloc[1:]["auc_drop_mean"].max()
    pd.testing.assert_frame_equal(permutation_importance_table(model, table, seed=0, n_jobs=2), importance)


def _weight_test_inputs(table: pd.DataFrame, folds: int = 5, seed: int = 0, C: float = 0.5):
    from sklearn.model_selection import StratifiedKFold

    splitter = StratifiedKFold(folds, shuffle=True, random_state=seed)
    ids = table["participant_id"].to_numpy()
    test_ids = [ids[test].tolist() for _, test in splitter.split(ids, table["response"])]
    features = [c for c in table.columns if c.startswith("gm_")]
    return [{"C": C, "kernel": "linear"}] * folds, test_ids, features


def test_weight_permutation_statistic_is_the_folds_linear_svc_weights():
    """The observed statistic: per fold, scikit-learn's Pipeline (residualise, scale, linear SVC) fitted on
    the fold's training rows, its coef_ (standardised features) at unit length, averaged over the folds."""
    from test_train import contract_table

    from src.interpretation.weight_test import weight_permutation_test
    from src.models.pipeline import build_pipeline

    table = contract_table(n=50, seed=3, signal=1.0)
    params, test_ids, features = _weight_test_inputs(table)
    covariates, categorical = ["age", "sex", "tiv", "site"], ["sex", "site"]
    result = weight_permutation_test(params, test_ids, table, features, covariates, categorical, 20, seed=1)
    expected = []
    for fold in test_ids:
        train = table[~table["participant_id"].isin(fold)]
        pipeline = build_pipeline(params[0], covariates, categorical)
        pipeline.fit(train[[*covariates, *features]], train["response"])
        w = pipeline.named_steps["svc"].coef_[0]
        expected.append(w / np.linalg.norm(w))
    np.testing.assert_allclose(result["weight_z"], np.mean(expected, axis=0), atol=1e-6)


@pytest.mark.slow
def test_weight_permutation_test_is_calibrated_under_the_null_and_finds_the_planted_feature():
    """20 pure-noise datasets (10 features): p < 0.05 for about 5 % of the features, any region selected
    (q < 0.05) in few of them; with gm_r0 planted, gm_r0 is selected and the selection is mostly it."""
    from test_train import contract_table

    from src.interpretation.weight_test import weight_permutation_test

    covariates, categorical = ["age", "sex", "tiv", "site"], ["sex", "site"]
    p_values, any_selected = [], []
    for seed in range(20):
        table = contract_table(n=60, seed=100 + seed, signal=0.0).drop(columns=["gm_r10", "gm_r11"])
        params, test_ids, features = _weight_test_inputs(table, seed=seed)
        result = weight_permutation_test(
            params, test_ids, table, features, covariates, categorical, 300, seed
        )
        p_values += result["p_perm"].tolist()
        any_selected.append(bool((result["q_perm"] < 0.05).any()))
    share = np.mean(np.asarray(p_values) < 0.05)
    assert share <= 0.05 + 3 * np.sqrt(0.05 * 0.95 / len(p_values)), share  # 200 p-values
    assert np.mean(p_values) == pytest.approx(0.5, abs=0.07)
    assert sum(any_selected) <= 3, any_selected  # BH under the complete null: ~1 of 20 expected
    table = contract_table(n=60, seed=7, signal=0.8)
    params, test_ids, features = _weight_test_inputs(table)
    result = weight_permutation_test(params, test_ids, table, features, covariates, categorical, 1000, 7)
    selected = result.loc[result["q_perm"] < 0.05, "feature"].tolist()
    assert "gm_r0" in selected and len(selected) <= 2, result.sort_values("p_perm").head()
