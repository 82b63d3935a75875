"""The checkpoint key: every input a fold's or a permutation's result depends on changes it, so a resumed run
never reuses work done with other data, labels, settings, seed or code."""

from __future__ import annotations

import copy
import dataclasses
import shutil
from pathlib import Path

import pytest
from test_train import SPACE, contract_table

from src.config.settings import ExperimentConfig, ModelSettings, settings_from
from src.utils import provenance
from src.validation.experiment import TrainingInputs, checkpoint_path
from src.validation.nested_cv import CVConfig

MODEL = ModelSettings(
    name="svc_linear", covariates=["age", "sex", "tiv", "site"], categorical=["sex", "site"]
)


def _inputs() -> tuple[ExperimentConfig, TrainingInputs]:
    table = contract_table(n=24, seed=2)
    X = table[["age", "sex", "tiv", "site", *[c for c in table.columns if c.startswith("gm_")]]]
    cv = CVConfig(repeats=2, outer_folds=3, inner_folds=3, n_trials=3)
    inputs = TrainingInputs(
        copy.deepcopy(MODEL), Path("t.parquet"), table, X, table["response"].to_numpy(), cv, SPACE, "d"
    )
    config = settings_from({"seed": 1, "permutation": {"repeats": 1}, "paths": {"run": "run"}})
    return config, inputs


def _data(config: ExperimentConfig, inputs: TrainingInputs) -> None:
    inputs.X = inputs.X.copy()
    inputs.X.iloc[3, -1] += 1e-9  # one feature value of one subject


def _labels(config: ExperimentConfig, inputs: TrainingInputs) -> None:
    inputs.y = inputs.y.copy()
    inputs.y[[0, 1]] = inputs.y[[1, 0]] if inputs.y[0] != inputs.y[1] else 1 - inputs.y[[0, 1]]


def _column_name(config: ExperimentConfig, inputs: TrainingInputs) -> None:
    inputs.X = inputs.X.rename(columns={inputs.X.columns[-1]: "gm_renamed"})


def _covariate(config: ExperimentConfig, inputs: TrainingInputs) -> None:
    inputs.X = inputs.X.copy()
    inputs.X.loc[inputs.X.index[2], "sex"] = "M" if inputs.X["sex"].iloc[2] == "F" else "F"


def _age(config: ExperimentConfig, inputs: TrainingInputs) -> None:
    inputs.X = inputs.X.copy()
    inputs.X.iloc[0, 0] += 1.0


def _seed(config: ExperimentConfig, inputs: TrainingInputs) -> ExperimentConfig:
    return dataclasses.replace(config, seed=2)


def _cv(field: str, value: object):
    def edit(config: ExperimentConfig, inputs: TrainingInputs) -> None:
        inputs.cv = dataclasses.replace(inputs.cv, **{field: value})

    return edit


def _model(config: ExperimentConfig, inputs: TrainingInputs) -> None:
    space = {"C": {"type": "float", "low": 1e-2, "high": 1.0, "log": True}}
    inputs.model = dataclasses.replace(inputs.model, search_space=space)


def _covariates(config: ExperimentConfig, inputs: TrainingInputs) -> None:
    inputs.model = dataclasses.replace(inputs.model, covariates=["age", "sex", "tiv"])


def _permutation_repeats(config: ExperimentConfig, inputs: TrainingInputs) -> ExperimentConfig:
    return dataclasses.replace(config, permutation=dataclasses.replace(config.permutation, repeats=2))


CHANGES = {
    "data": _data,
    "labels": _labels,
    "feature name": _column_name,
    "categorical covariate": _covariate,
    "numeric covariate": _age,
    "seed": _seed,
    "cv repeats": _cv("repeats", 3),
    "cv outer folds": _cv("outer_folds", 4),
    "cv inner folds": _cv("inner_folds", 4),
    "cv trials": _cv("n_trials", 4),
    "cv sampler": _cv("sampler", "random"),
    "model search space": _model,
    "model covariates": _covariates,
}


@pytest.mark.parametrize("kind", ["folds", "permutations"])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_every_input_changes_the_checkpoint_key(kind, change):
    config, inputs = _inputs()
    before = checkpoint_path(config, kind, inputs)
    assert checkpoint_path(*_inputs()[:1], kind, _inputs()[1]) == before  # the same inputs: the same key
    config = CHANGES[change](config, inputs) or config
    assert checkpoint_path(config, kind, inputs) != before


def test_the_key_of_a_table_does_not_depend_on_its_memory_layout():
    """Voxel tables are read column-major, others row-major: the same values give the same key."""
    import numpy as np
    import pandas as pd

    from src.validation.checkpoints import checkpoint_key

    _, inputs = _inputs()
    features = [c for c in inputs.X.columns if c.startswith("gm_")]
    values = inputs.X[features].to_numpy(dtype=np.float32)  # a block of its own, as a voxel table's
    covariates = inputs.X.drop(columns=features).reset_index(drop=True)
    tables = [
        pd.concat(
            [covariates, pd.DataFrame(layout(values), columns=features, copy=False)], axis=1, copy=False
        )
        for layout in (np.ascontiguousarray, np.asfortranarray)
    ]
    flags = [t.iloc[:, -len(features) :].to_numpy().flags for t in tables]
    assert flags[0]["C_CONTIGUOUS"] and flags[1]["F_CONTIGUOUS"]  # two layouts indeed
    assert checkpoint_key(tables[0]) == checkpoint_key(tables[1])


def test_permutation_repeats_change_the_permutation_key_only():
    config, inputs = _inputs()
    folds, permutations = (checkpoint_path(config, k, inputs) for k in ("folds", "permutations"))
    config = _permutation_repeats(config, inputs)
    assert checkpoint_path(config, "folds", inputs) == folds  # the real run's folds do not depend on it
    assert checkpoint_path(config, "permutations", inputs) != permutations


def test_an_edit_of_the_computation_code_changes_the_key(tmp_path, monkeypatch):
    """One byte more in a copy of src/validation/nested_cv.py: another key (a code edit never reuses
    checkpoints of the old code)."""
    for folder in ("src/models", "src/validation"):
        shutil.copytree(provenance.CODE_ROOT / folder, tmp_path / folder)
    monkeypatch.setattr(provenance, "CODE_ROOT", tmp_path)
    config, inputs = _inputs()
    before = {k: checkpoint_path(config, k, inputs) for k in ("folds", "permutations")}
    with open(tmp_path / "src" / "validation" / "nested_cv.py", "a") as handle:
        handle.write("\n")
    after = {k: checkpoint_path(config, k, inputs) for k in ("folds", "permutations")}
    assert all(after[k] != before[k] for k in before)
