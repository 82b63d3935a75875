"""The tutorials' example studies (``python -m src.data.example``): CAT12's LAS copy of a map is the same map
in the world, the example study's design is what the pages say, and bad arguments are refused before work.
(The whole studies run through the pipeline in tests/test_tutorial_*.py: CAT12 images, fMRIPrep images and
FreeSurfer tables of the same simulated maps give the same printed results there.)"""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from nilearn import image

from src.data.example import STUDY, _flip_x, simulation_settings, study_roles, write_example


def test_the_las_copy_is_the_same_map_in_world_space():
    """Reversing the first voxel axis with the affine change keeps every voxel's world position: resampled
    back onto the original grid (nilearn, nearest neighbour) it is the original array; without the affine
    change it would be the mirror image."""
    rng = np.random.default_rng(0)
    data = rng.random((7, 5, 4)).astype(np.float32)
    affine = np.array([[3.0, 0, 0, -90], [0, 3, 0, -126], [0, 0, 3, -72], [0, 0, 0, 1]])
    original = nib.Nifti1Image(data, affine)
    las = nib.Nifti1Image(np.ascontiguousarray(data[::-1]), affine @ _flip_x(data.shape[0]))
    assert nib.aff2axcodes(las.affine)[0] == "L"
    back = image.resample_to_img(
        las, original, interpolation="nearest", force_resample=True, copy_header=True
    )
    np.testing.assert_array_equal(np.asarray(back.dataobj), data)
    mirrored = nib.Nifti1Image(np.ascontiguousarray(data[::-1]), affine)
    assert not np.array_equal(np.asarray(mirrored.dataobj), data)


def test_the_study_is_the_one_the_tutorials_describe():
    assert study_roles() == {"hospitalA": "discovery", "hospitalB": "external", "placebo": "control"}
    sim = simulation_settings(seed=7)
    assert sim["seed"] == 7 and sim["resolution"] == 3.0 and "clinical" not in sim
    assert {name: (c["n"], c["responders"]) for name, c in sim["cohorts"].items()} == {
        "hospitalA": (60, 30),
        "hospitalB": (30, 15),
        "placebo": (30, 10),
    }
    assert (
        sim["cohorts"]["placebo"]["treatment"] == "saline"
        and sim["cohorts"]["placebo"]["signature_scale"] == 0
    )
    assert [spec[4] for spec in STUDY.values()] == [["siteA1", "siteA2"], ["siteB"], ["siteC"]]


def test_bad_arguments_are_refused_before_any_work(tmp_path):
    with pytest.raises(SystemExit, match="--tool must be one of cat12, fmriprep, freesurfer"):
        write_example(tmp_path / "x", "spm")
    (tmp_path / "taken").mkdir()
    with pytest.raises(SystemExit, match="exists: the example is written into a new folder"):
        write_example(tmp_path / "taken", "cat12")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # nothing half-written
