"""Late fusion (StackedNestedCV): against an independent scikit-learn stack, the locked affine form, no
outer-test row in any fitted part, and the permutation of the whole fused procedure."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import balanced_accuracy_score
from sklearn.model_selection import GridSearchCV, cross_val_predict
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC
from test_clinical import C_GRID, _clinical_data, _space

from src.utils.errors import UserInputError
from src.validation.nested_cv import CVConfig, inner_splitter
from src.validation.permutation import permutation_values
from src.validation.seeds import Stream, derive_seed
from src.validation.stacking import StackedNestedCV, _meta_splitter

CV = CVConfig(repeats=2, outer_folds=4, inner_folds=3, n_trials=len(C_GRID), sampler="grid")
META_CS = (0.1, 1.0, 10.0)


def _with_covariates(seed: int, n: int = 90) -> pd.DataFrame:
    X, y = _clinical_data(seed, n)
    rng = np.random.default_rng(seed + 100)
    X.insert(0, "sex", rng.choice(["F", "M"], len(X)))
    X.insert(0, "age", rng.normal(40, 10, len(X)))
    return X, y


def _stack(covariates=(), categorical=(), **kwargs) -> StackedNestedCV:
    return StackedNestedCV(
        search_space=_space("linear"),
        cv=CV,
        covariates=covariates,
        categorical=categorical,
        random_state=7,
        meta_cs=META_CS,
        **kwargs,
    )


def test_the_stack_equals_an_independent_scikit_learn_stack():
    """Per outer fold, written with scikit-learn only: each block tuned by GridSearchCV on the outer-training
    rows, its inner out-of-fold scores by cross_val_predict with the tuned C on the same inner folds, the
    meta-learner GridSearchCV(scale -> logistic) on those scores, the outer-test rows scored by the blocks
    refitted on the training rows through it. Same scores (to rounding)."""
    X, y = _clinical_data(21, n=84)
    stack = _stack().fit(X, y)
    blocks = {"imaging": ["gm_a", "gm_b"], "clinical": ["clin_bmi", "clin_fh", "clin_x"]}
    for fold in stack.folds_:
        train, test = fold.train, fold.test
        inner = inner_splitter(CV, 7, fold.repeat)
        oof, outer = [], []
        for columns in blocks.values():
            pipeline = Pipeline(
                [
                    ("impute", SimpleImputer(strategy="mean", keep_empty_features=True)),
                    ("scale", StandardScaler()),
                    ("svc", SVC(kernel="linear")),
                ]
            )
            search = GridSearchCV(pipeline, {"svc__C": C_GRID}, cv=inner, scoring="balanced_accuracy")
            search.fit(X.iloc[train][columns], y[train])
            tuned = clone(pipeline).set_params(**search.best_params_)
            oof.append(
                cross_val_predict(
                    tuned, X.iloc[train][columns], y[train], cv=inner, method="decision_function"
                )
            )
            outer.append(search.best_estimator_.decision_function(X.iloc[test][columns]))
        meta = GridSearchCV(
            make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=1000)),
            {"logisticregression__C": list(META_CS)},
            cv=_meta_splitter(CV, 7, fold.repeat, fold.fold),
            scoring="neg_log_loss",
        ).fit(np.column_stack(oof), y[train])
        expected = meta.decision_function(np.column_stack(outer))
        np.testing.assert_allclose(fold.decision, expected, rtol=0, atol=1e-7)


def test_each_fold_is_locked_as_one_affine_model_of_its_stacked_decision():
    X, y = _with_covariates(4)
    stack = _stack(["age", "sex"], ["sex"]).fit(X, y)
    for fold in stack.folds_:
        np.testing.assert_allclose(fold.model.decision_function(X.iloc[fold.test]), fold.decision, atol=1e-8)
    assert set(stack.block_results_) == {"imaging", "clinical"}
    assert stack.meta_weights_.columns.tolist()[:3] == ["repeat", "fold", "meta_C"]
    # the locked model scores new rows, missing clinical values included, as the mean of its fold models
    new = X.iloc[:5].copy()
    new.loc[new.index[0], "clin_bmi"] = np.nan
    expected = np.mean([f.model.decision_function(new) for f in stack.folds_], axis=0)
    np.testing.assert_allclose(stack.decision_function(new), expected, atol=1e-12)
    # the imaging block's own out-of-fold scores are the single-modality model's (same splits)
    imaging = stack.block_results_["imaging"]
    assert [(f.repeat, f.fold) for f in imaging.folds] == [(f.repeat, f.fold) for f in stack.folds_]


def test_nothing_fitted_for_a_fold_sees_its_outer_test_rows():
    """Rewriting fold 0's outer-test rows (features and clinical values) changes none of fold 0's tuned
    parameters, meta weights or locked weights."""
    X, y = _clinical_data(9, n=84)
    first = _stack().fit(X, y)
    fold = first.folds_[0]
    moved = X.copy()
    rng = np.random.default_rng(0)
    moved.iloc[fold.test] = rng.normal(size=(len(fold.test), X.shape[1])) * 50
    second = _stack().fit(moved, y)
    again = second.folds_[0]
    assert again.best_params == fold.best_params
    np.testing.assert_allclose(again.model.weights, fold.model.weights, rtol=1e-10)
    assert again.model.intercept == pytest.approx(fold.model.intercept, rel=1e-10)


@pytest.mark.slow
def test_a_permutation_refits_the_whole_stack():
    """Permutation i of the fused procedure = the whole stack (both blocks' tuning, the meta-learner) fitted
    on the labels permuted with the seed of (random_state, i): the same value, independently computed."""
    X, y = _clinical_data(2, n=72)
    stack = _stack()
    values, _ = permutation_values(stack, X, y, [0, 1])
    for i in (0, 1):
        y_perm = np.random.default_rng(derive_seed(7, Stream.PERMUTATION, i)).permutation(y)
        refit = clone(stack).fit(X, y_perm)
        bac = [balanced_accuracy_score(y_perm, refit.oof_decision_[:, r] > 0) for r in range(CV.repeats)]
        assert values[i] == pytest.approx(np.mean(bac), abs=1e-12)
    assert clone(stack).get_params()["meta_cs"] == META_CS


def test_a_stack_needs_both_modalities_and_linear_blocks():
    X, y = _clinical_data(2, n=60)
    with pytest.raises(UserInputError, match="needs imaging and clinical columns"):
        _stack().fit(X[["gm_a", "gm_b"]], y)
    with pytest.raises(UserInputError, match="linear SVC blocks"):
        _stack().set_params(search_space=_space("rbf")).fit(X, y)
