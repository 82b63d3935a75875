"""A methods section in the TRIPOD+AI structure (Collins et al., BMJ 2024), written from the resolved config and
the run's own numbers, so the text always describes what was actually run. No reference tool generates
TRIPOD+AI prose from a pipeline config, hence this module; the prose itself is the Jinja template
``templates/methods.txt.j2``, filled with the settings and the numbers here.

Each entry is ``(item, heading, text)``; items that the pipeline cannot know (ethics approval, funding,
blinding of outcome assessors) are stated as such, for the authors to complete.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from src.config.settings import ExperimentConfig, FeaturesSettings, ModelSettings
from src.data.cohorts import discovery_cohort, trained_on_simulated

TEMPLATES = Path(__file__).parent / "templates"  # the methods prose: methods.txt.j2


def _space(model: ModelSettings) -> str:
    parts = []
    for name, spec in model.search_space.items():
        if spec["type"] == "categorical":
            parts.append(f"{name} ∈ {{{', '.join(map(str, spec['choices']))}}}")
        else:
            scale = "log-uniform" if spec.get("log") else "uniform"
            parts.append(f"{name} {scale} in [{spec['low']:g}, {spec['high']:g}]")
    return "; ".join(parts)


def _features(features: FeaturesSettings, n_features: int | None) -> str:
    count = f" ({n_features} features)" if n_features else ""
    if features.kind == "voxel":
        smooth = features.smoothing_fwhm
        return (
            f"modulated grey-matter (GM) voxel values{count}, resampled to {features.resolution} mm"
            + (f" after Gaussian smoothing (FWHM {smooth} mm)" if smooth else "")
            + f", inside a data-independent mask (MNI152 GM template probability > {features.mask_threshold})"
        )
    tissues = " and ".join(features.tissues)
    return (
        f"regional {tissues} volumes in ml{count}: the modulated tissue maps summed within each region of the "
        f"{features.atlas.upper()} atlas (nilearn NiftiLabelsMasker)"
    )


def tripod_ai_methods(
    config: ExperimentConfig, train: Mapping[str, Any], evaluation: Mapping[str, Any] | None
) -> list[tuple[str, str, str]]:
    """Methods paragraphs keyed by TRIPOD+AI item.

    Parameters
    ----------
    config : ExperimentConfig
        The experiment's settings (its ``train/config.yaml``).
    train : mapping
        The train ``metrics.json`` document.
    evaluation : mapping or None
        The evaluate ``metrics.json`` document (None if the experiment was not evaluated).
    """
    cohorts = (evaluation or {}).get("cohorts", {})
    simulated = trained_on_simulated(train, config.data)
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        undefined=StrictUndefined,
        autoescape=False,
        keep_trailing_newline=False,
    )
    environment.filters["repr"] = repr
    text = environment.get_template("methods.txt.j2").render(
        simulated=simulated,
        continuous=(train.get("outcome") or {}).get("kind") == "continuous",
        data=config.data,
        signature=(config.data.simulation or {}).get("signature", {}),
        outcome=config.data.outcome,
        model=config.model,
        cv=config.cv,
        ev=config.evaluation,
        train=train,
        discovery=train.get("cohort") or discovery_cohort(config.data),
        eval_cohorts=", ".join(
            f"{name} (n = {cohorts[name]['n']}, {cohorts[name]['responders']} responders)"
            for name in cohorts
            if name != "discovery"
        ),
        features=_features(config.features, train.get("n_features")),
        space=_space(config.model),
        perm=train.get("permutation") or {},
        commit=train.get("provenance", {}).get("git", {}).get("commit"),
        seed=config.seed,
    )
    items = []
    for line in text.splitlines():
        if line.strip():
            item, heading, paragraph = line.split(" | ", 2)
            items.append((item, heading, paragraph))
    return items
