"""Readers of regional-volume tables as the tools write them, one per format (``data.table_format``).

Each reader returns a :class:`RegionalTable`: one row per subject (``participant_id``), one numeric column
per region in **ml**, and the TIV in ml when the format carries it (FreeSurfer's eTIV), else None.

- ``plain``: TSV/CSV, ``participant_id`` + one column per region, in ml (the contract's table).
- ``cat12_roi``: CAT12's "Estimate mean values inside ROI" export (``ROI_<atlas>_Vgm.csv``): tab-, comma-
  or semicolon-separated, first column ``Name``/``names`` holding the subject's file name (``sub-01_T1w``),
  then one column per region in ml (cm³).
- ``freesurfer_table``: ``aparcstats2table`` / ``asegstats2table`` output: first column ``lh.aparc.volume``
  or ``Measure:volume`` with the subject names, one column per structure in mm³, any delimiter (tab, comma,
  space, semicolon); ``eTIV`` / ``EstimatedTotalIntraCranialVol`` becomes the TIV; other whole-brain
  measures and ratios are dropped.
- ``freesurfer_aseg``: per-subject ``aseg.stats``; the path is the FreeSurfer ``SUBJECTS_DIR`` and each
  subject's ``<SUBJECTS_DIR>/<subject>/stats/aseg.stats`` (subject = ``sub-01`` or ``01``) gives the
  structure table (``Volume_mm3`` per ``StructName``) and the ``eTIV`` measure.

Subject names are matched to participants.tsv by the ``sub-<label>`` they contain (``catROI_sub-01_T1w`` ->
``sub-01``), or, without one, by ``sub-`` + the name up to the first underscore. Column names keep letters,
digits and underscores (``Left-Hippocampus`` -> ``Left_Hippocampus``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from src.utils.errors import UserInputError

TABLE_FORMATS: tuple[str, ...] = ("plain", "cat12_roi", "freesurfer_table", "freesurfer_aseg")
_NA = ["n/a", "N/A", "NA", "nan", "NaN", ""]
_SUBJECT = re.compile(r"(sub-[A-Za-z0-9]+)")
# FreeSurfer whole-brain measures that asegstats2table/aparcstats2table append: not regions (names as cleaned,
# e.g. BrainSegVol-to-eTIV -> BrainSegVol_to_eTIV)
_FREESURFER_TIV = ("EstimatedTotalIntraCranialVol", "eTIV")
_FREESURFER_GLOBAL = re.compile(
    r"^(BrainSegVol|BrainSegVolNotVent|BrainSegVolNotVentSurf|MaskVol|SupraTentorialVol\w*|lhCortexVol|rhCortexVol"
    r"|CortexVol|lhCerebralWhiteMatterVol|rhCerebralWhiteMatterVol|CerebralWhiteMatterVol|SubCortGrayVol"
    r"|TotalGrayVol|SurfaceHoles|lhSurfaceHoles|rhSurfaceHoles|VentricleChoroidVol|\w+_to_eTIV)$"
)


class TableFormatError(UserInputError):
    """A regional table cannot be read in its declared format; the message names the file and the problem."""


@dataclass
class RegionalTable:
    """Regional volumes in ml, one row per subject; ``tiv`` (ml) when the format carries it."""

    volumes: pd.DataFrame  # participant_id + region columns
    tiv: pd.Series | None  # indexed by participant_id
    source: Path


def subject_id(name: str) -> str:
    """``catROI_sub-01_T1w`` -> ``sub-01``; ``01_ses-1`` -> ``sub-01``."""
    match = _SUBJECT.search(str(name))
    if match:
        return match.group(1)
    return "sub-" + str(name).strip().split("_")[0]


def clean_column(name: str) -> str:
    """A region name as a column name: letters, digits and ``_`` (``Left-Hippocampus`` ->
    ``Left_Hippocampus``)."""
    return re.sub(r"[^A-Za-z0-9_]+", "_", str(name)).strip("_")


def _read_delimited(path: Path) -> pd.DataFrame:
    """A table whose delimiter is tab, comma, semicolon or runs of spaces (sniffed from the header line)."""
    if not path.is_file():
        raise TableFormatError(f"regional table {path} not found")
    header = path.read_text(errors="replace").splitlines()[0] if path.stat().st_size else ""
    sep = next((s for s in ("\t", ",", ";") if s in header), r"\s+")
    table = pd.read_csv(
        path, sep=sep, dtype=str, keep_default_na=False, na_values=_NA, engine="python", skipinitialspace=True
    )
    table.columns = [str(c).strip() for c in table.columns]
    # CAT12 writes a separator after the last value of every line: an empty, unnamed last column
    empty = [c for c in table.columns if c.startswith("Unnamed:") and table[c].isna().all()]
    return table.drop(columns=empty)


def _by_subject(table: pd.DataFrame, id_column: str, path: Path, divisor: float) -> pd.DataFrame:
    out = table.rename(columns={id_column: "participant_id"})
    out["participant_id"] = out["participant_id"].astype(str).str.strip().map(subject_id)
    dup = sorted(out.loc[out["participant_id"].duplicated(), "participant_id"].unique())
    if dup:
        raise TableFormatError(f"regional table {path}: subject(s) {dup[:5]} appear on more than one row")
    out = _clean_columns(out, path)
    if divisor != 1.0:  # non-numeric cells are left as they are for the loader to name
        for column in out.columns.drop("participant_id"):
            values = pd.to_numeric(out[column], errors="coerce")
            out[column] = np.where(values.isna(), out[column], values / divisor)
    return out


def _clean_columns(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    renamed = {c: clean_column(c) for c in table.columns if c != "participant_id"}
    clash = sorted({v for v in renamed.values() if list(renamed.values()).count(v) > 1})
    if clash:
        raise TableFormatError(f"regional table {path}: columns collide after cleaning names: {clash[:5]}")
    return table.rename(columns=renamed)


def read_plain(path: Path) -> RegionalTable:
    """A TSV/CSV with ``participant_id`` and one column per region (ml)."""
    table = _read_delimited(path)
    if "participant_id" not in table.columns:
        raise TableFormatError(f"regional table {path} is missing column 'participant_id' (format 'plain')")
    table = table.assign(participant_id=table["participant_id"].astype(str).str.strip())
    return RegionalTable(_clean_columns(table, path), None, path)


def read_cat12_roi(path: Path) -> RegionalTable:
    """CAT12's ROI export (``Name``/``names`` + regions, any separator, trailing separators allowed)."""
    table = _read_delimited(path)
    first = table.columns[0]
    if first.lower() not in ("name", "names", "subject", "filename"):
        raise TableFormatError(
            f"regional table {path}: first column is {first!r}, not CAT12's 'Name'/'names' "
            "(format 'cat12_roi')"
        )
    # CAT12 ROI measures Vgm/Vwm/Vcsf are already in ml (cm³)
    return RegionalTable(_by_subject(table, first, path, 1.0), None, path)


def _split_tiv(table: pd.DataFrame, path: Path) -> tuple[pd.DataFrame, pd.Series | None]:
    tiv_column = next((c for c in _FREESURFER_TIV if c in table.columns), None)
    tiv = None
    if tiv_column is not None:
        tiv = pd.to_numeric(table.set_index("participant_id")[tiv_column], errors="coerce")
        if tiv.isna().any():
            raise TableFormatError(
                f"regional table {path}: subject {tiv.index[tiv.isna()][0]} has no numeric {tiv_column}"
            )
    drop = [c for c in table.columns if c in _FREESURFER_TIV or _FREESURFER_GLOBAL.match(c)]
    return table.drop(columns=drop), tiv


def read_freesurfer_table(path: Path) -> RegionalTable:
    """``aparcstats2table`` / ``asegstats2table`` output: mm³ to ml, whole-brain measures dropped, eTIV as
    TIV."""
    table = _read_delimited(path)
    first = table.columns[0]
    if not (first.startswith("Measure:") or re.match(r"^[lr]h\.\w+\.\w+$", first)):
        raise TableFormatError(
            f"regional table {path}: first column is {first!r}; aparcstats2table/asegstats2table write "
            "'lh.aparc.volume' or 'Measure:volume' there (format 'freesurfer_table')"
        )
    present = [c for c in _FREESURFER_TIV if c in table.columns]
    if len(present) == 2:  # both names of one measure (tables merged from two exports): one TIV, or refused
        long, short = (pd.to_numeric(table[c], errors="coerce").to_numpy(float) for c in present)
        if not np.allclose(long, short, rtol=1e-3, equal_nan=True):
            raise TableFormatError(
                f"regional table {path}: columns {present[0]!r} and {present[1]!r} both hold the TIV and "
                "disagree; keep one of them"
            )
        table = table.drop(columns=present[1])  # the same values: EstimatedTotalIntraCranialVol is kept
    table = table.rename(columns={present[0]: "eTIV"}) if present else table
    out = _by_subject(table, first, path, 1000.0)  # mm³ -> ml
    volumes, tiv = _split_tiv(out, path)
    return RegionalTable(volumes, tiv, path)


def parse_aseg_stats(path: Path) -> tuple[dict[str, float], float | None]:
    """``StructName -> Volume_mm3`` and the eTIV (mm³) of one FreeSurfer ``aseg.stats`` file."""
    volumes: dict[str, float] = {}
    etiv = None
    columns: list[str] | None = None
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("# Measure EstimatedTotalIntraCranialVol"):
            etiv = float(line.split(",")[3])
        elif line.startswith("# ColHeaders"):
            columns = line.split()[2:]
        elif line.strip() and not line.startswith("#"):
            if columns is None:
                raise TableFormatError(f"{path}: data line before '# ColHeaders' (not an aseg.stats file?)")
            row = dict(zip(columns, line.split(), strict=False))
            try:
                volumes[row["StructName"]] = float(row["Volume_mm3"])
            except (KeyError, ValueError) as err:
                raise TableFormatError(f"{path}: cannot read line {line!r} ({err})") from err
    if not volumes:
        raise TableFormatError(f"{path}: no structure rows found (not an aseg.stats file?)")
    return volumes, etiv


def read_freesurfer_aseg(subjects_dir: Path, participant_ids: list[str]) -> RegionalTable:
    """Each subject's ``<subjects_dir>/<subject>/stats/aseg.stats``: structure volumes (mm³ -> ml), eTIV."""
    if not subjects_dir.is_dir():
        raise TableFormatError(f"FreeSurfer SUBJECTS_DIR {subjects_dir} not found (format 'freesurfer_aseg')")
    rows, tivs = [], {}
    for pid in participant_ids:
        candidates = [
            subjects_dir / pid / "stats" / "aseg.stats",
            subjects_dir / pid[4:] / "stats" / "aseg.stats",
        ]
        path = next((p for p in candidates if p.is_file()), None)
        if path is None:
            raise TableFormatError(
                f"subject {pid}: no aseg.stats in {candidates[0].parent} or {candidates[1].parent}"
            )
        volumes, etiv = parse_aseg_stats(path)
        rows.append({"participant_id": pid, **{clean_column(k): v / 1000.0 for k, v in volumes.items()}})
        if etiv is not None:
            tivs[pid] = etiv / 1000.0
    table = pd.DataFrame(rows)
    missing = table.columns[table.isna().any()].tolist()
    if missing:
        pid = table.loc[table[missing[0]].isna(), "participant_id"].iloc[0]
        raise TableFormatError(
            f"subject {pid}: aseg.stats has no structure {missing[0]!r} that other subjects have"
        )
    tiv = pd.Series(tivs, dtype=float) if len(tivs) == len(rows) else None
    return RegionalTable(table, tiv, subjects_dir)


_READERS: dict[str, Callable[[Path], RegionalTable]] = {
    "plain": read_plain,
    "cat12_roi": read_cat12_roi,
    "freesurfer_table": read_freesurfer_table,
}


def read_regional_table(path: str | Path, table_format: str, participant_ids: list[str]) -> RegionalTable:
    """Read a regional table in ``table_format`` (see the module docstring)."""
    if table_format not in TABLE_FORMATS:
        raise TableFormatError(f"unknown table format {table_format!r}; formats: {list(TABLE_FORMATS)}")
    if table_format == "freesurfer_aseg":
        return read_freesurfer_aseg(Path(path), participant_ids)
    return _READERS[table_format](Path(path))
