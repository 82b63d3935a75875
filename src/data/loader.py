"""Load and validate a cohort folder (the data contract) or a regional-volume table.

Every check raises :class:`CohortError` with a message naming the cohort and the subject, file or column
at fault, so a clinician can fix the input without reading code.
"""

from __future__ import annotations

import logging
import re
import xml.etree.ElementTree as ET
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from src.config.settings import OutcomeSettings
from src.data.clinical import ClinicalVariable, check_clinical, check_outcome_copies
from src.data.contract import (
    DEFAULT_SPACE,
    IMAGE_PATH_COLUMNS,
    MADRS_RANGE,
    PARTICIPANT_ID,
    REQUIRED_COLUMNS,
    SEXES,
    TREATMENTS,
)
from src.data.tables import TableFormatError, read_regional_table
from src.utils.errors import UserInputError

log = logging.getLogger(__name__)
_NA = ["n/a", "N/A", "NA", "nan", "NaN", ""]


class CohortError(UserInputError):
    """Invalid cohort input. The message names the cohort and the subject, file or column at fault."""


# how the binary response label is derived from the clinical table (``data.outcome``)
OutcomeSpec = OutcomeSettings


@dataclass
class Cohort:
    """A validated cohort: one row per kept subject, and the image of each subject per tissue.

    Attributes
    ----------
    name : str
        Cohort name (the folder name unless given).
    root : Path
        The cohort folder.
    participants : DataFrame
        Sorted by ``participant_id``; contract columns plus ``response`` (0/1) and, if present, ``tiv``.
    images : dict
        tissue -> list of image paths aligned with ``participants`` (empty when features come from a table).
    excluded : list of str
        Subjects dropped because their outcome is missing.
    reference_affine, reference_shape
        The grid every image is on (or is resampled to, with ``on_grid_mismatch="resample"``).
    """

    name: str
    root: Path
    participants: pd.DataFrame
    images: dict[str, list[Path]] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    reference_affine: np.ndarray | None = None
    reference_shape: tuple[int, ...] | None = None
    off_grid: list[str] = field(default_factory=list)

    @property
    def participant_ids(self) -> list[str]:
        """The included subjects' ids, in participants.tsv order."""
        return self.participants["participant_id"].tolist()

    def __len__(self) -> int:
        return len(self.participants)


@dataclass(frozen=True)
class ImageLayout:
    """Where a cohort's tissue maps are and how they are named: what differs between BIDS derivatives, CAT12
    and fMRIPrep/sMRIPrep outputs, and between the sites of a consortium.

    Attributes
    ----------
    naming : {"bids", "fmriprep", "smriprep", "cat12"}
        How the images are named under ``derivatives/<pipeline>/`` (``data.layout``; see
        :func:`scan_derivatives`).
    pipeline : str, optional
        Derivatives sub-folder; detected when the cohort has exactly one.
    space : str
        The ``space-`` entity of the image file names.
    on_grid_mismatch : {"error", "resample"}
        An image whose grid (shape, affine) differs from the cohort's reference (the first subject's GM
        map) is rejected (default), or kept with a warning and resampled by the feature step.
    """

    naming: str = "bids"
    pipeline: str | None = None
    space: str = DEFAULT_SPACE
    on_grid_mismatch: str = "error"

    def __post_init__(self) -> None:
        if self.naming not in LAYOUTS:
            raise ValueError(f"data.layout must be one of {list(LAYOUTS)}, got {self.naming!r}")
        if self.on_grid_mismatch not in ("error", "resample"):
            raise ValueError(f"on_grid_mismatch must be 'error' or 'resample', got {self.on_grid_mismatch!r}")


def load_cohort(
    root: str | Path,
    *,
    name: str | None = None,
    images: ImageLayout | None = None,
    tissues: tuple[str, ...] = ("GM",),
    outcome: OutcomeSpec | None = None,
    with_images: bool = True,
    treatment: str | None = None,
    require_outcome: bool = True,
    clinical: Sequence[ClinicalVariable] = (),
) -> Cohort:
    """Read ``participants.tsv`` and the tissue maps of a BIDS-style cohort folder and validate them.

    Parameters
    ----------
    root : path
        Cohort folder holding ``participants.tsv`` and ``derivatives/<pipeline>/``.
    name : str, optional
        Cohort name used in messages and outputs; defaults to the folder name.
    images : ImageLayout, optional
        Where the tissue maps are and how they are named (default: BIDS names, the contract's space).
    tissues : tuple of str
        Tissue maps every kept subject must have (``GM``, ``WM``, ``CSF``).
    outcome : OutcomeSpec, optional
        How the response label is derived; the contract default when omitted.
    with_images : bool
        False when the features come from a regional table: no image is looked for.
    treatment : str, optional
        The treatment the data config declares for this cohort: fills a missing ``treatment`` column, and
        a subject whose ``treatment`` differs is an error.
    require_outcome : bool
        False for patients to be scored (``src.predict``): the outcome (MADRS) and ``treatment`` columns are
        optional, validated when present, and no subject is excluded for lacking them; ``response`` is
        missing (NaN) and ``treatment`` is ``"n/a"`` where not given. Everything else is validated as for
        training.
    clinical : sequence of ClinicalVariable
        Declared clinical predictors (:mod:`src.data.clinical`): every one must be a column, its values in
        its range or code set (missing allowed); kept in ``participants`` coded (numbers; categorical codes
        as strings).

    Returns
    -------
    Cohort
    """
    root = Path(root)
    name = name or root.name
    outcome = outcome or OutcomeSpec()
    images = images or ImageLayout()
    table_path = root / "participants.tsv"
    if not table_path.is_file():
        raise CohortError(f"cohort {name!r}: {table_path} not found (every cohort needs a participants.tsv)")
    try:
        _check_field_counts(table_path, name)
        # index_col=False: pandas would otherwise turn the first column into the index when the data rows
        # have more fields than the header (the shift _check_field_counts reports), silently
        raw = pd.read_csv(
            table_path, sep="\t", dtype=str, keep_default_na=False, na_values=_NA, index_col=False
        )
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise CohortError(f"cohort {name!r}: cannot parse {table_path}: {err}") from err
    raw.columns = [str(c).strip() for c in raw.columns]
    if treatment is not None:
        if "treatment" not in raw.columns:
            raw["treatment"] = treatment
        else:
            differs = raw.loc[
                raw["treatment"].fillna("").str.strip() != treatment, ["participant_id", "treatment"]
            ]
            if len(differs):
                pid, value = differs.iloc[0]
                raise CohortError(
                    f"cohort {name!r}: subject {pid} has treatment {value!r} in {table_path}, but the data "
                    f"config declares treatment {treatment!r} for this cohort; {len(differs)} subject(s) "
                    "affected"
                )
    participants, excluded = _validate_participants(raw, name, table_path, outcome, require_outcome, clinical)
    cohort = Cohort(name=name, root=root, participants=participants, excluded=excluded)
    if with_images:
        _attach_images(cohort, images, tissues)
    log.info(
        "cohort %s: %d subjects (%d responders), %d excluded for missing outcome",
        name,
        len(participants),
        int(participants["response"].sum(skipna=True)),
        len(excluded),
    )
    return cohort


def _check_field_counts(path: Path, name: str) -> None:
    """Every data row of a TSV has as many fields as its header. A row with more (a trailing tab, a tab
    inside a value) would shift every column to the right of it: refused, naming the line."""
    with open(path, encoding="utf-8", newline="") as handle:
        header = handle.readline().rstrip("\r\n").split("\t")
        for number, line in enumerate(handle, start=2):
            fields = line.rstrip("\r\n").split("\t")
            if line.strip() and len(fields) != len(header):
                trailing = len(fields) > len(header) and not any(f.strip() for f in fields[len(header) :])
                why = " (a trailing tab?)" if trailing else ""
                raise CohortError(
                    f"cohort {name!r}: line {number} of {path} has {len(fields)} tab-separated fields, its "
                    f"header {len(header)}{why}; the columns would be shifted. Fix the line"
                )


def _validate_participants(
    raw: pd.DataFrame,
    name: str,
    path: Path,
    outcome: OutcomeSpec,
    require_outcome: bool = True,
    clinical: Sequence[ClinicalVariable] = (),
) -> tuple[pd.DataFrame, list[str]]:
    """participants.tsv checked rule by rule (each rule one check below, each failure one message naming
    the cohort, the subject and the column) and the response label derived: (table, excluded subjects)."""
    where = f"cohort {name!r}"
    required = _required_columns(raw, where, path, outcome, require_outcome)
    df = raw.copy()
    if not require_outcome:  # patients to score: what is not given is recorded as not available
        for column in {"treatment", outcome.baseline, outcome.followup} - set(df.columns):
            df[column] = "n/a" if column == "treatment" else np.nan
        df["treatment"] = df["treatment"].fillna("n/a")
    _check_participant_ids(df["participant_id"], where, path)
    _check_codes(df, where, require_outcome)
    _check_sites(df, where)
    _check_age_and_tiv(df, name, where)
    _check_madrs(df, name, where, outcome)
    coded = check_clinical(df, clinical, f"{where} ({path})")
    df, excluded = _without_missing_outcome(df, name, where, outcome, require_outcome)
    reduction = (df[outcome.baseline] - df[outcome.followup]) / df[outcome.baseline]
    responder = reduction >= outcome.threshold - 1e-12
    label = (responder if outcome.positive == "responder" else ~responder).astype(np.int64)
    df["response"] = label if require_outcome else label.where(reduction.notna())
    if require_outcome and clinical:  # a copy of the outcome under another name: refused by its content
        for finding in check_outcome_copies(
            coded.loc[df.index],
            clinical,
            df[outcome.followup],
            reduction,
            df["response"],
            where,
            baseline=outcome.baseline,
        ):
            log.warning("%s; kept: declared allow_outcome_like", finding)
    df["outcome"] = _continuous_outcome(df, name, where, outcome, reduction, require_outcome)
    keep = required + [c for c in ("tiv",) if c in df.columns] + ["response", "outcome"]
    keep += [c for c in IMAGE_PATH_COLUMNS.values() if c in df.columns]
    for column in coded.columns:  # coded values (numbers; categorical codes) in place of the raw strings
        df[column] = coded.loc[df.index, column]
    keep += [c for c in coded.columns if c not in keep]
    df = df[list(dict.fromkeys(keep))].sort_values("participant_id", kind="stable").reset_index(drop=True)
    return df, excluded


def _continuous_outcome(
    df: pd.DataFrame,
    name: str,
    where: str,
    outcome: OutcomeSpec,
    reduction: pd.Series,
    require_outcome: bool,
) -> pd.Series:
    """The continuous target of ``outcome.target`` (kept in every feature table as ``outcome``): the
    percentage reduction, the follow-up score, or a user's numeric column (checked: present, numbers; a
    subject without a value has NaN, refused by name only when a continuous model trains on it)."""
    if outcome.target == "percent_reduction":
        return 100.0 * reduction
    if outcome.target == "followup":
        return df[outcome.followup].astype(float)
    if outcome.target not in df.columns:
        if not require_outcome:
            return pd.Series(np.nan, index=df.index)
        raise CohortError(
            f"{where}: data.outcome.target {outcome.target!r} is not a column of participants.tsv "
            "(use percent_reduction, followup or a column name)"
        )
    return _numeric(df, outcome.target, name, allow_missing=True)


def _required_columns(
    raw: pd.DataFrame, where: str, path: Path, outcome: OutcomeSpec, require_outcome: bool
) -> list[str]:
    """The contract's columns, the configured outcome columns in place of the default MADRS names; the
    outcome and treatment may be absent for patients to score. A cohort with no row is refused."""
    required = [c for c in REQUIRED_COLUMNS if not c.startswith("madrs_")] + [
        outcome.baseline,
        outcome.followup,
    ]
    optional = {"treatment", outcome.baseline, outcome.followup} if not require_outcome else set()
    missing = [c for c in required if c not in raw.columns and c not in optional]
    if missing:
        raise CohortError(f"{where}: {path} is missing required column(s) {missing}")
    if raw.empty:
        raise CohortError(f"{where}: {path} has no participants (empty cohort)")
    return required


def _check_participant_ids(ids: pd.Series, where: str, path: Path) -> None:
    """Every participant_id present, ``sub-<alphanumeric>``, and unique."""
    if ids.isna().any():
        rows = (np.flatnonzero(ids.isna().to_numpy()) + 2).tolist()
        raise CohortError(f"{where}: empty participant_id on line(s) {rows} of {path}")
    bad = [pid for pid in ids if not PARTICIPANT_ID.match(pid)]
    if bad:
        raise CohortError(
            f"{where}: malformed participant_id {bad[:5]} in {path} (expected 'sub-<alphanumeric>')"
        )
    dup = sorted(ids[ids.duplicated()].unique())
    if dup:
        raise CohortError(f"{where}: duplicate participant_id {dup[:5]} in {path}")


def _check_codes(df: pd.DataFrame, where: str, require_outcome: bool) -> None:
    """Sex and treatment codes from the contract's sets (stripped in place); `n/a` treatment for patients."""
    treatments = TREATMENTS if require_outcome else (*TREATMENTS, "n/a")
    for column, allowed in (("sex", SEXES), ("treatment", treatments)):
        values = df[column].str.strip()
        wrong = df.loc[~values.isin(allowed), ["participant_id", column]]
        if len(wrong):
            pid, value = wrong.iloc[0]
            raise CohortError(
                f"{where}: subject {pid} has unknown {column} code {value!r} in column "
                f"'{column}' (allowed: {list(allowed)}); {len(wrong)} subject(s) affected"
            )
        df[column] = values


def _check_sites(df: pd.DataFrame, where: str) -> None:
    """Every subject has a site (stripped in place)."""
    df["site"] = df["site"].fillna("").str.strip()
    if (df["site"] == "").any():
        pid = df.loc[df["site"] == "", "participant_id"].iloc[0]
        raise CohortError(f"{where}: subject {pid} has an empty 'site'")


def _check_age_and_tiv(df: pd.DataFrame, name: str, where: str) -> None:
    """Age a number in 0-120 for everyone; TIV, where given, a positive number (converted in place)."""
    df["age"] = _numeric(df, "age", name, allow_missing=False)
    out_of_range = df[(df["age"] < 0) | (df["age"] > 120)]
    if len(out_of_range):
        pid, age = out_of_range.iloc[0][["participant_id", "age"]]
        raise CohortError(f"{where}: subject {pid} has age {age} in column 'age' (expected 0-120)")
    if "tiv" in df.columns:
        df["tiv"] = _numeric(df, "tiv", name, allow_missing=False)
        if (df["tiv"] <= 0).any():
            pid = df.loc[df["tiv"] <= 0, "participant_id"].iloc[0]
            raise CohortError(f"{where}: subject {pid} has a non-positive 'tiv'")


def _check_madrs(df: pd.DataFrame, name: str, where: str, outcome: OutcomeSpec) -> None:
    """Both MADRS columns numbers in the scale's range where given (converted in place); no baseline 0."""
    lo, hi = MADRS_RANGE
    for column in (outcome.baseline, outcome.followup):
        df[column] = _numeric(df, column, name, allow_missing=True)
        bad_rows = df[(df[column] < lo) | (df[column] > hi)]
        if len(bad_rows):
            pid, value = bad_rows.iloc[0][["participant_id", column]]
            raise CohortError(
                f"{where}: subject {pid} has MADRS {value} in column '{column}' (MADRS is {lo}-{hi})"
            )
    zero = df[df[outcome.baseline] == 0]
    if len(zero):
        raise CohortError(
            f"{where}: subject {zero['participant_id'].iloc[0]} has baseline MADRS 0 in column "
            f"'{outcome.baseline}'; the relative reduction is undefined"
        )


def _without_missing_outcome(
    df: pd.DataFrame, name: str, where: str, outcome: OutcomeSpec, require_outcome: bool
) -> tuple[pd.DataFrame, list[str]]:
    """Subjects without both MADRS scores excluded (a warning lists them), unless scoring patients; a cohort
    left empty is refused."""
    lacking = df[outcome.baseline].isna() | df[outcome.followup].isna()
    if not require_outcome:
        lacking[:] = False
    excluded = sorted(df.loc[lacking, "participant_id"])
    if excluded:
        log.warning(
            "cohort %s: %d subject(s) excluded for missing outcome (%s or %s): %s",
            name,
            len(excluded),
            outcome.baseline,
            outcome.followup,
            ", ".join(excluded),
        )
    df = df.loc[~lacking].copy()
    if df.empty:
        raise CohortError(f"{where}: no subject has both MADRS scores (empty cohort)")
    return df, excluded


# a regional volume above this (ml) is not one: the whole intracranial volume of an adult is ~1200-1900 ml
MAX_REGION_ML = 3000.0


def _numeric(df: pd.DataFrame, column: str, name: str, *, allow_missing: bool) -> pd.Series:
    """A participants.tsv column as finite numbers (``inf`` is refused like text), naming the subject."""
    values = pd.to_numeric(df[column], errors="coerce")
    values = values.where(~np.isinf(values))  # "inf", "-inf", "1e999": not a measurement
    bad = values.isna() & df[column].notna()
    if bad.any():
        row = df[bad].iloc[0]
        raise CohortError(
            f"cohort {name!r}: subject {row['participant_id']} has non-numeric or infinite value "
            f"{row[column]!r} in column '{column}'"
        )
    if not allow_missing and values.isna().any():
        pid = df.loc[values.isna(), "participant_id"].iloc[0]
        raise CohortError(f"cohort {name!r}: subject {pid} has no value in column '{column}'")
    return values.astype(float)


def _find_pipeline(root: Path, name: str, pipeline: str | None) -> Path:
    derivatives = root / "derivatives"
    if pipeline is not None:
        folder = derivatives / pipeline
        if not folder.is_dir():
            raise CohortError(f"cohort {name!r}: derivatives folder {folder} not found")
        return folder
    found = sorted(p for p in derivatives.glob("*") if p.is_dir()) if derivatives.is_dir() else []
    if len(found) != 1:
        raise CohortError(
            f"cohort {name!r}: cannot choose the derivatives pipeline in {derivatives} "
            f"(found {[p.name for p in found]}); set data.pipeline"
        )
    return found[0]


LAYOUTS: tuple[str, ...] = ("bids", "fmriprep", "smriprep", "cat12")
# CAT12 file-name prefixes of the modulated, normalised tissue maps (m = modulated, w = warped, p = partial)
CAT12_PREFIX: dict[str, str] = {"GM": "mwp1", "WM": "mwp2", "CSF": "mwp3"}
_CAT12_NAME = re.compile(r"^mwp([123])(?P<stem>.+?)\.nii(\.gz)?$")
_BIDS_PROBSEG = re.compile(r"^(?P<sub>sub-[A-Za-z0-9]+)_.*_label-(?P<label>[A-Za-z]+)_probseg\.nii(\.gz)?$")
_SUBJECT = re.compile(r"(sub-[A-Za-z0-9]+)")


def scan_derivatives(deriv: Path, layout: str, space: str) -> dict[tuple[str, str], list[Path]]:
    """Every tissue map under a derivatives folder: ``(participant_id, tissue) -> [paths]``.

    - ``bids`` / ``fmriprep`` / ``smriprep``:
      ``sub-<label>[_ses-..]..._space-<space>[_res-..]_label-<GM|WM|CSF>
      _probseg.nii[.gz]`` anywhere below ``sub-<label>/`` (sessions included). ``space`` may carry more
      entities (``MNI152NLin2009cAsym_res-2``) to choose among several outputs.
    - ``cat12``: CAT12's own names anywhere below the folder, ``mri/mwp1<name>.nii`` (GM), ``mwp2`` (WM),
      ``mwp3`` (CSF); the subject is the ``sub-<label>`` inside ``<name>``, else ``sub-`` + ``<name>`` up to
      its first underscore.
    """
    found: dict[tuple[str, str], list[Path]] = defaultdict(list)
    if layout == "cat12":
        for path in sorted(deriv.rglob("mwp[123]*.nii*")):
            match = _CAT12_NAME.match(path.name)
            if match and path.parent.name == "mri" and path.is_file():
                tissue = ("GM", "WM", "CSF")[int(match.group(1)) - 1]
                found[(_cat12_subject(match["stem"]), tissue)].append(path)
        return found
    for path in sorted(deriv.glob("sub-*/**/sub-*_probseg.nii*")):
        match = _BIDS_PROBSEG.match(path.name)
        if match and f"_space-{space}_" in path.name and path.is_file():
            found[(match["sub"], match["label"])].append(path)
    return found


# names that look like a tissue map: a file named so that the layout does not take it is worth a word
_TISSUE_LIKE = re.compile(r"(gm|wm|csf|grey|gray|white|probseg|^m?w?p[123]|^c[123])", re.IGNORECASE)


def unused_tissue_like(deriv: Path, layout: str, used: set[Path]) -> list[Path]:
    """NIfTI files in the derivatives folder that look like tissue maps but are not taken by the layout:
    a misnamed subject file, another space, or CAT12's unmodulated ``wp1``/``p1`` maps (volumes need the
    modulated ``mwp1``)."""
    pattern = "**/mri/*.nii*" if layout == "cat12" else "sub-*/**/anat/*.nii*"
    return [
        path
        for path in sorted(deriv.glob(pattern))
        if path not in used and _TISSUE_LIKE.search(path.name) and path.is_file()
    ]


def _cat12_subject(stem: str) -> str:
    match = _SUBJECT.search(stem)
    return match.group(1) if match else "sub-" + stem.split("_")[0]


def cat12_tiv(gm_image: Path) -> float | None:
    """TIV (ml) from CAT12's ``report/cat_<name>.xml`` beside the ``mri/`` folder of ``mwp1<name>.nii``:
    ``subjectmeasures/vol_TIV``, or the sum of ``vol_abs_CGW`` (CSF, GM, WM, WMH) in older versions.
    None when there is no report. (ElementTree reads data only; expat refuses entity expansion bombs.)"""
    match = _CAT12_NAME.match(gm_image.name)
    if match is None:
        return None
    report = gm_image.parent.parent / "report" / f"cat_{match['stem']}.xml"
    if not report.is_file():
        return None
    try:
        root = ET.parse(report).getroot()
    except ET.ParseError as err:
        raise CohortError(f"cannot parse CAT12 report {report}: {err}") from err
    node = root.find(".//subjectmeasures/vol_TIV")
    if node is not None and node.text:
        return float(node.text)
    node = root.find(".//subjectmeasures/vol_abs_CGW")
    if node is not None and node.text:
        return float(sum(float(v) for v in re.findall(r"[-+0-9.eE]+", node.text)))
    raise CohortError(f"CAT12 report {report} has neither subjectmeasures/vol_TIV nor vol_abs_CGW")


def _attach_images(cohort: Cohort, images: ImageLayout, tissues: tuple[str, ...]) -> None:
    name, root = cohort.name, cohort.root
    pipeline, space, layout = images.pipeline, images.space, images.naming
    deriv = _find_pipeline(root, name, pipeline)
    found = scan_derivatives(deriv, layout, space)
    known = set(cohort.participant_ids) | set(cohort.excluded)
    # An image nobody listed is as suspicious as a subject without an image: it may be a renamed
    # subject whose row now points at nothing.
    for (pid, tissue), paths in sorted(found.items()):
        if pid not in known and tissue in tissues:
            raise CohortError(
                f"cohort {name!r}: image {paths[0]} has no row in participants.tsv "
                f"(subject {pid} is not listed)"
            )
    for tissue in tissues:
        paths: list[Path] = []
        column = IMAGE_PATH_COLUMNS.get(tissue)
        for _, row in cohort.participants.iterrows():
            pid = row["participant_id"]
            listed = column in row.index and isinstance(row[column], str) and row[column]
            if listed:
                path = _confined(root, str(row[column]), f"cohort {name!r}: subject {pid}: column '{column}'")
                if not path.is_file():
                    raise CohortError(
                        f"cohort {name!r}: subject {pid}: image listed in column '{column}' "
                        f"is missing: {path}"
                    )
            else:
                candidates = found.get((pid, tissue), [])
                if not candidates:
                    raise CohortError(
                        f"cohort {name!r}: subject {pid} is in participants.tsv but has no {tissue} "
                        f"image: expected {_expected_image(deriv, pid, tissue, layout, space)}"
                    )
                if len(candidates) > 1:
                    raise CohortError(
                        f"cohort {name!r}: subject {pid} has {len(candidates)} {tissue} images "
                        f"{[str(p) for p in candidates[:3]]}; choose one with data.space (e.g. add _res-2) "
                        f"or list it in participants.tsv column '{column}'"
                    )
                path = candidates[0]
            paths.append(path)
        _refuse_shared_images(cohort, tissue, paths)
        cohort.images[tissue] = paths
    unused = unused_tissue_like(deriv, layout, {p for paths in found.values() for p in paths})
    if unused:
        log.warning(
            "cohort %s: %d file(s) under %s look like tissue maps but are not used (layout %r, space %r): %s",
            name,
            len(unused),
            deriv,
            layout,
            space,
            ", ".join(str(p.relative_to(deriv)) for p in unused[:5]),
        )
    if layout == "cat12" and "tiv" not in cohort.participants.columns and "GM" in cohort.images:
        _attach_cat12_tiv(cohort)
    _check_headers(cohort, images.on_grid_mismatch)


def _confined(root: Path, relative: str, where: str) -> Path:
    """``root / relative``, refused unless it stays inside ``root`` once symlinks are resolved: a path from
    participants.tsv must not reach another cohort's (or anybody's) files."""
    if Path(relative).is_absolute():
        raise CohortError(
            f"{where}: absolute path {relative!r}; give a path relative to the cohort folder {root}"
        )
    path = root / relative
    if not path.resolve().is_relative_to(root.resolve()):
        raise CohortError(f"{where}: path {relative!r} leads outside the cohort folder {root}")
    return path


def _refuse_shared_images(cohort: Cohort, tissue: str, paths: list[Path]) -> None:
    """One image file for two subjects is a copy-paste error, never two brains."""
    seen: dict[Path, str] = {}
    for pid, path in zip(cohort.participant_ids, paths, strict=True):
        key = path.resolve()
        if key in seen:
            raise CohortError(
                f"cohort {cohort.name!r}: subjects {seen[key]} and {pid} use the same {tissue} image {path}"
            )
        seen[key] = pid


def _expected_image(deriv: Path, pid: str, tissue: str, layout: str, space: str) -> str:
    if layout == "cat12":
        return f"{deriv}/**/mri/{CAT12_PREFIX[tissue]}{pid}*.nii"
    return f"{deriv / pid}/[ses-*/]anat/{pid}_*space-{space}_*label-{tissue}_probseg.nii.gz"


def _attach_cat12_tiv(cohort: Cohort) -> None:
    """Fill ``tiv`` from CAT12's XML reports: all subjects or none (TIV from two sources would bias)."""
    values = [cat12_tiv(path) for path in cohort.images["GM"]]
    have = [v is not None for v in values]
    if not any(have):
        return
    if not all(have):
        pid = cohort.participant_ids[have.index(False)]
        raise CohortError(
            f"cohort {cohort.name!r}: subject {pid} has no CAT12 report (report/cat_<name>.xml) while "
            f"{sum(have)} other subject(s) have one; add it or give TIV in a 'tiv' column of participants.tsv"
        )
    tiv = np.asarray(values, dtype=float)
    bad = ~np.isfinite(tiv) | (tiv <= 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise CohortError(
            f"cohort {cohort.name!r}: subject {cohort.participant_ids[i]} has TIV {tiv[i]} in its "
            "CAT12 report"
        )
    cohort.participants["tiv"] = tiv
    log.info("cohort %s: TIV read from %d CAT12 reports", cohort.name, len(values))


def _grid_key(shape: tuple[int, ...], affine: np.ndarray) -> tuple:
    return tuple(shape), tuple(np.round(affine, 3).ravel())


def _zooms(affine: np.ndarray) -> tuple[float, ...]:
    return tuple(round(float(z), 3) for z in np.sqrt((affine[:3, :3] ** 2).sum(axis=0)))


def _origin(affine: np.ndarray) -> tuple[float, ...]:
    """World coordinates (mm) of voxel (0, 0, 0): two grids may differ in nothing else."""
    return tuple(round(float(v), 2) for v in affine[:3, 3])


def _check_headers(cohort: Cohort, on_grid_mismatch: str) -> None:
    """Open every image header: readable, 3-D, on the cohort's reference grid.

    The reference grid is the one most GM images share (the first such image on a tie), so a single
    odd image is reported as the odd one whatever its position in participants.tsv.
    """
    headers: dict[str, list[tuple[str, Path, tuple[int, ...], np.ndarray]]] = {}
    for tissue, paths in cohort.images.items():
        headers[tissue] = []
        for pid, path in zip(cohort.participant_ids, paths, strict=True):
            try:
                img = nib.load(path)
                shape = tuple(img.shape)
            except Exception as err:  # nibabel raises many types for corrupt files
                raise CohortError(
                    f"cohort {cohort.name!r}: subject {pid}: cannot read {tissue} image {path} "
                    f"(unreadable or corrupt NIfTI: {err})"
                ) from err
            shape3 = shape[:3] if len(shape) == 4 and shape[3] == 1 else shape
            if len(shape3) != 3:
                raise CohortError(
                    f"cohort {cohort.name!r}: subject {pid}: {tissue} image {path} is not 3-D (shape {shape})"
                )
            headers[tissue].append((pid, path, shape3, img.affine.copy()))
    first = headers.get("GM") or next(iter(headers.values()), [])
    if not first:
        return
    keys = [_grid_key(shape, affine) for _, _, shape, affine in first]
    best = max(keys, key=keys.count)
    _, _, cohort.reference_shape, cohort.reference_affine = first[keys.index(best)]
    ref_zooms = _zooms(cohort.reference_affine)
    for tissue, rows in headers.items():
        for pid, path, shape3, affine in rows:
            if _grid_key(shape3, affine) == best:
                continue
            msg = (
                f"cohort {cohort.name!r}: subject {pid}: {tissue} image {path} is on grid {shape3} with "
                f"voxel size {_zooms(affine)} mm and origin {_origin(affine)} mm, the cohort reference grid "
                f"(shared by most GM images) is {cohort.reference_shape} with voxel size {ref_zooms} mm and "
                f"origin {_origin(cohort.reference_affine)} mm"
            )
            if on_grid_mismatch == "error":
                raise CohortError(msg + "; set data.on_grid_mismatch=resample to resample it")
            log.warning("%s; it will be resampled (continuous interpolation)", msg)
            if pid not in cohort.off_grid:
                cohort.off_grid.append(pid)


def load_regional_table(
    path: str | Path, cohort: Cohort, table_format: str = "plain"
) -> tuple[pd.DataFrame, pd.Series | None]:
    """Read a regional-volume table in ``table_format`` (see :mod:`src.data.tables`), in ml.

    The table must list exactly the cohort's subjects (excluded subjects may appear and are dropped).
    Returns the feature columns aligned to ``cohort.participants`` and the TIV (ml) when the format
    carries one (FreeSurfer's eTIV), else None.
    """
    path = Path(path)
    try:
        raw = read_regional_table(path, table_format, cohort.participant_ids)
    except TableFormatError as err:
        raise CohortError(f"cohort {cohort.name!r}: {err}") from err
    table = raw.volumes
    if "participant_id" not in table.columns:
        raise CohortError(f"cohort {cohort.name!r}: regional table {path} is missing column 'participant_id'")
    dup = sorted(table.loc[table["participant_id"].duplicated(), "participant_id"].unique())
    if dup:
        raise CohortError(f"cohort {cohort.name!r}: duplicate participant_id {dup[:5]} in {path}")
    features = [c for c in table.columns if c != "participant_id"]
    if not features:
        raise CohortError(f"cohort {cohort.name!r}: regional table {path} has no region columns")
    clash = sorted(set(features) & {"age", "sex", "site", "tiv", "treatment", "response", "outcome"})
    if clash:
        raise CohortError(f"cohort {cohort.name!r}: regional table {path} has covariate column(s) {clash}")
    unknown = sorted(set(table["participant_id"]) - set(cohort.participant_ids) - set(cohort.excluded))
    if unknown:
        raise CohortError(
            f"cohort {cohort.name!r}: regional table {path} has subject(s) {unknown[:5]} without a row in "
            "participants.tsv"
        )
    table = table.set_index("participant_id")
    absent = [pid for pid in cohort.participant_ids if pid not in table.index]
    if absent:
        raise CohortError(
            f"cohort {cohort.name!r}: subject(s) {absent[:5]} have no row in regional table {path}"
        )
    table = table.loc[cohort.participant_ids]
    columns: dict[str, np.ndarray] = {}
    for column in features:
        values = pd.to_numeric(table[column], errors="coerce")
        bad = values.isna() | np.isinf(values)
        if bad.any():
            pid = table.index[np.flatnonzero(bad.to_numpy())[0]]
            raise CohortError(
                f"cohort {cohort.name!r}: subject {pid} has non-numeric, infinite or missing value "
                f"{table.loc[pid, column]!r} in column '{column}' of {path}"
            )
        if (values < 0).any():
            pid = table.index[np.flatnonzero((values < 0).to_numpy())[0]]
            raise CohortError(
                f"cohort {cohort.name!r}: subject {pid} has a negative volume in column '{column}'"
            )
        if (values > MAX_REGION_ML).any():  # no brain region holds more: mm³ (or a broken cell), not ml
            pid = table.index[np.flatnonzero((values > MAX_REGION_ML).to_numpy())[0]]
            raise CohortError(
                f"cohort {cohort.name!r}: subject {pid} has {values[pid]:g} in column '{column}' of {path}, "
                f"more than {MAX_REGION_ML:g} ml (a whole brain is ~1500 ml): volumes in mm³? (ml expected)"
            )
        columns[column] = values.to_numpy(dtype=float)
    out = pd.DataFrame(columns)
    tiv = None if raw.tiv is None else raw.tiv.reindex(cohort.participant_ids).reset_index(drop=True)
    return out, tiv


def _tissue_sibling(gm_image: Path, tissue: str) -> Path | None:
    """The ``tissue`` map written beside a GM map by the same pipeline (BIDS ``label-WM``/``label-CSF``,
    CAT12 ``mwp2``/``mwp3``), or None when there is none."""
    if match := _CAT12_NAME.match(gm_image.name):
        name = CAT12_PREFIX[tissue] + gm_image.name[len(f"mwp{match.group(1)}") :]
    elif _BIDS_PROBSEG.match(gm_image.name):
        name = re.sub(r"_label-[A-Za-z]+_", f"_label-{tissue}_", gm_image.name)
    else:
        return None
    path = gm_image.with_name(name)
    return path if path.is_file() else None


def image_subject_id(gm_image: Path) -> str:
    """``sub-<label>`` from a BIDS or CAT12 file name (``sub-01_..._label-GM_probseg.nii.gz``,
    ``mwp1sub-01.nii``, ``mwp1patient7.nii`` -> ``sub-patient7``)."""
    if match := _CAT12_NAME.match(gm_image.name):
        return _cat12_subject(match["stem"])
    if match := _SUBJECT.search(gm_image.name):
        return match.group(1)
    return "sub-" + re.sub(r"[^A-Za-z0-9]", "", gm_image.name.split(".")[0])


def single_image_cohort(
    gm_image: str | Path,
    covariates: dict[str, object],
    *,
    tissues: tuple[str, ...] = ("GM",),
    on_grid_mismatch: str = "error",
    clinical: Sequence[ClinicalVariable] = (),
) -> Cohort:
    """A one-patient cohort (no outcome) from one modulated GM map and the patient's covariates.

    Parameters
    ----------
    gm_image : path
        The patient's GM map (BIDS ``*_label-GM_probseg.nii[.gz]``, CAT12 ``mwp1*.nii`` or any NIfTI).
    covariates : dict
        ``participant_id`` (default: from the file name), ``age``, ``sex``, ``site`` and optionally ``tiv``
        (ml). Without ``tiv``: CAT12's report beside the map, else the WM and CSF maps beside it
        (TIV = GM + WM + CSF, as in training). The declared ``clinical`` predictors' values may be given too
        (one not given is missing: imputed by the model).
    tissues : tuple of str
        The maps the features need (``GM``, ``WM``): found beside the GM map like the TIV ones.
    on_grid_mismatch : {"error", "resample"}
        A WM/CSF map on another grid than the GM map: refused, or resampled to it with a warning.
    clinical : sequence of ClinicalVariable
        The model's clinical predictors, validated as in :func:`load_cohort`.
    """
    gm_image = Path(gm_image)
    if not gm_image.is_file():
        raise CohortError(f"input image {gm_image} not found")
    values = {k: v for k, v in covariates.items() if v is not None}
    values.setdefault("participant_id", image_subject_id(gm_image))
    missing = [c for c in ("age", "sex", "site") if c not in values]
    if missing:
        raise CohortError(
            f"input {gm_image} is one image: give the patient's {', '.join(missing)} "
            f"(e.g. patient.age=41 patient.sex=F patient.site=<scanner site as in training>)"
        )
    if "tiv" not in values and (tiv := cat12_tiv(gm_image)) is not None:
        values["tiv"] = tiv
    raw = pd.DataFrame([{k: str(v) for k, v in values.items()}])
    for variable in clinical:  # a clinical value not given is missing (imputed by the model)
        if variable.name not in raw:
            raw[variable.name] = None
    name = f"input {gm_image.name}"
    participants, _ = _validate_participants(
        raw, name, gm_image, OutcomeSpec(), require_outcome=False, clinical=clinical
    )
    images = {"GM": [gm_image]}
    needed = [t for t in tissues if t != "GM"] + ([] if "tiv" in participants else ["WM", "CSF"])
    for tissue in dict.fromkeys(needed):
        sibling = _tissue_sibling(gm_image, tissue)
        if sibling is None:
            why = "for the model's features" if tissue in tissues else "for TIV (or give patient.tiv=<ml>)"
            expected = gm_image.name.replace("label-GM", f"label-{tissue}")
            expected = expected.replace("mwp1", CAT12_PREFIX[tissue])
            raise CohortError(f"input {gm_image}: no {tissue} map beside it {why}; expected {expected}")
        images[tissue] = [sibling]
    cohort = Cohort(name=name, root=gm_image.parent, participants=participants, images=images)
    _check_headers(cohort, on_grid_mismatch)
    return cohort
