"""Checks run before any expensive work: config values, writable outputs. Each failure is one message
naming the key or the path (:class:`~src.utils.errors.UserInputError`)."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from typing import Any

from src.utils.errors import UserInputError, reject_unknown_keys

# key -> (minimum, None allowed): integer settings that scripts and users override on the command line
INTEGER_KEYS: dict[str, tuple[int, bool]] = {
    "seed": (0, False),
    "n_jobs": (-1, False),
    "cv.repeats": (1, False),
    "cv.outer_folds": (2, False),
    "cv.inner_folds": (2, False),
    "cv.n_trials": (1, False),
    "permutation.n": (0, False),
    "permutation.repeats": (1, True),
    "evaluation.n_permutations": (1, False),
    "evaluation.n_bootstrap": (1, False),
    "evaluation.weight_permutations": (0, True),
    "predict.align_unseen_sites": (2, True),
    "parallel.workers": (1, True),
}


# Sections whose keys are read by name: a key not listed here is a typo (Hydra merges unknown keys from
# config files silently, and the readers would ignore them).
SECTION_KEYS: dict[str, frozenset[str]] = {
    "cv": frozenset({"repeats", "outer_folds", "inner_folds", "n_trials", "sampler", "n_startup_trials"}),
    "permutation": frozenset({"n", "repeats", "shard", "inline"}),
    "parallel": frozenset({"backend", "address", "scheduler_file", "workers"}),
    "evaluation": frozenset(
        {
            "n_permutations",
            "n_bootstrap",
            "weight_permutations",
            "harmonize",
            "alignment_method",
            "reference",
            "champion",
        }
    ),
    "evaluation.champion": frozenset({"alias", "max_p"}),
    "predict": frozenset(
        {"threshold", "coverage", "distance_percentile", "dir", "model", "align_unseen_sites", "card"}
    ),
    "patient": frozenset({"participant_id", "age", "sex", "site", "tiv"}),
    "report": frozenset({"experiments", "params_file", "dir"}),
    "paths": frozenset({"data", "cohorts", "features", "output", "run"}),
    "model": frozenset({"name", "covariates", "categorical", "search_space", "fixed"}),
    "data": frozenset(
        {
            "name",
            "root",
            "layout",
            "pipeline",
            "space",
            "cohorts",
            "source",
            "table_format",
            "outcome",
            "on_grid_mismatch",
            "plausibility",
            "simulation",
        }
    ),
    "data.outcome": frozenset({"baseline", "followup", "threshold", "positive"}),
    "data.plausibility": frozenset({"min_value", "max_value", "total_gm_ml", "min_inside_brain"}),
}
# key -> (low, high, low inclusive, high inclusive): real-valued settings (an integer is a number too)
NUMBER_KEYS: dict[str, tuple[float, float, bool, bool]] = {
    "data.outcome.threshold": (0.0, 1.0, False, True),
    "data.plausibility.min_value": (-float("inf"), float("inf"), False, False),
    "data.plausibility.max_value": (0.0, float("inf"), False, False),
    "data.plausibility.min_inside_brain": (0.0, 1.0, True, True),
    "predict.threshold": (0.0, 1.0, False, False),
    "predict.coverage": (0.0, 1.0, False, False),
    "predict.distance_percentile": (0.0, 100.0, False, True),
    "evaluation.champion.max_p": (0.0, 1.0, False, True),
}
# key -> allowed values
CHOICE_KEYS: dict[str, tuple[str, ...]] = {
    "data.outcome.positive": ("responder", "non-responder"),
    "data.on_grid_mismatch": ("error", "resample"),
    "data.source": ("images", "table"),
}
# the hyperparameters a model config may set (src.models.pipeline passes SVC_PARAMS to scikit-learn's SVC)
SVC_PARAMS = ("C", "kernel", "gamma", "class_weight", "degree", "coef0", "tol", "max_iter")
MODEL_PARAMS = frozenset({*SVC_PARAMS, "pca_variance", "pca_components"})
SPEC_KEYS = frozenset({"type", "low", "high", "log", "grid", "choices"})


def check_config(cfg: Any) -> None:
    """Every integer setting is an integer in range (``cv.repeats=abc``, ``n_jobs=0`` are refused by name),
    and no section holds a key its reader does not know (``cv.n_trails`` is refused, not ignored)."""
    for section, known in SECTION_KEYS.items():
        reject_unknown_keys(_select(cfg, section), known, section)
    model = _select(cfg, "model")
    if isinstance(model, Mapping):
        for group in ("search_space", "fixed"):
            reject_unknown_keys(model.get(group), MODEL_PARAMS, f"model.{group}")
        for name, spec in (model.get("search_space") or {}).items():
            reject_unknown_keys(spec, SPEC_KEYS, f"model.search_space.{name}")
    for key, (minimum, nullable) in INTEGER_KEYS.items():
        value = _select(cfg, key)
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserInputError(f"config key {key}={value!r}: an integer is needed")
        if value < minimum or (key == "n_jobs" and value == 0):
            allowed = "-1 (all cores) or a positive number" if key == "n_jobs" else f">= {minimum}"
            raise UserInputError(f"config key {key}={value}: must be {allowed}")
    for key, (low, high, low_in, high_in) in NUMBER_KEYS.items():
        value = _select(cfg, key)
        if value is None:
            continue  # absent: the reader's default
        if isinstance(value, bool) or not isinstance(value, int | float) or value != value:
            raise UserInputError(f"config key {key}={value!r}: a number is needed")
        if not ((value >= low if low_in else value > low) and (value <= high if high_in else value < high)):
            interval = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
            raise UserInputError(f"config key {key}={value}: must be in {interval}")
    for key, allowed in CHOICE_KEYS.items():
        value = _select(cfg, key)
        if value is not None and value not in allowed:
            close = difflib.get_close_matches(str(value), allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"one of {', '.join(allowed)}"
            raise UserInputError(f"config key {key}={value!r} is not a known value ({hint})")


def _select(cfg: Mapping[str, Any], key: str) -> Any:  # a DictConfig is a Mapping too
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node
