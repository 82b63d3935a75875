"""Sharded permutation tests: permutations i, i+N, i+2N, ... run anywhere (array jobs), merged anywhere.

Permutation k's labels and seeds derive from (seed, k) only (:mod:`src.validation.seeds`), so shard i of N
computes exactly the values a single run would give for its indices. Each shard file records the key of
everything the values depend on (data, labels, CV and model settings, seed, permutation repeats, code); the
merge refuses shards whose key differs from the experiment's, shards that overlap, and an incomplete set.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from src.utils.errors import UserInputError
from src.utils.io import write_json_atomic

SHARD_FORMAT = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(value: Any) -> tuple[int, int]:
    """``"i/N"`` -> (i, N) with 0 <= i < N."""
    match = SHARD_FORMAT.match(str(value))
    if match is None or not int(match[1]) < int(match[2]):
        raise UserInputError(
            f"config key permutation.shard={value!r}: give i/N with 0 <= i < N (e.g. permutation.shard=0/4)"
        )
    return int(match[1]), int(match[2])


def shard_indices(n: int, shard: int, shards: int) -> range:
    """The permutations of shard ``shard`` of ``shards``: shard, shard + shards, ... below ``n``."""
    return range(shard, n, shards)


def shard_path(folder: str | Path, shard: int, shards: int) -> Path:
    """``<folder>/shards/shard-<i>-of-<N>.json`` (``folder``: the experiment's ``permutation/``)."""
    return Path(folder) / "shards" / f"shard-{shard}-of-{shards}.json"


def write_shard(
    folder: str | Path, key: str, shard: int, shards: int, n: int, repeats: int, values: Mapping[int, float]
) -> Path:
    """Write one shard's values (atomically) under ``folder``; returns the file."""
    path = shard_path(folder, shard, shards)
    document = {
        "key": key,
        "shard": shard,
        "shards": shards,
        "n": n,
        "repeats": repeats,
        "values": {str(i): float(v) for i, v in sorted(values.items())},
    }
    write_json_atomic(path, document)
    return path


# the range of each permutation statistic (a value outside it is a corrupted or foreign shard)
STATISTIC_RANGES: dict[str, tuple[float, float]] = {
    "mean_bac": (0.0, 1.0),
    "mean_neg_mae": (-np.inf, 0.0),
    "mean_neg_rmse": (-np.inf, 0.0),
    "mean_r2": (-np.inf, 1.0),
    "mean_pearson": (-1.0, 1.0),
}


def read_shard(path: str | Path, key: str, n: int, statistic: str = "mean_bac") -> dict[int, float]:
    """One shard file checked against its schema before anything is merged: a JSON object whose ``key`` is
    this experiment's, integer ``shard``/``shards``/``n`` (``n`` the experiment's), and ``values`` a mapping
    of permutation index (an integer in 0..n-1, of this shard: index % shards == shard) to a finite value of
    ``statistic`` in its range (:data:`STATISTIC_RANGES`: a balanced accuracy in [0, 1], a negative MAE
    <= 0). Refused, naming the file and the entry: anything else (a NaN would change the p-value's
    denominator, an index out of range its numerator)."""
    path = Path(path)
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as error:
        raise UserInputError(f"permutation shard {path} cannot be read: {error}") from None
    if not isinstance(document, dict):
        raise UserInputError(
            f"permutation shard {path}: a JSON object is needed, not {type(document).__name__}"
        )
    missing = [name for name in ("key", "shard", "shards", "n", "values") if name not in document]
    if missing:
        raise UserInputError(f"permutation shard {path}: field(s) {missing} missing")
    if document["key"] != key:
        raise UserInputError(
            f"permutation shard {path} was computed for other data, settings or code (key "
            f"{document['key']}, this experiment's is {key}); rerun it or remove it"
        )
    shard, shards, shard_n = document["shard"], document["shards"], document["n"]
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (shard, shards, shard_n)) or not (
        0 <= shard < shards
    ):
        raise UserInputError(
            f"permutation shard {path}: shard={shard!r}, shards={shards!r}, n={shard_n!r} must be integers "
            "with 0 <= shard < shards"
        )
    if shard_n != n:
        raise UserInputError(f"permutation shard {path} was run with n = {shard_n}, this merge has n = {n}")
    values = document["values"]
    if not isinstance(values, dict):
        raise UserInputError(
            f"permutation shard {path}: values must map permutation index -> statistic, not a "
            f"{type(values).__name__}"
        )
    out: dict[int, float] = {}
    for index, value in values.items():
        try:
            i = int(index)
        except ValueError:
            i = -1
        if str(i) != str(index) or not 0 <= i < n or i % shards != shard:
            raise UserInputError(
                f"permutation shard {path}: index {index!r} is not a permutation of shard {shard}/{shards} "
                f"in 0..{n - 1}"
            )
        low, high = STATISTIC_RANGES[statistic]
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not np.isfinite(value)
            or not low <= value <= high
        ):
            what = "a balanced accuracy" if statistic == "mean_bac" else f"a {statistic}"
            raise UserInputError(
                f"permutation shard {path}: permutation {index} has value {value!r}, not {what} in "
                f"[{low:g}, {high:g}]"
            )
        out[i] = float(value)
    return out


def merge_shards(
    folder: str | Path, key: str, n: int, statistic: str = "mean_bac"
) -> tuple[np.ndarray, list[str]]:
    """The null distribution (permutations 0..n-1 in order) from the shard files in ``folder``, and their
    names. Every file is checked by :func:`read_shard` first; refused, naming the file: a shard of other
    data/settings/code (its key), a malformed entry, two shards holding the same permutation, permutations
    missing from every shard."""
    files = sorted((Path(folder) / "shards").glob("shard-*-of-*.json"))
    if not files:
        raise UserInputError(
            f"no permutation shard in {folder}: run the shards first (permutation.shard=i/N)"
        )
    values: dict[int, float] = {}
    for path in files:
        for index, value in read_shard(path, key, n, statistic).items():
            if index in values:
                raise UserInputError(f"permutation {index} is in two shards (the second: {path})")
            values[index] = value
    missing = [i for i in range(n) if i not in values]
    if missing:
        raise UserInputError(
            f"{len(missing)} of {n} permutations are in no shard of {Path(folder) / 'shards'} (e.g. "
            f"{missing[:5]}): run the missing shards"
        )
    return np.asarray([values[i] for i in range(n)]), [f.name for f in files]


MERGED = "metrics.json"


def read_permutation(run_dir: str | Path) -> dict[str, Any] | None:
    """The experiment's permutation test: the merged shards (``<run>/permutation/metrics.json``) when they
    belong to the current training (same key as ``train/metrics.json`` records), else the training's own
    (``None`` when neither ran one)."""
    run_dir = Path(run_dir)
    train = json.loads((run_dir / "train" / "metrics.json").read_text())
    merged_path = run_dir / "permutation" / MERGED
    if merged_path.is_file():
        merged = json.loads(merged_path.read_text())
        if merged.get("key") == (train.get("provenance") or {}).get("permutation_key"):
            return merged
    return train.get("permutation")
