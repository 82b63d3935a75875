"""The model registry's alias: the evaluation promotes a model that passed, ``src.predict`` loads by alias.

A registered version gets the alias (``evaluation.champion.alias``, default ``champion``) and a description
of the evidence only when the locked model's pooled external evaluation passes (permutation p of the BAC
below ``evaluation.champion.max_p``). The alias moves to the newest passing version; a version that fails a
re-evaluation loses it. The patient scorer registered beside the model (``<model_name>-scorer``) follows the
same alias, so ``mlflow models serve -m models:/<name>-scorer@champion`` serves the promoted model.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from src.evaluation.results import CohortResult
from src.tracking.evaluation import load_registered_model, read_training_run
from src.tracking.store import TrackingSettings, connect
from src.tracking.training import SCORER_SUFFIX
from src.utils.provenance import training_model_uri
from src.validation.ensemble import EnsembleModel, ModelIntegrityError, load_trained_model, recorded_sha256

log = logging.getLogger(__name__)


# the version description: the training's evidence (written at registration), then a paragraph per evaluation
EVALUATION_HEADING = "External evaluation:"


def _versions_of_run(client: Any, name: str, run_id: str) -> list[Any]:
    return list(client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'"))


def promote_if_passing(
    settings: TrackingSettings,
    training: Mapping[str, Any],
    external: CohortResult | None,
    alias: str,
    max_p: float,
    evidence: str,
    simulated: bool = False,
    allow_simulated: bool = False,
) -> str:
    """Set ``alias`` on the training run's registered model (and scorer) when ``external.p_bac < max_p``;
    remove it from them when it fails. Either way the evaluation (date, verdict, ``evidence``) is appended to
    the versions' descriptions. Returns one line saying what was done (printed by the evaluation)."""
    from mlflow.tracking import MlflowClient

    name = training.get("registered_model")
    if not name or not training.get("model_version"):
        return "model registry: the model was not registered (tracking.register_model=false), no alias set"
    if external is None or external.p_bac is None:
        return f"model registry: no external cohort evaluated, alias '{alias}' not set"
    connect(settings)
    client = MlflowClient()
    passed = float(external.p_bac) < max_p
    verdict = (
        f"external BAC {100 * external.bac:.1f} % (p = {external.p_bac:.3g}, n = {external.n}) "
        f"{'<' if passed else '>='} {max_p:g}"
    )
    if passed and simulated and not allow_simulated:
        # a model of simulated cohorts is not a model of patients: src.predict must not pick it by default
        passed = False
        verdict += "; trained on simulated data: not set unless evaluation.champion.allow_simulated=true"
    changed = []
    # every evaluation, passed or not, is added to the version's description with its date: the registry
    # shows the bad news too (the training's evidence stays first, the evaluations follow in order)
    paragraph = (
        f"{EVALUATION_HEADING} {time.strftime('%Y-%m-%d %H:%M')}, '{alias}' "
        f"{'passed' if passed else 'not passed'} ({verdict}). {evidence}"
    )
    for registered in (name, name + SCORER_SUFFIX):
        for version in _versions_of_run(client, registered, training["run_id"]):
            before = (version.description or "").strip()
            client.update_model_version(registered, version.version, f"{before}\n\n{paragraph}".strip())
            if passed:
                client.set_registered_model_alias(registered, alias, version.version)
                changed.append(f"{registered} v{version.version}")
            elif alias in client.get_model_version(registered, version.version).aliases:
                client.delete_registered_model_alias(registered, alias)
                changed.append(f"{registered} v{version.version}")
    if passed:
        return f"model registry: '{alias}' set on {', '.join(changed)} ({verdict})"
    removed = f"; removed from {', '.join(changed)}" if changed else ""
    return f"model registry: '{alias}' not set ({verdict}){removed}"


# the registry's description column holds 5000 characters (MLflow's SQL schema; PostgreSQL enforces it)
DESCRIPTION_LIMIT = 5000
MODEL_CARD_ARTIFACT = "model_card"


CARD_START, CARD_END = "<!-- model card -->", "<!-- /model card -->"


def attach_model_card(settings: TrackingSettings, training: Mapping[str, Any], card: Path) -> str:
    """The model card on the registered model: an artifact of the training run (``model_card/``), the
    version tag ``model_card`` (the artifact's URI) and a block at the end of the run's model versions'
    descriptions (replacing an earlier card; the training's evidence and the evaluations stay before it; cut
    to the registry's limit with a pointer to the artifact). Returns one line saying what was done."""
    import re

    from mlflow.tracking import MlflowClient

    connect(settings)
    client = MlflowClient()
    client.log_artifact(training["run_id"], str(card), MODEL_CARD_ARTIFACT)
    uri = f"runs:/{training['run_id']}/{MODEL_CARD_ARTIFACT}/{card.name}"
    name = training.get("registered_model")
    if not name or not training.get("model_version"):
        return f"model card: {uri} (the model was not registered)"
    text = card.read_text()
    pattern = re.compile(re.escape(CARD_START) + ".*?" + re.escape(CARD_END), re.S)
    updated = []
    for registered in (name, name + SCORER_SUFFIX):
        for version in _versions_of_run(client, registered, training["run_id"]):
            before = pattern.sub("", version.description or "").strip()
            pointer = f"\n\n(the whole card: {uri})"
            room = DESCRIPTION_LIMIT - len(before) - len(pointer) - len(CARD_START) - len(CARD_END) - 8
            body = text if len(text) <= room else text[: max(room, 0)] + pointer
            block = f"{CARD_START}\n{body}\n{CARD_END}"
            client.update_model_version(registered, version.version, f"{before}\n\n{block}".strip())
            client.set_model_version_tag(registered, version.version, "model_card", uri)
            updated.append(f"{registered} v{version.version}")
    return f"model card: {uri}, on {', '.join(updated) or 'no registered version'}"


def load_by_alias(settings: TrackingSettings, alias: str, local_dir: Path) -> tuple[EnsembleModel, str]:
    """The registered model version carrying ``alias``, downloaded to ``local_dir`` and verified against the
    hash its training run recorded (``registry_model_sha256``). (model, ``models:/<name>@<alias> (version
    N)``). Raises LookupError when the store, the model or the alias is not there."""
    import mlflow
    from mlflow.exceptions import MlflowException

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


def evidence_description(results: Mapping[str, CohortResult], provenance: Mapping[str, Any]) -> str:
    """The registry description of an evaluated model: each cohort's numbers, the code and the model."""
    cohorts = "; ".join(
        f"{name}: BAC {100 * r.bac:.1f} %, AUC {r.auc:.2f}, n = {r.n}"
        + ("" if r.p_bac is None else f", p = {r.p_bac:.3g}")
        for name, r in results.items()
    )
    git = provenance.get("git") or {}
    return (
        f"Evaluated {time.strftime('%Y-%m-%d %H:%M')}: {cohorts}. Code {git.get('commit')}"
        f"{' (uncommitted changes)' if git.get('dirty') else ''}, model sha256 {provenance['model_sha256']}."
    )


@dataclass
class LockedModel:
    """The locked ensemble and where it came from: ``training`` is the MLflow training run record (None when
    the DVC copy is used)."""

    model: EnsembleModel
    source: str
    training: dict[str, Any] | None = None


def load_locked_model(settings: TrackingSettings, train_dir: Path, local_dir: Path) -> LockedModel:
    """The model ``src.evaluate`` scores with.

    Every load is verified against a sha256 recorded at train time (``train/metrics.json`` for the DVC
    copy, ``train/tracking.json`` for MLflow's copy); a missing or malformed hash is an error, never an
    unverified load. With tracking on and a tracked training run, the model comes from the MLflow registry
    (downloaded to ``local_dir``, verified, built by this project from the verified file); if the store does
    not hold that run or cannot be read (deleted or corrupted ``mlruns/``, another ``tracking.uri``), the
    DVC-versioned copy is used with one warning and nothing is logged to MLflow. A model file that fails
    verification is an error wherever it comes from.
    """
    recorded_sha256(train_dir)  # the DVC copy's record is checked even when the registry's copy is used
    if settings.enabled:
        training = read_training_run(train_dir)
        if training is None:
            log.warning("%s was trained with tracking off: using %s", train_dir, train_dir / "model")
        else:
            try:
                # verified against the hash of MLflow's own copy, recorded at train time
                model, _ = load_registered_model(settings, training, training.get("model_sha256"), local_dir)
                return LockedModel(model, training_model_uri(training), training)
            except ModelIntegrityError:
                raise  # a swapped or corrupted model is an error, never a silent fallback
            except Exception as error:  # store gone, corrupt or unreachable: MLflow/SQLAlchemy/network errors
                log.warning(
                    "%s; using the DVC-versioned model in %s, not logging to MLflow", error, train_dir
                )
    model, _ = load_trained_model(train_dir)
    return LockedModel(model, str(train_dir / "model"))


def model_for_prediction(
    settings: TrackingSettings, alias: str | None, train_dir: Path, local_dir: Path
) -> tuple[EnsembleModel, str]:
    """The model ``src.predict`` scores with, and where it came from: the registry version carrying ``alias``
    when tracking is on and the store has one, else the verified DVC copy in ``train_dir`` (the returned
    source says why). A model that fails verification, or has no recorded hash, is an error wherever it
    comes from."""
    reason = "tracking off" if not settings.enabled else "no registry alias configured"
    if settings.enabled and alias:
        try:
            return load_by_alias(settings, alias, local_dir)
        except ModelIntegrityError:
            raise
        except Exception as error:  # store gone or unreadable, no model, no alias yet
            reason = str(error).splitlines()[0]
    model, sha256 = load_trained_model(train_dir)
    return model, f"{train_dir / 'model'} (verified DVC copy, sha256 {sha256}; registry: {reason})"
