"""Image plausibility: wrong images are refused before they become features, naming subject and check."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from owndata import PIPELINE, OwnCohort, write_cohorts

from src.data.loader import CohortError, ImageLayout, load_cohort
from src.data.plausibility import PlausibilityBounds, check_gm_maps


@pytest.fixture()
def lab(tmp_path):
    write_cohorts(tmp_path, [OwnCohort("lab", "LB", 6, 3, ["x"])], signal=0.0, seed=1)
    return tmp_path / "lab"


def _gm(root, i):
    return root / "derivatives" / PIPELINE / "mri" / f"mwp1sub-LB{i:03d}_T1w.nii"


def _rewrite(path, data=None, affine=None):
    img = nib.load(path)
    nib.save(
        nib.Nifti1Image(img.get_fdata() if data is None else data, img.affine if affine is None else affine),
        path,
    )


def _check(root):
    return check_gm_maps(load_cohort(root, images=ImageLayout(naming="cat12")), PlausibilityBounds())


def test_a_cohort_on_its_own_las_grid_passes(lab):
    summary = _check(lab)
    assert all(500 < t < 800 for t in summary["total_gm_ml"]) and min(summary["inside_brain"]) > 0.9


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda d: d * 1000, r"sub-LB002: GM image .* has values up to .* scaled"),
        (lambda d: np.zeros_like(d), r"sub-LB002: GM image .* holds 0 ml of GM"),
        (lambda d: np.where(d > 0.5, np.nan, d), r"sub-LB002: GM image .* NaN/inf"),
        (lambda d: d - 0.2, r"sub-LB002: GM image .* negative values"),
    ],
)
def test_implausible_values_name_the_subject(lab, edit, message):
    path = _gm(lab, 2)
    _rewrite(path, data=edit(nib.load(path).get_fdata()))
    with pytest.raises(CohortError, match=message):
        _check(lab)


def test_a_shifted_cohort_is_not_in_mni_space(lab):
    for i in range(1, 7):
        affine = nib.load(_gm(lab, i)).affine.copy()
        affine[1, 3] += 70.0  # origin off by 7 cm: the brain sits in front of MNI's
        _rewrite(_gm(lab, i), affine=affine)
    with pytest.raises(CohortError, match=r"6 of 6 subjects, so the cohort's grid is not in MNI space"):
        _check(lab)


@pytest.mark.slow  # nilearn resamples its 1 mm template (3-5 s)
def test_the_cached_brain_mask_is_nilearns(tmp_path, monkeypatch):
    """The 2 mm brain mask kept on disk equals nilearn's, computed and then read back from the cache; a
    damaged cache file is recomputed, and an unwritable cache folder still gives the mask."""
    from nilearn import datasets

    from src.data import templates

    monkeypatch.setenv("KETAMINE_TRD_CACHE", str(tmp_path / "cache"))
    expected = datasets.load_mni152_brain_mask(resolution=2)
    for _ in range(2):  # computed (and written), then read from the file
        templates.mni152_brain_mask_2mm.cache_clear()
        mask = templates.mni152_brain_mask_2mm()
        np.testing.assert_array_equal(np.asarray(mask.dataobj), np.asarray(expected.dataobj))
        np.testing.assert_array_equal(mask.affine, expected.affine)
        assert len(list((tmp_path / "cache").glob("*.nii.gz"))) == 1
    (cached,) = (tmp_path / "cache").glob("*.nii.gz")
    cached.write_bytes(b"not a nifti")
    templates.mni152_brain_mask_2mm.cache_clear()
    np.testing.assert_array_equal(
        np.asarray(templates.mni152_brain_mask_2mm().dataobj), np.asarray(expected.dataobj)
    )
    # a well-formed NIfTI that is not the mask (all ones: it switched the brain-mask check off; a wrong
    # shape made valid scans fail as "not in MNI space") is caught by its recorded fingerprint, recomputed
    for foreign in (np.ones(expected.shape, np.uint8), np.ones((91, 109, 91), np.uint8)):
        nib.save(nib.Nifti1Image(foreign, expected.affine), cached)
        templates.mni152_brain_mask_2mm.cache_clear()
        np.testing.assert_array_equal(
            np.asarray(templates.mni152_brain_mask_2mm().dataobj), np.asarray(expected.dataobj)
        )
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("KETAMINE_TRD_CACHE", str(tmp_path / "file" / "cache"))  # cannot be created
    templates.mni152_brain_mask_2mm.cache_clear()
    np.testing.assert_array_equal(
        np.asarray(templates.mni152_brain_mask_2mm().dataobj), np.asarray(expected.dataobj)
    )
    templates.mni152_brain_mask_2mm.cache_clear()
