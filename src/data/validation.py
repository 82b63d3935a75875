"""Checking a user's cohorts against the data contract and against what the pipeline will ask of them
(``python -m src.data.prepare`` with a data config other than the simulation)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from src.config.params import read_params
from src.config.settings import DataSettings, FeaturesSettings
from src.data.cohorts import CohortSpec, cohort_specs, load_configured
from src.data.contract import TISSUES
from src.data.loader import Cohort, CohortError, load_regional_table
from src.data.plausibility import PlausibilityBounds, check_gm_maps
from src.utils.io import file_md5

log = logging.getLogger(__name__)
CONF = Path(__file__).resolve().parents[2] / "conf"


@dataclass
class PlannedFeatures:
    """A feature set the pipeline will build: what it needs of a cohort, and the experiments using it."""

    kind: str
    tissues: list[str]
    experiments: list[str] = field(default_factory=list)


def _feature_config(name: str, source: Path) -> dict[str, Any]:
    """``conf/features/<name>.yaml`` with the files of its ``defaults`` list under it (``gm_voxel_2mm``
    inherits ``kind`` and ``tissues`` from ``gm_voxel``)."""
    path = CONF / "features" / f"{name}.yaml"
    if not path.is_file():
        raise CohortError(f"{source}: feature set {name!r} has no config {path}")
    own = yaml.safe_load(path.read_text()) or {}
    merged: dict[str, Any] = {}
    for base in own.pop("defaults", None) or []:
        merged.update(own if base == "_self_" else _feature_config(str(base), path))
    return {**merged, **own}


def pipeline_feature_sets(params_file: str | Path, current: FeaturesSettings) -> dict[str, PlannedFeatures]:
    """Feature sets the pipeline will build or train -> what they need plus the experiments using them.

    From ``params.yaml`` (``feature_sets`` and each experiment's ``features``) when it exists, else the
    composed config's own feature set."""
    params_path = Path(params_file)
    if not params_path.is_file():
        return {current.name: PlannedFeatures(current.kind, list(current.tissues))}
    params = read_params(params_path)
    used: dict[str, list[str]] = {}
    for name in params.get("feature_sets") or []:
        used.setdefault(name, [])
    for experiment, spec in (params.get("experiments") or {}).items():
        used.setdefault(spec["features"], []).append(experiment)
    plan = {}
    for name, experiments in used.items():
        features = _feature_config(name, params_path)
        plan[name] = PlannedFeatures(
            str(features.get("kind", "roi")), list(features.get("tissues", ["GM"])), experiments
        )
    return plan


def _user(experiments: list[str], feature_set: str) -> str:
    used = f"experiment(s) {', '.join(experiments)} use" if experiments else "params.yaml builds"
    return f"{used} feature set {feature_set!r}"


def validate_cohorts(
    data: DataSettings, plan: Mapping[str, PlannedFeatures], bounds: PlausibilityBounds | None = None
) -> dict[str, Any]:
    """Load every cohort of ``data`` (raising a clear error naming the subject/file), check the feature sets
    of ``plan`` against what each cohort holds, with ``bounds`` read every GM map and check it is a
    plausible modulated GM map in MNI space (:mod:`src.data.plausibility`), and summarise the cohorts.

    Raises
    ------
    CohortError
        One message listing every (experiment, feature set, cohort, missing tissue or TIV) problem.
    """
    summary: dict[str, Any] = {"root": str(data.root), "cohorts": {}}
    source = data.source
    problems: list[str] = []
    validated: list[Cohort] = []
    if source == "table":
        problems += [
            f"{_user(fs.experiments, name)}, voxel features: data.source=table has no images"
            for name, fs in plan.items()
            if fs.kind == "voxel"
        ]
    for spec in cohort_specs(data):
        if source == "table":
            cohort = load_configured(spec, data, (), with_images=False)
            path, table_format = spec.regional_table(data)
            _, table_tiv = load_regional_table(path, cohort, table_format)
            if "tiv" not in cohort.participants.columns and table_tiv is None:
                problems.append(
                    f"cohort {spec.name!r}: no TIV: participants.tsv has no 'tiv' column and format "
                    f"{table_format!r} carries none"
                )
            summary["cohorts"][spec.name] = _summary(spec, cohort) | {"table_md5": _md5(path)}
            continue
        cohort = load_configured(spec, data, ("GM",), with_images=True)
        available = {"GM": None}
        for tissue in TISSUES[1:]:
            try:
                load_configured(spec, data, (tissue,), with_images=True)
                available[tissue] = None
            except CohortError as err:
                available[tissue] = str(err)
        has_tiv = "tiv" in cohort.participants.columns
        needed: set[str] = {"GM"}
        for name, fs in plan.items():
            tissues = list(fs.tissues)
            for tissue in tissues:
                if tissue not in available or available[tissue] is not None:
                    problems.append(
                        f"{_user(fs.experiments, name)}, which needs {tissue} maps; cohort {spec.name!r} "
                        f"has none ({available.get(tissue) or 'unknown tissue'})"
                    )
            if not has_tiv:
                lacking = [t for t in TISSUES if available.get(t) is not None]
                if lacking:
                    problems.append(
                        f"{_user(fs.experiments, name)}: cohort {spec.name!r} has no TIV (no 'tiv' column "
                        f"in participants.tsv, no CAT12 report) and no {'/'.join(lacking)} map(s) to compute "
                        f"TIV = GM + WM + CSF ({available[lacking[0]]})"
                    )
            needed |= set(tissues) | (set() if has_tiv else set(TISSUES))
        if not problems:
            tissues = tuple(t for t in TISSUES if t in needed and available.get(t) is None)
            full = load_configured(spec, data, tissues, with_images=True)
            summary["cohorts"][spec.name] = _summary(spec, full) | {
                "images_md5": {t: [file_md5(p) for p in paths] for t, paths in sorted(full.images.items())}
            }
            validated.append(full)
    if problems:
        raise CohortError(
            "the data cannot support what params.yaml asks for:\n  - "
            + "\n  - ".join(dict.fromkeys(problems))
            + "\nRemove those experiments/feature sets from params.yaml (feature_sets, experiments), or add "
            "the missing maps or a 'tiv' column."
        )
    # the data themselves last: every file of every cohort passed the cheaper checks above
    for cohort in validated if bounds is not None else []:
        summary["cohorts"][cohort.name]["plausibility"] = check_gm_maps(cohort, bounds)
    return summary


def _md5(path: Path) -> str | dict[str, str]:
    if path.is_dir():  # a FreeSurfer SUBJECTS_DIR: the aseg.stats files read
        return {str(p.relative_to(path)): file_md5(p) for p in sorted(path.glob("*/stats/aseg.stats"))}
    return file_md5(path)


def _summary(spec: CohortSpec, cohort: Cohort) -> dict[str, Any]:
    return {
        "role": spec.role,
        "treatment": sorted(cohort.participants["treatment"].unique().tolist()),
        "n": len(cohort.participants),
        "responders": int(cohort.participants["response"].sum()),
        "excluded_missing_outcome": cohort.excluded,
        "participants_md5": file_md5(cohort.root / "participants.tsv"),
    }
