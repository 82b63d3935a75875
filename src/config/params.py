"""``params.yaml``, what ``dvc repro`` runs: read and checked once, so that a wrong shape (a string where a
list belongs, a list where a mapping belongs) is one error naming the key, not a traceback later."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from src.utils.errors import MissingInputError, UserInputError


def read_params(path: str | Path) -> dict[str, Any]:
    """The parsed ``params.yaml``: ``feature_sets`` a list of names, ``experiments`` a mapping of name ->
    ``{features: <name>, model: <name>}``. Raises :class:`UserInputError` naming the file and the key."""
    path = Path(path)
    try:
        params = yaml.safe_load(path.read_text()) or {}
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise UserInputError(f"{path} cannot be read as YAML ({type(err).__name__}: {err})") from err
    if not isinstance(params, dict):
        raise UserInputError(f"{path}: a mapping of settings is needed, not a {type(params).__name__}")
    sets = params.get("feature_sets")
    if sets is not None and (not isinstance(sets, list) or not all(isinstance(s, str) for s in sets)):
        raise UserInputError(
            f"{path}: feature_sets={sets!r} must be a list of feature set names, e.g. feature_sets: [{sets}]"
            if isinstance(sets, str)
            else f"{path}: feature_sets={sets!r} must be a list of feature set names"
        )
    experiments = params.get("experiments")
    if experiments is not None:
        if not isinstance(experiments, dict):
            raise UserInputError(
                f"{path}: experiments must be a mapping of name -> {{features: <set>, model: <model>}}, "
                f"not a {type(experiments).__name__} ({experiments!r})"
            )
        for name, spec in experiments.items():
            # the feature set is what the cohorts stage plans for; the model (the experiment's) may be absent
            if (
                not isinstance(spec, dict)
                or not all(isinstance(spec.get(k, ""), str) for k in ("features", "model"))
                or "features" not in spec
            ):
                raise UserInputError(
                    f"{path}: experiments.{name}={spec!r} must be {{features: <set>, model: <model>}}"
                )
    return params


def listed_experiments(given: list[str] | None, params_file: str | Path, key: str) -> list[str]:
    """The experiments a command works on: ``given`` (the setting ``key``, e.g. ``report.experiments``), or
    when it is null the experiments ``params.yaml`` lists — those ``dvc repro`` trains."""
    if given:
        return list(given)
    params = Path(params_file)
    if not params.is_file():
        raise MissingInputError(f"{params} not found: set {key}=[name,...]")
    experiments = read_params(params).get("experiments")
    if not experiments:
        raise UserInputError(f"{params} lists no experiments: set {key}=[name,...]")
    return list(experiments)
