"""Beyond one machine: Dask for folds and permutations, sharded permutation tests merged by key, SLURM-style
sweeps through Hydra's submitit launcher (its local executor here). MLflow on PostgreSQL: test_tracking."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, subprocess_env
from sklearn.base import clone
from test_train import SPACE, contract_table

from src.utils.errors import UserInputError
from src.utils.parallel import _CLIENT, ParallelSettings, parallel_backend
from src.validation.estimator import NestedCVClassifier
from src.validation.nested_cv import CVConfig
from src.validation.permutation import permutation_test
from src.validation.shards import merge_shards, parse_shard, read_permutation, shard_indices


@pytest.mark.slow
def test_dask_gives_bit_identical_folds_and_permutations_with_1_and_2_workers():
    """The same nested CV and permutation test on loky (n_jobs=1) and on a Dask LocalCluster of 1 and of 2
    workers: every out-of-fold score, every fold's chosen parameters and every null value identical."""
    table = contract_table(n=36, seed=8)
    X = table[["age", "sex", "tiv", "site", *[c for c in table.columns if c.startswith("gm_")]]]
    y = table["response"].to_numpy()
    cv = CVConfig(repeats=2, outer_folds=3, inner_folds=3, n_trials=3)
    method = NestedCVClassifier(SPACE, cv, random_state=4, keep_models=False)
    reference = clone(method).fit(X, y)
    null = permutation_test(reference, X, y, 4)
    for workers in (1, 2):
        with parallel_backend(ParallelSettings(backend="dask", workers=workers), n_jobs=2) as where:
            assert where.startswith(f"dask, {workers} worker(s) at tcp://127.0.0.1:")
            # the workers run without Dask's eager memory trimming and its stack profiler (each cost a
            # permutation 5-13 % CPU)
            settings = _CLIENT.get().run(
                lambda: (
                    __import__("os").environ.get("MALLOC_TRIM_THRESHOLD_"),
                    __import__("dask").config.get("distributed.worker.profile.enabled"),
                )
            )
            assert list(settings.values()) == [(None, False)] * workers
            result = clone(method).set_params(n_jobs=2).fit(X, y)
            permuted = permutation_test(result, X, y, 4)
        np.testing.assert_array_equal(result.oof_decision_, reference.oof_decision_)
        assert result.best_params_ == reference.best_params_
        np.testing.assert_array_equal(permuted.null, null.null)


def test_parallel_and_shard_settings_are_checked():
    with pytest.raises(UserInputError, match="parallel.backend='ray': must be one of"):
        ParallelSettings.from_config({"backend": "ray"})
    with pytest.raises(UserInputError, match="give one, not both"):
        ParallelSettings.from_config({"backend": "dask", "address": "tcp://x:1", "scheduler_file": "s.json"})
    for bad in ("2/2", "a/3", "3", "-1/4"):
        with pytest.raises(UserInputError, match=f"permutation.shard={bad!r}"):
            parse_shard(bad)
    assert parse_shard(" 1 / 4 ") == (1, 4)
    assert list(shard_indices(10, 1, 4)) == [1, 5, 9]


def _train(work: Path, *overrides: str, multirun: bool = False) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "src.train", *(["--multirun"] if multirun else [])]
    command += [
        "+experiment=gm_only",
        f"paths.features={work / 'features'}",
        f"paths.output={work / 'out'}",
        "tracking.enabled=false",
        "cv.repeats=2",
        "cv.outer_folds=3",
        "cv.inner_folds=3",
        "cv.n_trials=3",
        "permutation.n=7",
        "n_jobs=1",
        *overrides,
    ]
    done = subprocess.run(
        command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done


def _merge(work: Path, *overrides: str) -> subprocess.CompletedProcess:
    command = [
        sys.executable,
        "-m",
        "src.merge_permutations",
        "+experiment=gm_only",
        "tracking.enabled=false",
    ]
    command += [f"paths.features={work / 'features'}", f"paths.output={work / 'out'}", "permutation.n=7"]
    command += ["cv.repeats=2", "cv.outer_folds=3", "cv.inner_folds=3", "cv.n_trials=3", *overrides]
    return subprocess.run(
        command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_shards_from_a_submitit_sweep_merge_to_the_same_test_as_one_run(tmp_path):
    """One run with 7 permutations inline; then the same 7 as 3 shards, launched as one --multirun sweep by
    the submitit launcher (local executor: one process per job, as SLURM jobs), each on Dask; the merge gives
    the identical null and p-value, and the evaluation reads it. Shards of other settings, overlapping shards
    and an incomplete set are refused, naming the file."""
    features = tmp_path / "features" / "gm_roi"
    features.mkdir(parents=True)
    contract_table(n=36, seed=9).to_parquet(features / "discovery.parquet", index=False)
    _train(tmp_path)
    run = tmp_path / "out" / "gm_only"
    one_run = json.loads((run / "train" / "metrics.json").read_text())["permutation"]
    one_null = pd.read_csv(run / "train" / "permutation_null.csv")["mean_bac"].to_numpy()

    sweep = _train(
        tmp_path,
        "permutation.shard=0/3,1/3,2/3",
        "hydra/launcher=local_jobs",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
        "parallel.backend=dask",
        "parallel.workers=1",
        multirun=True,
    )
    assert sorted(p.name for p in (run / "permutation" / "shards").iterdir()) == [
        f"shard-{i}-of-3.json" for i in range(3)
    ]
    assert list((tmp_path / "sweep").glob(".submitit/*/*_result.pkl")), sweep.stdout  # submitit ran the jobs
    merged = _merge(tmp_path)
    assert merged.returncode == 0, merged.stderr
    document = json.loads((run / "permutation" / "metrics.json").read_text())
    assert document["p_value"] == one_run["p_value"] and document["observed"] == one_run["observed"]
    np.testing.assert_array_equal(
        pd.read_csv(run / "permutation" / "permutation_null.csv")["mean_bac"].to_numpy(), one_null
    )
    assert read_permutation(run)["shards"] == document["shards"]

    key = document["key"]
    shard = run / "permutation" / "shards" / "shard-1-of-3.json"
    original = shard.read_text()
    shard.write_text(original.replace(key, "0" * 16))
    with pytest.raises(UserInputError, match="shard-1-of-3.json was computed for other data"):
        merge_shards(run / "permutation", key, 7)
    shard.write_text(original)
    shutil.copy(shard, run / "permutation" / "shards" / "shard-1-of-9.json")
    with pytest.raises(UserInputError, match="permutation 1 is in two shards"):
        merge_shards(run / "permutation", key, 7)
    (run / "permutation" / "shards" / "shard-1-of-9.json").unlink()
    shard.unlink()
    refused = _merge(tmp_path)
    assert refused.returncode == 2 and "2 of 7 permutations are in no shard" in refused.stderr
    other = _merge(tmp_path, "seed=5")
    assert other.returncode == 2 and "was trained with other data, settings or code" in other.stderr


def _shard(folder: Path, name: str, **document) -> None:
    (folder / "shards").mkdir(parents=True, exist_ok=True)
    base = {"key": "k" * 16, "shard": 0, "shards": 2, "n": 4, "repeats": 1, "values": {"0": 0.5, "2": 0.25}}
    text = document.pop("text", None)
    (folder / "shards" / name).write_text(text if text is not None else json.dumps({**base, **document}))


SHARD_CASES = {
    "value a string": ({"values": {"0": "0.5", "2": 0.25}}, "permutation 0 has value '0.5', not a balanced"),
    "value NaN": (
        {
            "text": '{"key": "kkkkkkkkkkkkkkkk", "shard": 0, "shards": 2, "n": 4, '
            '"values": {"0": NaN, "2": 0.3}}'
        },
        "permutation 0 has value nan",
    ),
    "value out of [0, 1]": ({"values": {"0": 1.5, "2": 0.25}}, "permutation 0 has value 1.5"),
    "index a string": (
        {"values": {"zero": 0.5, "2": 0.25}},
        "index 'zero' is not a permutation of shard 0/2",
    ),
    "index out of range": ({"values": {"0": 0.5, "2": 0.25, "6": 0.5}}, "index '6' is not a permutation"),
    "index of another shard": (
        {"values": {"0": 0.5, "1": 0.25}},
        "index '1' is not a permutation of shard 0/2",
    ),
    "values a list": ({"values": [0.5, 0.25]}, "values must map permutation index -> statistic, not a list"),
    "shard index a string": ({"shard": "0"}, "shard='0', shards=2, n=4 must be integers"),
    "other n": ({"n": 8}, "was run with n = 8, this merge has n = 4"),
    "not an object": ({"text": "[1, 2]"}, "a JSON object is needed, not list"),
    "not JSON": ({"text": "{"}, "cannot be read"),
    "field missing": (
        {"text": '{"key": "kkkkkkkkkkkkkkkk"}'},
        "field(s) ['shard', 'shards', 'n', 'values'] missing",
    ),
}


@pytest.mark.parametrize("case", sorted(SHARD_CASES))
def test_a_malformed_shard_is_refused_naming_file_and_entry(tmp_path, case):
    """Hand-written shards: each schema violation is one error naming the shard file and the entry; the
    well-formed pair merges to the values in index order."""
    edit, expected = SHARD_CASES[case]
    _shard(tmp_path, "shard-1-of-2.json", shard=1, values={"1": 0.75, "3": 0.5})
    _shard(tmp_path, "shard-0-of-2.json", **edit)
    with pytest.raises(UserInputError) as error:
        merge_shards(tmp_path, "k" * 16, 4)
    assert "shard-0-of-2.json" in str(error.value) and expected in str(error.value), str(error.value)


def test_well_formed_shards_merge_in_index_order_and_overlaps_are_refused(tmp_path):
    _shard(tmp_path, "shard-1-of-2.json", shard=1, values={"1": 0.75, "3": 0.5})
    _shard(tmp_path, "shard-0-of-2.json")
    null, files = merge_shards(tmp_path, "k" * 16, 4)
    np.testing.assert_array_equal(null, [0.5, 0.75, 0.25, 0.5])
    assert files == ["shard-0-of-2.json", "shard-1-of-2.json"]
    _shard(tmp_path, "shard-0-of-4.json", shard=0, shards=4, values={"0": 0.5})  # overlaps shard 0 of 2
    with pytest.raises(UserInputError, match="permutation 0 is in two shards"):
        merge_shards(tmp_path, "k" * 16, 4)
    (tmp_path / "shards" / "shard-0-of-4.json").unlink()
    (tmp_path / "shards" / "shard-1-of-2.json").unlink()
    with pytest.raises(UserInputError, match=r"2 of 4 permutations are in no shard .* \[1, 3\]"):
        merge_shards(tmp_path, "k" * 16, 4)
