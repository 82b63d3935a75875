"""Hyperparameter search spaces from config, translated to Optuna suggestions (and grids)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna

from src.config.settings import ModelSettings
from src.utils.errors import UserInputError


@dataclass(frozen=True)
class SearchSpace:
    """A model's search space: ``{param: spec}`` plus fixed parameters.

    Each spec is one of ``{type: float, low, high, log}``, ``{type: int, low, high, log}`` or
    ``{type: categorical, choices}``; an optional ``grid`` lists the values a GridSampler visits
    (categoricals visit their choices). The value ``"none"`` in choices means Python ``None``.
    Parameter names are the pipeline's: ``C``, ``gamma``, ``class_weight``, ``pca_variance``.
    """

    params: Mapping[str, Mapping[str, Any]]
    fixed: Mapping[str, Any]

    @classmethod
    def from_settings(cls, model: ModelSettings) -> SearchSpace:
        """The search space and fixed parameters of a model's typed settings, checked: each spec (the user's
        mapping, ``{type, low, high, log, grid, choices}``) has a known type, choices if categorical, and
        low <= high."""
        space = dict(model.search_space or {})
        for name, spec in space.items():
            kind = spec.get("type")
            if kind not in ("float", "int", "categorical"):
                raise UserInputError(
                    f"search space {name!r}: type must be float, int or categorical, got {kind!r}"
                )
            if kind == "categorical" and not spec.get("choices"):
                raise UserInputError(f"search space {name!r}: categorical needs 'choices'")
            if kind != "categorical" and not spec["low"] <= spec["high"]:
                raise UserInputError(f"search space {name!r}: need low <= high")
        return cls(params=space, fixed=dict(model.fixed or {}))

    @classmethod
    def from_config(cls, model: Mapping[str, Any]) -> SearchSpace:
        """:meth:`from_settings` of a model section given as a mapping (a ``conf/model/*.yaml`` file)."""
        return cls.from_settings(
            ModelSettings(
                search_space=dict(model.get("search_space") or {}), fixed=dict(model.get("fixed") or {})
            )
        )

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        """Draw one parameter set (fixed parameters included)."""
        out: dict[str, Any] = dict(self.fixed)
        for name, spec in self.params.items():
            if spec["type"] == "float":
                out[name] = trial.suggest_float(
                    name, float(spec["low"]), float(spec["high"]), log=bool(spec.get("log", False))
                )
            elif spec["type"] == "int":
                out[name] = trial.suggest_int(
                    name, int(spec["low"]), int(spec["high"]), log=bool(spec.get("log", False))
                )
            else:
                out[name] = trial.suggest_categorical(name, list(spec["choices"]))
        return {k: from_choice(v) for k, v in out.items()}

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """The Optuna distribution of every tuned parameter (to rebuild studies from stored trials)."""
        out: dict[str, optuna.distributions.BaseDistribution] = {}
        for name, spec in self.params.items():
            log = bool(spec.get("log", False))
            if spec["type"] == "float":
                out[name] = optuna.distributions.FloatDistribution(
                    float(spec["low"]), float(spec["high"]), log=log
                )
            elif spec["type"] == "int":
                out[name] = optuna.distributions.IntDistribution(int(spec["low"]), int(spec["high"]), log=log)
            else:
                out[name] = optuna.distributions.CategoricalDistribution(list(spec["choices"]))
        return out

    def grid(self) -> dict[str, list[Any]]:
        """The GridSampler search space; every non-categorical parameter needs a ``grid`` list."""
        grid = {}
        for name, spec in self.params.items():
            if spec["type"] == "categorical":
                grid[name] = list(spec.get("grid", spec["choices"]))
            elif "grid" not in spec:
                raise UserInputError(f"sampler=grid needs a 'grid' list for parameter {name!r}")
            else:
                grid[name] = list(spec["grid"])
        return grid

    def grid_size(self) -> int:
        """Number of parameter combinations a GridSampler visits."""
        size = 1
        for values in self.grid().values():
            size *= len(values)
        return size


def default_search_space() -> SearchSpace:
    """The linear SVC of ``conf/model/svc_linear.yaml`` (tests/test_estimator.py keeps the two equal): the
    estimator's default when it is used without a config."""
    return SearchSpace(
        params={
            "C": {
                "type": "float",
                "low": 1.0e-4,
                "high": 10.0,
                "log": True,
                "grid": [1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0],
            },
            "class_weight": {"type": "categorical", "choices": ["balanced", "none"]},
        },
        fixed={"kernel": "linear"},
    )


def from_choice(value: Any) -> Any:
    """A configured or tabulated value as the estimator takes it: ``"none"``/``"null"`` -> ``None``."""
    return None if isinstance(value, str) and value.lower() in ("none", "null") else value


def to_choice(value: Any) -> Any:
    """A parameter value as a table cell or an MLflow param: ``None`` -> ``"none"``."""
    return "none" if value is None else value
