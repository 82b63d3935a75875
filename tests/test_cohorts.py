"""Cohort roles in the data config, image layouts users have (CAT12, fMRIPrep), and the prepare stage's
check of the feature sets against the data."""

from __future__ import annotations

import numpy as np
import pytest
import yaml
from conftest import SHAPE, data_settings, make_cohort, rewrite_participants, write_image

from src.config.settings import FeaturesSettings
from src.data.cohorts import CohortConfigError, cohort_specs, discovery_cohort, evaluation_groups
from src.data.loader import CohortError, ImageLayout, load_cohort
from src.data.validation import PlannedFeatures, pipeline_feature_sets, validate_cohorts


def _data(cohorts, root="/nowhere", **extra):
    return data_settings(root=str(root), cohorts=cohorts, **extra)


def test_roles_define_discovery_and_evaluation_groups():
    data = _data(
        [
            {"name": "ext1", "role": "external"},
            {"name": "train_here", "role": "discovery"},
            {"name": "ext2", "role": "external", "treatment": "ketamine"},
            {"name": "placebo", "role": "control", "treatment": "saline"},
        ]
    )
    assert discovery_cohort(data) == "train_here"  # any position, any name
    assert evaluation_groups(cohort_specs(data)) == {
        "external": ["ext1", "ext2"],
        "ext1": ["ext1"],
        "ext2": ["ext2"],
        "control": ["placebo"],
    }
    only = _data([{"name": "a", "role": "discovery"}, {"name": "b", "role": "external"}])
    assert evaluation_groups(cohort_specs(only)) == {
        "external": ["b"]
    }  # one external cohort, no control: no extra groups


@pytest.mark.parametrize(
    ("cohorts", "message"),
    [
        ([{"name": "a", "role": "external"}], r"exactly one cohort with role 'discovery'.*found \[\]"),
        ([{"name": "a", "role": "discovery"}, {"name": "b", "role": "discovery"}], "exactly one"),
        ([{"name": "a", "role": "discovery"}, {"name": "a", "role": "external"}], r"\['a'\] more than once"),
        ([{"name": "a", "role": "training"}], "role 'training' is not one of"),
        ([{"name": "a", "role": "discovery", "tables": "x"}], r"unknown key\(s\) \['tables'\]"),
        ([{"name": "a", "role": "discovery", "treatment": "esketamine"}], "treatment 'esketamine'"),
        ({"a": {"role": "discovery"}}, "data.cohorts must be a list"),
        (
            [
                {"name": "a", "role": "discovery"},
                {"name": "external", "role": "external"},
                {"name": "c", "role": "external"},
            ],
            "cohort 'external': a name that is also an evaluation group",
        ),
    ],
)
def test_bad_cohort_lists_are_refused(cohorts, message):
    with pytest.raises(CohortConfigError, match=message):
        cohort_specs(_data(cohorts))


def test_bare_names_take_the_role_of_their_treatment(tmp_path):
    make_cohort(tmp_path / "site1", tissues=())
    make_cohort(tmp_path / "site2", tissues=())
    make_cohort(tmp_path / "pl", tissues=())
    rewrite_participants(tmp_path / "pl", lambda df: df.assign(treatment="saline"))
    specs = cohort_specs(_data(["site1", "site2", "pl"], tmp_path))
    assert [(s.name, s.role) for s in specs] == [
        ("site1", "discovery"),
        ("site2", "external"),
        ("pl", "control"),
    ]
    rewrite_participants(tmp_path / "pl", lambda df: df.assign(treatment=["saline", "ketamine"] * 2))
    with pytest.raises(CohortConfigError, match=r"cohort 'pl': no role given.*\['ketamine', 'saline'\]"):
        cohort_specs(_data(["site1", "pl"], tmp_path))


def test_declared_treatment_fills_or_checks_the_column(tmp_path):
    root = make_cohort(tmp_path / "c", tissues=())
    rewrite_participants(root, lambda df: df.drop(columns="treatment"))
    cohort = load_cohort(root, with_images=False, treatment="saline")
    assert set(cohort.participants["treatment"]) == {"saline"}
    with pytest.raises(CohortError, match="required column"):
        load_cohort(root, with_images=False)  # no column and nothing declared
    rewrite_participants(root, lambda df: df.assign(treatment=["saline", "saline", "ketamine", "saline"]))
    with pytest.raises(
        CohortError, match=r"subject sub-t02 has treatment 'ketamine'.*declares treatment 'saline'"
    ):
        load_cohort(root, with_images=False, treatment="saline")


def _fmriprep(root, pid, res, session="ses-1", space="MNI152NLin2009cAsym"):
    name = f"{pid}_{session}_space-{space}_res-{res}_label-GM_probseg.nii.gz"
    return write_image(root / "derivatives" / "fmriprep" / pid / session / "anat" / name, np.full(SHAPE, 0.4))


def test_fmriprep_layout_with_sessions_and_resolutions(tmp_path):
    root = make_cohort(tmp_path / "c", tissues=())
    rewrite_participants(root, lambda df: df.assign(tiv="1500"))
    pids = [f"sub-t{i:02d}" for i in range(4)]
    for pid in pids:
        _fmriprep(root, pid, 2)
    cohort = load_cohort(root, images=ImageLayout(naming="fmriprep", space="MNI152NLin2009cAsym"))
    assert [p.name for p in cohort.images["GM"]][
        0
    ] == "sub-t00_ses-1_space-MNI152NLin2009cAsym_res-2_label-GM_probseg.nii.gz"
    _fmriprep(root, "sub-t01", 1)  # a second resolution of one subject: ambiguous, unless the space says
    with pytest.raises(CohortError, match="subject sub-t01 has 2 GM images.*data.space"):
        load_cohort(root, images=ImageLayout(naming="fmriprep", space="MNI152NLin2009cAsym"))
    cohort = load_cohort(root, images=ImageLayout(naming="fmriprep", space="MNI152NLin2009cAsym_res-2"))
    assert all("_res-2_" in p.name for p in cohort.images["GM"])
    _fmriprep(root, "sub-t99", 2)  # an image whose subject is not in participants.tsv
    with pytest.raises(CohortError, match=r"has no row in participants.tsv \(subject sub-t99"):
        load_cohort(root, images=ImageLayout(naming="fmriprep", space="MNI152NLin2009cAsym_res-2"))


def _cat12(root, pid, tissues=("1",), tiv=None):
    for k in tissues:
        write_image(
            root / "derivatives" / "CAT12.8" / pid / "mri" / f"mwp{k}{pid}_T1w.nii", np.full(SHAPE, 0.3)
        )
    if tiv is not None:
        report = root / "derivatives" / "CAT12.8" / pid / "report" / f"cat_{pid}_T1w.xml"
        report.parent.mkdir(parents=True, exist_ok=True)
        report.write_text(
            f"<?xml version='1.0'?><S><subjectmeasures><vol_TIV>{tiv}</vol_TIV></subjectmeasures></S>"
        )


def test_cat12_layout_names_and_xml_tiv(tmp_path):
    root = make_cohort(tmp_path / "c", tissues=())
    pids = [f"sub-t{i:02d}" for i in range(4)]
    for i, pid in enumerate(pids):
        _cat12(root, pid, tiv=1400 + i)
    cohort = load_cohort(root, images=ImageLayout(naming="cat12"))
    assert cohort.images["GM"][2].name == "mwp1sub-t02_T1w.nii"
    assert cohort.participants["tiv"].tolist() == [1400.0, 1401.0, 1402.0, 1403.0]
    _cat12(root, "sub-t01", tissues=(), tiv="nan")
    with pytest.raises(CohortError, match="subject sub-t01 has TIV nan in its CAT12 report"):
        load_cohort(root, images=ImageLayout(naming="cat12"))
    (root / "derivatives" / "CAT12.8" / "sub-t03" / "report" / "cat_sub-t03_T1w.xml").unlink()
    with pytest.raises(CohortError, match="subject sub-t03 has no CAT12 report"):
        load_cohort(root, images=ImageLayout(naming="cat12"))
    with pytest.raises(CohortError, match=r"sub-t00 .* no WM image: expected .*mri/mwp2sub-t00\*\.nii"):
        load_cohort(root, tissues=("GM", "WM"), images=ImageLayout(naming="cat12"))


def test_prepare_names_experiment_feature_set_cohort_and_tissue(tmp_path):
    """A cohort without WM maps and without TIV: every problem in one message, before any feature work."""
    make_cohort(tmp_path / "a", tissues=("GM", "WM", "CSF"))
    make_cohort(tmp_path / "b", tissues=("GM",))
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "feature_sets": ["gm_roi", "gm_wm_roi"],
                "experiments": {"gm_only": {"features": "gm_roi"}, "gm_wm": {"features": "gm_wm_roi"}},
            }
        )
    )
    plan = pipeline_feature_sets(params, FeaturesSettings(name="gm_roi"))
    assert plan["gm_wm_roi"].experiments == ["gm_wm"] and plan["gm_wm_roi"].tissues == ["GM", "WM"]
    data = _data(
        [{"name": "a", "role": "discovery"}, {"name": "b", "role": "external"}], tmp_path, pipeline="cat12"
    )
    with pytest.raises(CohortError) as error:
        validate_cohorts(data, plan)
    message = str(error.value)
    assert (
        "experiment(s) gm_wm use feature set 'gm_wm_roi', which needs WM maps; cohort 'b' has none" in message
    )
    assert "experiment(s) gm_only use feature set 'gm_roi': cohort 'b' has no TIV" in message
    assert "cohort 'a'" not in message
    rewrite_participants(tmp_path / "b", lambda df: df.assign(tiv="1500"))  # TIV given: only WM is missing
    with pytest.raises(CohortError, match="needs WM maps") as error:
        validate_cohorts(data, plan)
    assert "no TIV" not in str(error.value)
    summary = validate_cohorts(data, {k: v for k, v in plan.items() if k == "gm_roi"})
    assert summary["cohorts"]["b"]["role"] == "external" and len(summary["cohorts"]["a"]["images_md5"]) == 3


def test_each_cohort_can_have_its_own_layout_and_midazolam_is_a_control(tmp_path):
    """A consortium: one site's maps in the BIDS contract's names, another's in CAT12's, a midazolam arm."""
    make_cohort(tmp_path / "bids_site", tissues=("GM", "WM", "CSF"))
    cat = make_cohort(tmp_path / "cat_site", tissues=())
    rewrite_participants(cat, lambda df: df.assign(treatment="midazolam"))
    for i in range(4):
        _cat12(cat, f"sub-t{i:02d}", tiv=1500 + i)
    data = _data(
        [
            {"name": "bids_site", "role": "discovery"},
            {"name": "cat_site", "layout": "cat12", "pipeline": "CAT12.8"},  # role from the treatment
        ],
        tmp_path,
        pipeline="cat12",
    )
    assert [s.role for s in cohort_specs(data)] == ["discovery", "control"]
    summary = validate_cohorts(data, {"gm_roi": PlannedFeatures("roi", ["GM"])})
    assert summary["cohorts"]["cat_site"]["treatment"] == ["midazolam"]
    assert list(summary["cohorts"]["cat_site"]["images_md5"]) == ["GM"]  # TIV from the CAT12 reports
    assert list(summary["cohorts"]["bids_site"]["images_md5"]) == ["CSF", "GM", "WM"]  # TIV = GM + WM + CSF
    data.cohorts[1].pop("layout")
    with pytest.raises(CohortError, match="cohort 'cat_site': subject sub-t00 .* no GM image"):
        validate_cohorts(data, {"gm_roi": PlannedFeatures("roi", ["GM"])})


def test_files_that_look_like_tissue_maps_but_are_not_used_are_reported(tmp_path, caplog):
    root = make_cohort(tmp_path / "c", tissues=())
    rewrite_participants(root, lambda df: df.assign(tiv="1500"))
    for i in range(4):
        _cat12(root, f"sub-t{i:02d}", tissues=("1",))
    stray = root / "derivatives" / "CAT12.8" / "sub-t01" / "mri"
    write_image(stray / "wp1sub-t01_T1w.nii", np.full(SHAPE, 0.3))  # unmodulated: not a volume
    write_image(stray / "sub-t01_GM.nii", np.full(SHAPE, 0.3))  # misnamed
    write_image(stray / "msub-t01_T1w.nii", np.full(SHAPE, 0.3))  # the bias-corrected T1: not tissue-like
    import logging

    with caplog.at_level(logging.WARNING, logger="src.data.loader"):
        load_cohort(root, images=ImageLayout(naming="cat12"))
    assert "2 file(s) under" in caplog.text
    assert "sub-t01/mri/sub-t01_GM.nii" in caplog.text and "sub-t01/mri/wp1sub-t01_T1w.nii" in caplog.text
    assert "msub-t01_T1w" not in caplog.text


def test_the_feature_plan_follows_a_feature_set_s_defaults(tmp_path):
    """gm_voxel_2mm inherits kind and tissues from gm_voxel (its `defaults`): planned as a voxel set (what the
    data.source=table check reads), not as the ROI default a file without `kind` would give."""
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"experiments": {"gm_voxel_2mm": {"features": "gm_voxel_2mm"}}}))
    plan = pipeline_feature_sets(params, FeaturesSettings(name="gm_roi"))
    assert plan["gm_voxel_2mm"].kind == "voxel" and plan["gm_voxel_2mm"].tissues == ["GM"]
    assert plan["gm_voxel_2mm"].experiments == ["gm_voxel_2mm"]
