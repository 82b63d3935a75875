"""The model registry's alias: the evaluation promotes a model that passed, ``src.predict`` loads by alias.

A registered version gets the alias (``evaluation.champion.alias``, default ``champion``) and a description
of the evidence only when the locked model's pooled external evaluation passes (permutation p of the BAC
below ``evaluation.champion.max_p``). The alias moves to the newest passing version; a version that fails a
re-evaluation loses it. The patient scorer registered beside the model (``<model_name>-scorer``) follows the
same alias, so ``mlflow models serve -m models:/<name>-scorer@champion`` serves the promoted model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src.tracking.store import TrackingSettings, connect
from src.tracking.training import SCORER_SUFFIX
from src.validation.ensemble import EnsembleModel

log = logging.getLogger(__name__)


def _versions_of_run(client: Any, name: str, run_id: str) -> list[Any]:
    return list(client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"))


def promote_if_passing(
    settings: TrackingSettings,
    training: Mapping[str, Any],
    external: Mapping[str, Any] | None,
    alias: str,
    max_p: float,
    evidence: str,
) -> str:
    """Set ``alias`` on the training run's registered model (and scorer) when ``external['p_bac'] < max_p``;
    remove it from them when it fails. Returns one line saying what was done (printed by the evaluation)."""
    from mlflow.tracking import MlflowClient

    name = training.get("registered_model")
    if not name or not training.get("model_version"):
        return "model registry: the model was not registered (tracking.register_model=false), no alias set"
    if external is None or external.get("p_bac") is None:
        return f"model registry: no external cohort evaluated, alias '{alias}' not set"
    connect(settings)
    client = MlflowClient()
    passed = float(external["p_bac"]) < max_p
    verdict = (
        f"external BAC {100 * external['bac']:.1f} % (p = {external['p_bac']:.3g}, n = {external['n']}) "
        f"{'<' if passed else '>='} {max_p:g}"
    )
    changed = []
    for registered in (name, name + SCORER_SUFFIX):
        for version in _versions_of_run(client, registered, training["run_id"]):
            if passed:
                client.set_registered_model_alias(registered, alias, version.version)
                client.update_model_version(
                    registered, version.version, f"'{alias}': passed the external evaluation. {evidence}"
                )
                changed.append(f"{registered} v{version.version}")
            elif alias in client.get_model_version(registered, version.version).aliases:
                client.delete_registered_model_alias(registered, alias)
                changed.append(f"{registered} v{version.version}")
    if passed:
        return f"model registry: '{alias}' set on {', '.join(changed)} ({verdict})"
    removed = f"; removed from {', '.join(changed)}" if changed else ""
    return f"model registry: '{alias}' not set ({verdict}){removed}"


def load_by_alias(settings: TrackingSettings, alias: str, local_dir: Path) -> tuple[EnsembleModel, str]:
    """The registered model version carrying ``alias``, downloaded to ``local_dir`` and verified against the
    hash its training run recorded (``registry_model_sha256``). (model, ``models:/<name>@<alias> (version
    N)``). Raises LookupError when the store, the model or the alias is not there."""
    import mlflow
    from mlflow.exceptions import MlflowException

    from src.tracking.evaluation import load_registered_model

    connect(settings)
    client = mlflow.tracking.MlflowClient()
    uri = f"models:/{settings.model_name}@{alias}"
    try:
        version = client.get_model_version_by_alias(settings.model_name, alias)
        sha256 = client.get_run(version.run_id).data.tags.get("registry_model_sha256")
    except MlflowException as error:
        raise LookupError(
            f"{uri} not found in {settings.tracking_uri}: {error.message.splitlines()[0]}"
        ) from error
    if not sha256:
        raise LookupError(f"{uri}: its training run recorded no model hash")
    model, _ = load_registered_model(
        settings, {"run_id": version.run_id, "registry_uri": uri}, sha256, local_dir
    )
    return model, f"{uri} (version {version.version}, training run {version.run_id}, sha256 {sha256})"


def model_for_prediction(
    settings: TrackingSettings, alias: str | None, train_dir: Path, local_dir: Path
) -> tuple[EnsembleModel, str]:
    """The model ``src.predict`` scores with, and where it came from: the registry version carrying ``alias``
    when tracking is on and the store has one, else the verified DVC copy in ``train_dir`` (the returned
    source says why). A model that fails verification is an error wherever it comes from."""
    from src.validation.ensemble import ModelIntegrityError, load_trained_model, train_metrics

    reason = "tracking off" if not settings.enabled else "no registry alias configured"
    if settings.enabled and alias:
        try:
            return load_by_alias(settings, alias, local_dir)
        except ModelIntegrityError:
            raise
        except Exception as error:  # store gone or unreadable, no model, no alias yet
            reason = str(error).splitlines()[0]
    model = load_trained_model(train_dir)
    sha256 = train_metrics(train_dir)["provenance"]["model_sha256"]
    return model, f"{train_dir / 'model'} (verified DVC copy, sha256 {sha256}; registry: {reason})"
