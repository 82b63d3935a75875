"""Checks run before any expensive work: config values. Each failure is one message naming the key
(:class:`~src.utils.errors.UserInputError`).

The tables below are read off the typed settings (:mod:`src.config.settings`): the sections and their keys
from the dataclasses' fields, the bounds from each field's metadata. There is no second schema to keep.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Mapping
from typing import Any

from src.config.settings import ExperimentConfig
from src.utils.errors import UserInputError, reject_unknown_keys


def _schema_tables(
    schema: type, prefix: str = ""
) -> tuple[
    dict[str, frozenset[str]],
    dict[str, tuple[int, bool]],
    dict[str, tuple[float, float, bool, bool]],
    dict[str, tuple[str, ...]],
]:
    """(sections, integer keys, number keys, choice keys) of a settings dataclass and its sub-sections."""
    sections: dict[str, frozenset[str]] = {}
    integers: dict[str, tuple[int, bool]] = {}
    numbers: dict[str, tuple[float, float, bool, bool]] = {}
    choices: dict[str, tuple[str, ...]] = {}
    hints = typing.get_type_hints(schema)
    for spec in dataclasses.fields(schema):
        key, kind = f"{prefix}{spec.name}", hints[spec.name]
        options = typing.get_args(kind) if isinstance(kind, types.UnionType) else (kind,)
        nullable = type(None) in options
        inner = next((o for o in options if o is not type(None)), kind)
        if dataclasses.is_dataclass(inner):
            sections[key] = frozenset(f.name for f in dataclasses.fields(inner))
            more = _schema_tables(inner, f"{key}.")
            sections.update(more[0])
            integers.update(more[1])
            numbers.update(more[2])
            choices.update(more[3])
        elif "min" in spec.metadata:
            integers[key] = (int(spec.metadata["min"]), nullable)
        elif "interval" in spec.metadata:
            numbers[key] = spec.metadata["interval"]
        elif "choices" in spec.metadata:
            choices[key] = tuple(spec.metadata["choices"])
    return sections, integers, numbers, choices


# Sections whose keys are read by name: a key not listed is a typo (Hydra merges unknown keys from config
# files silently, and the readers would ignore them). key -> (minimum, None allowed): integer settings;
# key -> (low, high, low inclusive, high inclusive): real-valued settings; key -> allowed values.
SECTION_KEYS, INTEGER_KEYS, NUMBER_KEYS, CHOICE_KEYS = _schema_tables(ExperimentConfig)

# the hyperparameters a model config may set (src.models.pipeline passes SVC_PARAMS to scikit-learn's SVC)
SVC_PARAMS = ("C", "kernel", "gamma", "class_weight", "degree", "coef0", "tol", "max_iter")
# the regression siblings (src.validation.regression): "estimator" picks svr or kernel_ridge
REGRESSION_PARAMS = ("estimator", "epsilon", "alpha")
# the learners `model.fixed.estimator` can name (absent: the SVC). A name not listed is refused: it used to
# fall through to an RBF SVC without a word
ESTIMATORS = ("svc", "svr", "kernel_ridge")
MODEL_PARAMS = frozenset({*SVC_PARAMS, *REGRESSION_PARAMS, "pca_variance", "pca_components"})
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
        check_estimator_name((model.get("fixed") or {}).get("estimator"))
    for key, (minimum, nullable) in INTEGER_KEYS.items():
        value = _select(cfg, key)
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserInputError(f"config key {key}={value!r}: an integer is needed")
        if value < minimum or (key == "n_jobs" and value == 0):  # n_jobs: -1 (all cores) or >= 1
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


def check_estimator_name(name: Any) -> None:
    """Refuse a learner name this version does not know (``model.fixed.estimator``), listing the known
    ones; ``None`` (absent) is the SVC."""
    if name is not None and name not in ESTIMATORS:
        close = difflib.get_close_matches(str(name), ESTIMATORS, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise UserInputError(
            f"config key model.fixed.estimator={name!r} is not a known learner ({hint}known: "
            f"{', '.join(ESTIMATORS)})"
        )


def _select(cfg: Mapping[str, Any], key: str) -> Any:  # a DictConfig is a Mapping too
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node
