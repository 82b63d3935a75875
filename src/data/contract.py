"""The cohort data contract (see README, "Data contract"): column names, codes, file names."""

from __future__ import annotations

import re
from pathlib import Path

REQUIRED_COLUMNS: tuple[str, ...] = (
    "participant_id",
    "age",
    "sex",
    "site",
    "treatment",
    "madrs_baseline",
    "madrs_24h",
)
COVARIATES: tuple[str, ...] = ("age", "sex", "site", "tiv")
# saline: the inert placebo; midazolam: the active placebo of many ketamine trials (a control treatment too)
TREATMENTS: tuple[str, ...] = ("ketamine", "saline", "midazolam")
SEXES: tuple[str, ...] = ("F", "M")
MADRS_RANGE: tuple[int, int] = (0, 60)
TISSUES: tuple[str, ...] = ("GM", "WM", "CSF")
DEFAULT_SPACE = "MNI152NLin2009cSym"
PARTICIPANT_ID = re.compile(r"^sub-[A-Za-z0-9]+$")
# Optional participants.tsv columns that name an image explicitly (relative to the cohort folder),
# for users whose files do not follow the BIDS derivative name, e.g. CAT12's mwp1<subject>.nii.
IMAGE_PATH_COLUMNS: dict[str, str] = {"GM": "gm_file", "WM": "wm_file", "CSF": "csf_file"}
# Columns of every feature table before the feature columns (the DVC-versioned contract).
# ``outcome``: the continuous target of ``data.outcome.target`` (percentage MADRS reduction by default)
TABLE_META_COLUMNS: tuple[str, ...] = (
    "participant_id",
    "age",
    "sex",
    "site",
    "tiv",
    "treatment",
    "response",
    "outcome",
)


def image_relpath(participant_id: str, tissue: str, pipeline: str, space: str = DEFAULT_SPACE) -> Path:
    """Contract location of a subject's modulated tissue map, relative to the cohort folder."""
    return (
        Path("derivatives")
        / pipeline
        / participant_id
        / "anat"
        / f"{participant_id}_space-{space}_label-{tissue}_probseg.nii.gz"
    )


IMAGE_NAME = re.compile(r"^(sub-[^_]+)_space-([^_]+)_label-([A-Za-z]+)_probseg\.nii(\.gz)?$")


# The mark a cohort written by this project's simulator carries (src.data.simulate; src.data.example copies
# it), in its dataset_description.json's BIDS "GeneratedBy" list: what makes data simulated is this mark,
# not the name of the data config that reads it
SIMULATOR = "ketamine-trd-smri simulator"
SIMULATOR_MARK = {
    "Name": SIMULATOR,
    "Description": "simulated cohort with a planted response signature: not patients",
}
