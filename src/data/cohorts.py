"""Cohort roles: which cohort trains the model, which test it, which is the treatment control.

The data config (``conf/data/<name>.yaml``) lists its cohorts once, each with a *role*; every stage (train,
evaluate, report) reads the roles, never cohort names::

    cohorts:
      - {name: discovery,  role: discovery, treatment: ketamine}
      - {name: hospital_b, role: external,  treatment: ketamine}
      - {name: placebo,    role: control,   treatment: saline, table: tables/placebo.tsv}

``discovery`` (exactly one) is the training cohort; ``external`` cohorts are independent cohorts given the
same treatment (evaluated pooled, and each alone when there are several); ``control`` cohorts received the
control treatment (the treatment-specificity test compares them with the external cohorts). A bare name
(``cohorts: [siteA, siteB]``) is accepted too: the first is the discovery cohort, the others take their role
from the ``treatment`` column of their participants.tsv (ketamine -> external, saline or midazolam ->
control).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from src.config.settings import DataSettings
from src.data.clinical import ClinicalVariable, clinical_variables
from src.data.contract import DEFAULT_SPACE, SIMULATOR, TREATMENTS
from src.data.loader import Cohort, ImageLayout, load_cohort
from src.utils.errors import UserInputError

ROLES: tuple[str, ...] = ("discovery", "external", "control")
# the treatment a role implies when a bare cohort name is given
_ROLE_OF_TREATMENT = {"ketamine": "external", "saline": "control", "midazolam": "control"}
_KEYS = ("name", "role", "treatment", "path", "table", "table_format", "layout", "pipeline", "space")


class CohortConfigError(UserInputError):
    """The data config's ``cohorts`` list is inconsistent; the message names the cohort and the key."""


@dataclass(frozen=True)
class CohortSpec:
    """One cohort of the data config.

    Parameters
    ----------
    name : str
        Cohort name: its feature-table file name and its label in outputs.
    role : {"discovery", "external", "control"}
    treatment : str, optional
        Treatment every subject received; checked against participants.tsv (and fills the column when
        participants.tsv has none).
    path : str, optional
        Cohort folder; default ``<data.root>/<name>``.
    table : str, optional
        Regional-volume table (``data.source=table``); relative paths are relative to the cohort folder.
    table_format : str, optional
        Reader of ``table`` (default ``data.table_format``).
    layout, pipeline, space : str, optional
        This cohort's image naming, derivatives folder and space entity, when they differ from the data
        config's (a consortium whose sites ran different tools).
    """

    name: str
    role: str
    treatment: str | None = None
    path: str | None = None
    table: str | None = None
    table_format: str | None = None
    layout: str | None = None
    pipeline: str | None = None
    space: str | None = None

    def folder(self, root: str | Path) -> Path:
        """The cohort's folder: its ``path``, else ``<root>/<name>``."""
        return Path(self.path) if self.path else Path(root) / self.name

    def regional_table(self, data: DataSettings) -> tuple[Path, str]:
        """(path, format) of this cohort's regional table (``data.source=table``); relative paths are inside
        the cohort folder, the format defaults to ``data.table_format``."""
        if not self.table:
            raise CohortConfigError(
                f"cohort {self.name!r}: data.source=table but the cohort has no 'table' in data.cohorts"
            )
        path = Path(self.table)
        path = path if path.is_absolute() else self.folder(data.root) / path
        return path, self.table_format or data.table_format


def _declared_treatment(folder: Path, name: str) -> str:
    path = folder / "participants.tsv"
    if not path.is_file():
        raise CohortConfigError(
            f"cohort {name!r}: no role given and {path} not found to infer it; declare it in the data "
            f"config: {{name: {name}, role: external|control, treatment: ...}}"
        )
    values = pd.read_csv(path, sep="\t", dtype=str, usecols=lambda c: c.strip() == "treatment")
    found = sorted(set(values.iloc[:, 0].dropna().str.strip())) if values.shape[1] else []
    if len(found) != 1 or found[0] not in _ROLE_OF_TREATMENT:
        raise CohortConfigError(
            f"cohort {name!r}: no role given and its treatment column holds {found}, so the role cannot be "
            f"inferred; declare it in the data config: {{name: {name}, role: external|control}}"
        )
    return found[0]


def cohort_specs(data: DataSettings) -> list[CohortSpec]:
    """The validated cohorts of the data settings, in config order (``data.cohorts`` is the user's list:
    names or mappings, parsed and checked here).

    Raises
    ------
    CohortConfigError
        Unknown key or role, duplicate name, not exactly one discovery cohort, a cohort name that clashes
        with an evaluation group name (``external``/``control`` when that role has several cohorts).
    """
    raw: Sequence[Any] = data.cohorts or []
    if isinstance(raw, Mapping) or isinstance(raw, str):
        raise CohortConfigError(
            "data.cohorts must be a list, e.g. "
            "[{name: discovery, role: discovery}, {name: ext, role: external}]"
        )
    specs: list[CohortSpec] = []
    for i, entry in enumerate(raw):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, Mapping) or not entry.get("name"):
            raise CohortConfigError(f"data.cohorts[{i}] needs a name: got {entry!r}")
        entry = dict(entry)
        name = str(entry["name"])
        unknown = sorted(set(entry) - set(_KEYS))
        if unknown:
            raise CohortConfigError(f"cohort {name!r}: unknown key(s) {unknown} (allowed: {list(_KEYS)})")
        if not entry.get("role"):
            if i == 0:
                entry["role"] = "discovery"
            else:
                simulated = (data.simulation or {}).get("cohorts", {}).get(name, {})
                folder = Path(entry["path"]) if entry.get("path") else Path(data.root) / name
                treatment = simulated.get("treatment") or _declared_treatment(folder, name)
                entry["role"] = _ROLE_OF_TREATMENT[treatment]
        if entry["role"] not in ROLES:
            raise CohortConfigError(f"cohort {name!r}: role {entry['role']!r} is not one of {list(ROLES)}")
        if entry.get("treatment") is not None and entry["treatment"] not in TREATMENTS:
            raise CohortConfigError(
                f"cohort {name!r}: treatment {entry['treatment']!r} is not one of {list(TREATMENTS)}"
            )
        specs.append(CohortSpec(**{k: (None if v is None else str(v)) for k, v in entry.items()}))
    names = [s.name for s in specs]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise CohortConfigError(f"data.cohorts lists cohort(s) {dup} more than once")
    discovery = [s.name for s in specs if s.role == "discovery"]
    if len(discovery) != 1:
        raise CohortConfigError(
            "data.cohorts needs exactly one cohort with role 'discovery' (the training cohort), "
            f"found {discovery}"
        )
    for role in ("external", "control"):
        members = [s.name for s in specs if s.role == role]
        clash = sorted(set(members) & set(ROLES)) if len(members) > 1 else []
        if clash:
            raise CohortConfigError(
                f"cohort {clash[0]!r}: a name that is also an evaluation group; rename it (role {role!r} has "
                f"{len(members)} cohorts, evaluated pooled as {role!r} and each under its own name)"
            )
    return specs


def discovery_cohort(data: DataSettings) -> str:
    """Name of the discovery (training) cohort."""
    return next(s.name for s in cohort_specs(data) if s.role == "discovery")


def cohort_names(data: DataSettings) -> list[str]:
    """Names of ``data.cohorts`` in config order (without resolving roles)."""
    return [str(e if isinstance(e, str) else e["name"]) for e in data.cohorts or []]


def evaluation_groups(specs: Sequence[CohortSpec]) -> dict[str, list[str]]:
    """What the evaluation scores, from the cohorts of :func:`cohort_specs`: ``external`` (all external
    cohorts pooled), ``control`` (all control cohorts pooled) and, where a role has several cohorts, each
    cohort alone under its own name. Roles without a cohort are absent."""
    groups: dict[str, list[str]] = {}
    for role in ("external", "control"):
        members = [s.name for s in specs if s.role == role]
        if members:
            groups[role] = members
        if len(members) > 1:
            groups.update({name: [name] for name in members})
    return groups


def load_configured(
    spec: CohortSpec, data: DataSettings, tissues: tuple[str, ...] = ("GM",), with_images: bool = True
) -> Cohort:
    """:func:`~src.data.loader.load_cohort` of one cohort of the data config: the cohort's own layout,
    pipeline and space if it sets them, else the config's; the config's outcome and grid policy; the
    cohort's declared treatment."""
    images = ImageLayout(
        naming=spec.layout or data.layout,
        pipeline=spec.pipeline or data.pipeline,
        space=spec.space or data.space or DEFAULT_SPACE,
        on_grid_mismatch=data.on_grid_mismatch,
    )
    return load_cohort(
        spec.folder(data.root),
        name=spec.name,
        images=images,
        tissues=tissues,
        outcome=data.outcome,
        with_images=with_images,
        treatment=spec.treatment,
        clinical=declared_clinical(data),
    )


def declared_clinical(data: DataSettings) -> tuple[ClinicalVariable, ...]:
    """The data config's clinical predictors, checked (the follow-up score is refused: the outcome)."""
    outcome = data.outcome
    targets = (outcome.target,) if outcome.target not in ("percent_reduction", "followup") else ()
    return clinical_variables(data.clinical, outcome_columns=(outcome.followup, *targets, "outcome"))


def is_marked_simulated(folder: str | Path) -> bool:
    """Whether the cohort folder's ``dataset_description.json`` says the simulator wrote it."""
    path = Path(folder) / "dataset_description.json"
    try:
        description = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    generated = description.get("GeneratedBy") if isinstance(description, dict) else None
    return any(isinstance(g, dict) and g.get("Name") == SIMULATOR for g in generated or [])


def is_simulated(data: DataSettings) -> bool:
    """The data is simulated: the embedded simulation's config (it carries ``simulation``), or any of its
    cohort folders carries the simulator's mark (:data:`SIMULATOR_MARK`) — whatever the config is called."""
    if data.name == "simulated" or data.simulation is not None:
        return True
    try:
        specs = cohort_specs(data)
    except Exception:  # a config whose cohorts cannot be listed has none to read a mark from
        return False
    return any(is_marked_simulated(spec.folder(data.root)) for spec in specs)


def trained_on_simulated(train: Mapping[str, Any], data: DataSettings) -> bool:
    """Whether a trained model's data were simulated: its training record (``provenance.simulated`` of the
    train ``metrics.json``, written from the cohorts' mark when it trained), else :func:`is_simulated` of
    its data config now (a record from before the mark was recorded)."""
    recorded = (train.get("provenance") or {}).get("simulated")
    return bool(recorded) if recorded is not None else is_simulated(data)
