"""The cohort loader: the response label, exclusions, and one test per bad input naming the culprit."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd
import pytest
from conftest import AFFINE, SHAPE, make_cohort, rewrite_participants, write_image

from src.data.contract import image_relpath
from src.data.loader import CohortError, ImageLayout, OutcomeSpec, load_cohort, load_regional_table


def _set(column, index, value):
    def edit(df):
        df.loc[index, column] = value
        return df

    return edit


def test_valid_cohort_response_and_images(tmp_path):
    root = make_cohort(tmp_path / "c")
    cohort = load_cohort(root, tissues=("GM", "WM"))
    assert cohort.participant_ids == ["sub-t00", "sub-t01", "sub-t02", "sub-t03"]
    # 30 -> 10 is a 67 % reduction (responder); 30 -> 25 is 17 % (non-responder)
    assert cohort.participants["response"].tolist() == [1, 0, 1, 0]
    assert [p.name for p in cohort.images["GM"]][
        0
    ] == "sub-t00_space-MNI152NLin2009cSym_label-GM_probseg.nii.gz"
    assert cohort.reference_shape == SHAPE


def test_response_threshold_is_inclusive_and_configurable(tmp_path):
    root = make_cohort(tmp_path / "c")
    rewrite_participants(root, _set("madrs_24h", 1, "15"))  # exactly 50 % reduction
    assert load_cohort(root).participants["response"].tolist() == [1, 1, 1, 0]
    strict = load_cohort(root, outcome=OutcomeSpec(threshold=0.6))
    assert strict.participants["response"].tolist() == [1, 0, 1, 0]
    flipped = load_cohort(root, outcome=OutcomeSpec(positive="non-responder"))
    assert flipped.participants["response"].tolist() == [0, 0, 0, 1]


def test_missing_outcome_is_excluded_and_logged(tmp_path, caplog):
    root = make_cohort(tmp_path / "c")
    rewrite_participants(root, _set("madrs_24h", 2, "n/a"))
    with caplog.at_level(logging.WARNING, logger="src.data.loader"):
        cohort = load_cohort(root)
    assert cohort.excluded == ["sub-t02"] and len(cohort) == 3
    assert "1 subject(s) excluded for missing outcome" in caplog.text and "sub-t02" in caplog.text


def test_custom_outcome_columns(tmp_path):
    root = make_cohort(tmp_path / "c")
    rewrite_participants(root, lambda df: df.rename(columns={"madrs_24h": "madrs_d1"}))
    cohort = load_cohort(root, outcome=OutcomeSpec(followup="madrs_d1"))
    assert cohort.participants["response"].sum() == 2


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda df: df.drop(columns="site"), r"missing required column\(s\) \['site'\]"),
        (_set("participant_id", 1, "sub-t00"), r"duplicate participant_id \['sub-t00'\]"),
        (_set("participant_id", 1, "t01"), r"malformed participant_id \['t01'\]"),
        (_set("participant_id", 1, "sub-t_01"), r"malformed participant_id \['sub-t_01'\]"),
        (
            _set("madrs_24h", 1, "ten"),
            r"subject sub-t01 has non-numeric or infinite value 'ten' in column 'madrs_24h'",
        ),
        (_set("madrs_baseline", 3, "61"), r"subject sub-t03 has MADRS 61.0 in column 'madrs_baseline'"),
        (_set("madrs_24h", 0, "-1"), r"subject sub-t00 has MADRS -1.0 in column 'madrs_24h'"),
        (_set("madrs_baseline", 2, "0"), r"subject sub-t02 has baseline MADRS 0"),
        (_set("treatment", 1, "esketamine"), r"subject sub-t01 has unknown treatment code 'esketamine'"),
        (_set("sex", 3, "male"), r"subject sub-t03 has unknown sex code 'male'"),
        (
            _set("age", 0, "thirty"),
            r"subject sub-t00 has non-numeric or infinite value 'thirty' in column 'age'",
        ),
        (_set("age", 2, "inf"), r"subject sub-t02 has non-numeric or infinite value 'inf' in column 'age'"),
        (
            lambda df: _set("tiv", 1, "1e999")(df.assign(tiv="1500")),
            r"subject sub-t01 has non-numeric or infinite value '1e999' in column 'tiv'",
        ),
    ],
    ids=[
        "missing-column",
        "duplicate-id",
        "malformed-id",
        "malformed-id-underscore",
        "madrs-non-numeric",
        "madrs-above-60",
        "madrs-negative",
        "baseline-zero",
        "unknown-treatment",
        "unknown-sex",
        "age-text",
        "age-infinite",
        "tiv-overflow",
    ],
)
def test_bad_participants_table(tmp_path, edit, expected):
    root = make_cohort(tmp_path / "c")
    rewrite_participants(root, edit)
    with pytest.raises(CohortError, match=expected):
        load_cohort(root)


def test_empty_cohort(tmp_path):
    root = make_cohort(tmp_path / "c")
    rewrite_participants(root, lambda df: df.iloc[:0])
    with pytest.raises(CohortError, match="has no participants"):
        load_cohort(root)


def test_cohort_without_any_outcome_is_empty(tmp_path):
    root = make_cohort(tmp_path / "c")
    rewrite_participants(root, lambda df: df.assign(madrs_24h="n/a"))
    with pytest.raises(CohortError, match="no subject has both MADRS scores"):
        load_cohort(root)


def test_missing_participants_file(tmp_path):
    with pytest.raises(CohortError, match="participants.tsv not found"):
        load_cohort(tmp_path)


def test_row_without_image(tmp_path):
    root = make_cohort(tmp_path / "c")
    (root / image_relpath("sub-t02", "GM", "cat12")).unlink()
    with pytest.raises(CohortError, match="subject sub-t02 is in participants.tsv but has no GM image"):
        load_cohort(root)


def test_image_without_row(tmp_path):
    root = make_cohort(tmp_path / "c")
    write_image(root / image_relpath("sub-t99", "GM", "cat12"), np.ones(SHAPE))
    with pytest.raises(
        CohortError, match=r"sub-t99_space-.*_label-GM_probseg.nii.gz has no row in participants"
    ):
        load_cohort(root)


def test_image_listed_but_missing(tmp_path):
    root = make_cohort(tmp_path / "c")
    rewrite_participants(root, lambda df: df.assign(gm_file=[f"mri/mwp1{p}.nii" for p in df.participant_id]))
    with pytest.raises(CohortError, match=r"subject sub-t00: image listed in column 'gm_file' is missing"):
        load_cohort(root)


def test_corrupt_nifti(tmp_path):
    root = make_cohort(tmp_path / "c")
    (root / image_relpath("sub-t01", "GM", "cat12")).write_bytes(b"this is not a NIfTI file")
    with pytest.raises(CohortError, match=r"subject sub-t01: cannot read GM image .*unreadable or corrupt"):
        load_cohort(root)


def test_image_not_3d(tmp_path):
    root = make_cohort(tmp_path / "c")
    write_image(root / image_relpath("sub-t03", "GM", "cat12"), np.ones((*SHAPE, 2)))
    with pytest.raises(
        CohortError, match=r"subject sub-t03: GM image .* is not 3-D \(shape \(6, 7, 5, 2\)\)"
    ):
        load_cohort(root)


def test_singleton_4d_is_accepted(tmp_path):
    root = make_cohort(tmp_path / "c")
    write_image(root / image_relpath("sub-t03", "GM", "cat12"), np.ones((*SHAPE, 1)))
    assert len(load_cohort(root)) == 4


def test_grid_mismatch_rejected_by_default_or_resampled_with_warning(tmp_path, caplog):
    root = make_cohort(tmp_path / "c")
    other = AFFINE.copy()
    other[:3, :3] = np.diag([2.0, 2.0, 2.0])
    write_image(root / image_relpath("sub-t02", "GM", "cat12"), np.ones((12, 14, 10)), other)
    with pytest.raises(CohortError, match=r"subject sub-t02: GM image .* is on grid \(12, 14, 10\)"):
        load_cohort(root)
    with caplog.at_level(logging.WARNING, logger="src.data.loader"):
        cohort = load_cohort(root, images=ImageLayout(on_grid_mismatch="resample"))
    assert cohort.off_grid == ["sub-t02"]
    assert "it will be resampled" in caplog.text


def test_grids_differing_only_in_origin_are_told_apart(tmp_path):
    root = make_cohort(tmp_path / "c")
    shifted = AFFINE.copy()
    shifted[1, 3] += 20.0  # same shape and voxel size, the brain 2 cm elsewhere
    write_image(root / image_relpath("sub-t01", "GM", "cat12"), np.ones(SHAPE), shifted)
    with pytest.raises(
        CohortError, match=r"sub-t01: .*origin \(-10.0, 8.0, -8.0\) mm.*origin \(-10.0, -12.0, -8.0\) mm"
    ):
        load_cohort(root)


def test_ambiguous_pipeline(tmp_path):
    root = make_cohort(tmp_path / "c")
    shutil.copytree(root / "derivatives" / "cat12", root / "derivatives" / "fslvbm")
    with pytest.raises(CohortError, match=r"cannot choose the derivatives pipeline.*\['cat12', 'fslvbm'\]"):
        load_cohort(root)
    assert len(load_cohort(root, images=ImageLayout(pipeline="fslvbm"))) == 4


def _write_table(path, rows):
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False)
    return path


def test_regional_table_aligned_to_participants(tmp_path):
    root = make_cohort(tmp_path / "c")
    cohort = load_cohort(root, with_images=False)
    table = _write_table(
        tmp_path / "roi.tsv",
        [
            {"participant_id": f"sub-t{i:02d}", "Frontal_L": 10.0 + i, "Cerebellum_R": 50.0}
            for i in (3, 1, 0, 2)
        ],
    )
    features, tiv = load_regional_table(table, cohort)
    assert tiv is None  # a plain table carries no TIV
    assert features["Frontal_L"].tolist() == [10.0, 11.0, 12.0, 13.0]


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([{"pid": "sub-t00", "A": 1}], "missing column 'participant_id'"),
        (
            [{"participant_id": f"sub-t{i:02d}", "A": "x" if i == 2 else 1} for i in range(4)],
            r"subject sub-t02 has non-numeric, infinite or missing value 'x' in column 'A'",
        ),
        (
            [{"participant_id": f"sub-t{i:02d}", "A": 1} for i in range(3)],
            r"subject\(s\) \['sub-t03'\] have no row",
        ),
        (
            [{"participant_id": f"sub-t{i:02d}", "A": 1} for i in range(5)],
            r"subject\(s\) \['sub-t04'\] without a row in participants.tsv",
        ),
        ([{"participant_id": "sub-t00", "A": 1}] * 2, r"duplicate participant_id \['sub-t00'\]"),
    ],
    ids=["no-id-column", "non-numeric", "subject-missing", "extra-subject", "duplicate"],
)
def test_bad_regional_table(tmp_path, rows, expected):
    cohort = load_cohort(make_cohort(tmp_path / "c"), with_images=False)
    with pytest.raises(CohortError, match=expected):
        load_regional_table(_write_table(tmp_path / "roi.tsv", rows), cohort)


def test_header_only_check_is_cheap_but_real(tmp_path):
    """A listed image is opened with nibabel (not just stat-ed): a file named like an image that is not a
    NIfTI fails at load time, naming the subject, the tissue and the file (mutation seen failing: the
    header loop skipped)."""
    root = make_cohort(tmp_path / "c")
    path = root / image_relpath("sub-t01", "WM", "cat12")
    path.write_bytes(b"this is not a NIfTI image")
    with pytest.raises(
        CohortError,
        match="subject sub-t01: cannot read WM image",
    ):
        load_cohort(root, tissues=("GM", "WM"))
    load_cohort(root, tissues=("GM",))  # the GM maps alone are readable: only the WM map is the problem
