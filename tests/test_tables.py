"""Regional-table readers on files written as each tool writes them (CAT12, FreeSurfer, plain)."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import data_settings, make_cohort, rewrite_participants

from src.data.loader import CohortError, load_cohort, load_regional_table
from src.data.tables import TableFormatError, parse_aseg_stats, read_regional_table, subject_id
from src.features.feature_sets import build_feature_set

IDS = [f"sub-t{i:02d}" for i in range(4)]

# aparcstats2table --hemi lh --meas volume --delimiter space (FreeSurfer 7): mm³, eTIV appended
APARC = """\
lh.aparc.volume lh_bankssts_volume lh_caudalanteriorcingulate_volume lh_insula_volume BrainSegVolNotVent eTIV
sub-t00 2650 1800 7100 1100000 1500000
sub-t01 2700 1750 7050 1120000 1600000
sub-t02 2600 1900 7200 1080000 1400000
sub-t03 2550 1850 7000 1090000 1450000
"""
# asegstats2table --meas volume (tab-delimited): subjects named without 'sub-', ratio columns
ASEG_TABLE = (
    "Measure:volume\tLeft-Hippocampus\tRight-Hippocampus\tBrainSegVol-to-eTIV\tMaskVol-to-eTIV\t"
    "EstimatedTotalIntraCranialVol\n"
    "t00\t4100.5\t4200.5\t0.74\t0.9\t1500000\n"
    "t01\t4000.0\t4150.0\t0.72\t0.91\t1600000\n"
    "t02\t3900.0\t4050.0\t0.75\t0.88\t1400000\n"
    "t03\t4200.0\t4300.0\t0.73\t0.9\t1450000\n"
)
ASEG_STATS = """\
# Title Segmentation Statistics
# generating_program mri_segstats
# Measure BrainSeg, BrainSegVol, Brain Segmentation Volume, 1100000.000000, mm^3
# Measure EstimatedTotalIntraCranialVol, eTIV, Estimated Total Intracranial Volume, {etiv:.6f}, mm^3
# NRows 2
# NTableCols 10
# ColHeaders  Index SegId NVoxels Volume_mm3 StructName normMean normStdDev normMin normMax normRange
  1  17     4101     {hippo:.1f}  Left-Hippocampus                  79.1     10.2    33.0   112.0    79.0
  2  18     4208     4208.3  Right-Hippocampus                 79.8     10.0    38.0   110.0    72.0
"""


def test_aparcstats2table_volumes_in_ml_and_etiv(tmp_path):
    path = tmp_path / "lh.aparc.volume.txt"
    path.write_text(APARC)
    table = read_regional_table(path, "freesurfer_table", IDS)
    assert list(table.volumes.columns) == [
        "participant_id",
        "lh_bankssts_volume",
        "lh_caudalanteriorcingulate_volume",
        "lh_insula_volume",
    ]  # BrainSegVolNotVent (a whole-brain measure) and eTIV are not regions
    assert table.volumes["lh_insula_volume"].astype(float).tolist() == [7.1, 7.05, 7.2, 7.0]  # mm³ -> ml
    assert table.tiv.loc["sub-t01"] == 1600.0


def test_asegstats2table_subject_names_and_ratios(tmp_path):
    path = tmp_path / "aseg.tsv"
    path.write_text(ASEG_TABLE)
    table = read_regional_table(path, "freesurfer_table", IDS)
    assert table.volumes["participant_id"].tolist() == IDS  # 't00' -> 'sub-t00'
    assert list(table.volumes.columns[1:]) == ["Left_Hippocampus", "Right_Hippocampus"]  # ratios dropped
    assert float(table.volumes["Left_Hippocampus"].iloc[0]) == pytest.approx(4.1005)
    assert table.tiv.tolist() == [1500.0, 1600.0, 1400.0, 1450.0]


def test_aseg_stats_per_subject(tmp_path):
    for i, pid in enumerate(IDS):
        stats = tmp_path / pid.removeprefix("sub-") / "stats" / "aseg.stats"
        stats.parent.mkdir(parents=True)
        stats.write_text(ASEG_STATS.format(etiv=1500000 + i * 1000, hippo=4100 + i))
    volumes, etiv = parse_aseg_stats(tmp_path / "t02" / "stats" / "aseg.stats")
    assert volumes == {"Left-Hippocampus": 4102.0, "Right-Hippocampus": 4208.3} and etiv == 1502000.0
    table = read_regional_table(tmp_path, "freesurfer_aseg", IDS)
    assert table.volumes["Left_Hippocampus"].tolist() == [4.1, 4.101, 4.102, 4.103]
    assert table.tiv.loc["sub-t03"] == pytest.approx(1503.0)
    (tmp_path / "t01" / "stats" / "aseg.stats").unlink()
    with pytest.raises(TableFormatError, match="subject sub-t01: no aseg.stats"):
        read_regional_table(tmp_path, "freesurfer_aseg", IDS)


def test_cat12_roi_export_with_trailing_separators(tmp_path):
    """cat_stat_ROI writes 'Name' + ROI names, a tab after every value and no final newline."""
    path = tmp_path / "ROI_catROI_neuromorphometrics_Vgm.csv"
    lines = ["Name\tlACC\trACC\tlAmy\t"] + [
        f"{pid}_T1w\t{4 + i}.5\t4.25\t1.{i}\t" for i, pid in enumerate(IDS)
    ]
    path.write_text("\n".join(lines))
    table = read_regional_table(path, "cat12_roi", IDS)
    assert list(table.volumes.columns) == ["participant_id", "lACC", "rACC", "lAmy"]
    assert table.volumes["participant_id"].tolist() == IDS  # 'sub-t00_T1w' -> 'sub-t00'
    assert table.volumes["lAmy"].astype(float).tolist() == [1.0, 1.1, 1.2, 1.3]  # already ml
    assert table.tiv is None
    comma = tmp_path / "roi_comma.csv"  # newer CAT12 exports: comma-separated, 'names'
    comma.write_text("names,lACC,rACC\n" + "\n".join(f"catROI_{pid}_T1w,4.5,4.25" for pid in IDS) + "\n")
    assert read_regional_table(comma, "cat12_roi", IDS).volumes["participant_id"].tolist() == IDS


def test_wrong_format_is_named(tmp_path):
    path = tmp_path / "aseg.tsv"
    path.write_text(ASEG_TABLE)
    with pytest.raises(TableFormatError, match=r"first column is 'Measure:volume', not CAT12's"):
        read_regional_table(path, "cat12_roi", IDS)
    with pytest.raises(TableFormatError, match="missing column 'participant_id'"):
        read_regional_table(path, "plain", IDS)
    with pytest.raises(TableFormatError, match="unknown table format 'spm'"):
        read_regional_table(path, "spm", IDS)
    assert subject_id("catROI_sub-AB12_ses-1_T1w") == "sub-AB12"


def test_table_tiv_fills_a_missing_tiv_column(tmp_path):
    root = make_cohort(tmp_path / "c", tissues=())
    (root / "aseg.tsv").write_text(ASEG_TABLE)
    cohort = load_cohort(root, with_images=False)
    features, tiv = load_regional_table(root / "aseg.tsv", cohort, "freesurfer_table")
    assert tiv.tolist() == [1500.0, 1600.0, 1400.0, 1450.0]
    data = {
        "root": str(tmp_path),
        "cohorts": [
            {"name": "c", "role": "discovery", "table": "aseg.tsv", "table_format": "freesurfer_table"}
        ],
        "source": "table",
        "pipeline": None,
        "outcome": {},
    }
    from src.features.extract import FeatureSet

    build_feature_set(data_settings(**data), FeatureSet(name="gm_roi"), tmp_path / "features")
    table = pd.read_parquet(tmp_path / "features" / "gm_roi" / "c.parquet")
    assert table["tiv"].tolist() == [1500.0, 1600.0, 1400.0, 1450.0]
    # participants.tsv's tiv wins over the table's
    rewrite_participants(root, lambda df: df.assign(tiv=["1", "2", "3", "4"]))
    build_feature_set(data_settings(**data), FeatureSet(name="gm_roi"), tmp_path / "features")
    assert pd.read_parquet(tmp_path / "features" / "gm_roi" / "c.parquet")["tiv"].tolist() == [1, 2, 3, 4]
    # a table without TIV and no tiv column: a clear error
    (root / "plain.tsv").write_text("participant_id\tHippo\n" + "".join(f"{p}\t4.1\n" for p in IDS))
    rewrite_participants(root, lambda df: df.drop(columns="tiv"))
    data["cohorts"][0].update(table="plain.tsv", table_format="plain")
    with pytest.raises(CohortError, match="format 'plain' carries no TIV: add a 'tiv' column"):
        build_feature_set(data_settings(**data), FeatureSet(name="gm_roi"), tmp_path / "features")


def test_a_freesurfer_table_with_both_tiv_names_gives_one_tiv_or_names_both(tmp_path):
    """asegstats2table's EstimatedTotalIntraCranialVol beside aparcstats2table's eTIV (two exports pasted
    together): the same values are one TIV; different values are refused naming both columns (this used to
    end in pandas' TypeError from renaming a column beside an existing one)."""
    path = tmp_path / "aseg.tsv"
    path.write_text(
        ASEG_TABLE.replace("EstimatedTotalIntraCranialVol\n", "EstimatedTotalIntraCranialVol\teTIV\n")
        .replace("1500000\n", "1500000\t1500000\n")
        .replace("1600000\n", "1600000\t1600000\n")
        .replace("1400000\n", "1400000\t1400000\n")
        .replace("1450000\n", "1450000\t1450000\n")
    )
    table = read_regional_table(path, "freesurfer_table", IDS)
    assert table.tiv.tolist() == [1500.0, 1600.0, 1400.0, 1450.0]
    assert "eTIV" not in table.volumes.columns
    path.write_text(path.read_text().replace("1600000\t1600000", "1600000\t1700000"))
    with pytest.raises(
        TableFormatError,
        match="columns 'EstimatedTotalIntraCranialVol' and 'eTIV' both hold the TIV and disagree",
    ):
        read_regional_table(path, "freesurfer_table", IDS)
