"""Feature tables: ROI volumes against hand sums, voxel tables and masks, user folders, atomic writes."""

from __future__ import annotations

import gzip
import re
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import data_settings, make_cohort, rewrite_participants, write_image

from src.data.contract import TABLE_META_COLUMNS, image_relpath
from src.data.loader import CohortError, load_cohort
from src.data.templates import atlas_on_grid, mni_grid
from src.features.extract import FeatureSet, build_feature_table
from src.features.feature_sets import build_feature_set
from src.features.tables import PACK_ABOVE, PACKED_COLUMN, read_feature_table, write_feature_table
from src.utils.errors import UserInputError

DATA = {
    "pipeline": None,
    "space": "MNI152NLin2009cSym",
    "source": "images",
    "outcome": {
        "baseline": "madrs_baseline",
        "followup": "madrs_24h",
        "threshold": 0.5,
        "positive": "responder",
    },
    "on_grid_mismatch": "error",
}


def test_roi_volume_equals_hand_computed_sum(tmp_path):
    """Constant maps on a 4 mm MNI grid: region volume = value x voxels x 0.064 ml; TIV = all voxels."""
    affine, shape = mni_grid(4.0)
    root = tmp_path / "c"
    make_cohort(root, n=2, tissues=())
    gm_values = {"sub-t00": 0.5, "sub-t01": 0.25}
    for pid, value in gm_values.items():
        write_image(root / image_relpath(pid, "GM", "cat12"), np.full(shape, value), affine)
        write_image(root / image_relpath(pid, "WM", "cat12"), np.full(shape, 0.3), affine)
        write_image(root / image_relpath(pid, "CSF", "cat12"), np.full(shape, 1 - value - 0.3), affine)
    cohort = load_cohort(root, tissues=("GM", "WM", "CSF"))
    table, side = build_feature_table(cohort, FeatureSet(name="gm_roi", atlas="aal"))
    atlas, labels = atlas_on_grid("aal", nib.Nifti1Image(np.zeros(shape), affine))
    atlas_data = np.asarray(atlas.dataobj)
    voxel_ml = 4.0**3 / 1000
    for name, index in [("Frontal_Sup_2_L", 2101), ("Cerebelum_Crus1_R", 9002), ("Hippocampus_L", 4101)]:
        n_voxels = int((atlas_data == index).sum())
        assert n_voxels > 0
        expected = [gm_values[p] * n_voxels * voxel_ml for p in ("sub-t00", "sub-t01")]
        np.testing.assert_allclose(table[f"gm_{name}"], expected, rtol=1e-6)
    np.testing.assert_allclose(table["tiv"], np.prod(shape) * voxel_ml, rtol=1e-6)
    assert list(table.columns[: len(TABLE_META_COLUMNS)]) == list(TABLE_META_COLUMNS)
    assert (
        table.shape[1] == len(TABLE_META_COLUMNS) + len(labels) == 8 + 120
    )  # every AAL region, cerebellum included
    assert side["regions"].set_index("column").loc["gm_Cerebelum_6_L", "index"] == 9041


@pytest.mark.slow
def test_feature_sets_on_simulated_cohorts(tmp_path, tiny_simulated):
    data = {
        **DATA,
        "root": str(tiny_simulated),
        "cohorts": ["discovery", "external_a", "external_b", "saline"],
    }
    shapes = {}
    for cfg in (
        {"name": "gm_roi"},
        {"name": "gm_wm_roi", "tissues": ["GM", "WM"]},
        {"name": "gm_roi_nmm", "atlas": "neuromorphometrics"},
        {"name": "gm_voxel", "kind": "voxel", "resolution": 8.0, "smoothing_fwhm": 8.0},
    ):
        manifest = build_feature_set(data_settings(**data), FeatureSet.from_config(cfg), tmp_path)
        tables = {c: read_feature_table(tmp_path / cfg["name"] / f"{c}.parquet") for c in data["cohorts"]}
        shapes[cfg["name"]] = tables["discovery"].shape
        assert [len(t) for t in tables.values()] == [12, 5, 5, 6]
        assert manifest["cohorts"]["discovery"]["responders"] == 6
        for t in tables.values():
            assert list(t.columns[: len(TABLE_META_COLUMNS)]) == list(TABLE_META_COLUMNS)
            regions = t.iloc[:, len(TABLE_META_COLUMNS) :]
            assert (regions.to_numpy() >= 0).all() and regions.notna().all().all()
    meta = len(TABLE_META_COLUMNS)
    assert shapes["gm_wm_roi"][1] - meta == 2 * (shapes["gm_roi"][1] - meta)
    gm = pd.read_parquet(tmp_path / "gm_roi" / "discovery.parquet")
    assert "gm_Frontal_Sup_2_L" in gm.columns and "gm_Cerebelum_Crus1_R" in gm.columns
    nmm = pd.read_parquet(tmp_path / "gm_roi_nmm" / "discovery.parquet")
    assert "gm_Right_Cerebellum_Exterior" in nmm.columns
    # TIV from the GM + WM + CSF maps equals the simulated intracranial volume's order of magnitude
    assert gm["tiv"].between(1000, 2200).all()
    mask = nib.load(tmp_path / "gm_voxel" / "mask.nii.gz")
    assert np.allclose(np.abs(np.diag(mask.affine)[:3]), 8.0)
    assert shapes["gm_voxel"][1] - len(TABLE_META_COLUMNS) == int(np.asarray(mask.dataobj).sum())


def test_tables_are_deterministic(tmp_path, tiny_simulated):
    data = {**DATA, "root": str(tiny_simulated), "cohorts": ["discovery"]}
    fs = FeatureSet(name="gm_roi")
    build_feature_set(data_settings(**data), fs, tmp_path / "a", n_jobs=1)
    build_feature_set(data_settings(**data), fs, tmp_path / "b", n_jobs=2)
    for name in ("discovery.parquet", "regions.tsv", "manifest.json"):
        assert (tmp_path / "a/gm_roi" / name).read_bytes() == (tmp_path / "b/gm_roi" / name).read_bytes()


def test_user_style_folder_gives_the_same_table(tmp_path, tiny_simulated):
    """A CAT12-style folder (own file names listed in gm_file, uncompressed .nii, a tiv column, an extra
    subject without outcome, extra clinical columns) yields the same features as the contract folder."""
    src = tiny_simulated / "discovery"
    reference = load_cohort(src, tissues=("GM", "WM", "CSF"))
    expected, _ = build_feature_table(reference, FeatureSet(name="gm_roi"))
    user = tmp_path / "mystudy"
    user.mkdir()
    participants = pd.read_csv(src / "participants.tsv", sep="\t", dtype=str)
    files = []
    for pid, gm_path in zip(reference.participant_ids, reference.images["GM"], strict=True):
        target = user / "mri" / f"mwp1{pid.removeprefix('sub-')}.nii"
        target.parent.mkdir(exist_ok=True)
        target.write_bytes(gzip.decompress(gm_path.read_bytes()))
        files.append(f"mri/{target.name}")
    participants["gm_file"] = files
    participants["tiv"] = expected["tiv"].round(6).astype(str)
    participants["hamd_baseline"] = "20"
    extra = participants.iloc[[0]].assign(participant_id="sub-late", madrs_24h="n/a", gm_file="mri/none.nii")
    pd.concat([participants, extra]).to_csv(user / "participants.tsv", sep="\t", index=False)
    (user / "derivatives" / "cat12").mkdir(parents=True)
    data = {**DATA, "root": str(tmp_path), "cohorts": ["mystudy"], "pipeline": "cat12"}
    manifest = build_feature_set(data_settings(**data), FeatureSet(name="gm_roi"), tmp_path / "features")
    got = pd.read_parquet(tmp_path / "features" / "gm_roi" / "mystudy.parquet")
    assert manifest["cohorts"]["mystudy"]["excluded_missing_outcome"] == ["sub-late"]
    pd.testing.assert_frame_equal(
        got.drop(columns="tiv"), expected.drop(columns="tiv"), check_exact=False, rtol=1e-6
    )
    np.testing.assert_allclose(got["tiv"], expected["tiv"], rtol=1e-6)


def test_regional_table_source(tmp_path):
    root = make_cohort(tmp_path / "c", tissues=())
    rewrite_participants(root, lambda df: df.assign(tiv=["1500", "1600", "1400", "1450"]))
    pd.DataFrame(
        {
            "participant_id": [f"sub-t{i:02d}" for i in range(4)],
            "lh_superiorfrontal": [10, 11, 12, 13],
            "Left-Cerebellum-Cortex": [50, 51, 52, 53],
        }
    ).to_csv(tmp_path / "aseg.csv", index=False)
    data = {
        **DATA,
        "root": str(tmp_path),
        "cohorts": [{"name": "c", "role": "discovery", "table": str(tmp_path / "aseg.csv")}],
        "source": "table",
    }
    build_feature_set(data_settings(**data), FeatureSet(name="user_roi"), tmp_path / "features")
    table = pd.read_parquet(tmp_path / "features" / "user_roi" / "c.parquet")
    assert list(table.columns[8:]) == ["lh_superiorfrontal", "Left_Cerebellum_Cortex"]
    assert table["tiv"].tolist() == [1500, 1600, 1400, 1450]


def test_tiv_needs_a_column_or_three_tissue_maps(tmp_path):
    root = make_cohort(tmp_path / "c", tissues=("GM", "WM"))
    cohort = load_cohort(root, tissues=("GM", "WM"))
    with pytest.raises(CohortError, match=r"cannot compute TIV.*\['CSF'\]"):
        build_feature_table(cohort, FeatureSet(name="gm_roi"))


def test_corrupt_image_data_names_subject_and_leaves_nothing_behind(tmp_path, tiny_simulated):
    root = tmp_path / "cohorts"
    shutil.copytree(tiny_simulated, root)
    gm = root / "saline" / image_relpath("sub-s002", "GM", "simvbm")
    gm.write_bytes(gm.read_bytes()[:4000])  # truncated download: header fine, data cut
    data = {**DATA, "root": str(root), "cohorts": ["discovery", "saline"]}
    out = tmp_path / "features"
    build_feature_set(data_settings(**{**data, "cohorts": ["discovery"]}), FeatureSet(name="gm_roi"), out)
    before = (out / "gm_roi" / "discovery.parquet").read_bytes()
    with pytest.raises(CohortError, match=r"cohort 'saline': subject sub-s002: cannot read GM image"):
        build_feature_set(data_settings(**data), FeatureSet(name="gm_roi"), out)
    # the previous complete output is untouched and no temporary folder is left
    assert (out / "gm_roi" / "discovery.parquet").read_bytes() == before
    assert not (out / "gm_roi" / "saline.parquet").exists()
    assert sorted(p.name for p in out.iterdir()) == ["gm_roi"]


def test_off_grid_image_is_resampled_when_allowed(tmp_path, tiny_simulated):
    root = tmp_path / "cohorts"
    shutil.copytree(tiny_simulated / "external_a", root / "external_a")
    gm = root / "external_a" / image_relpath("sub-ea001", "GM", "simvbm")
    img = nib.load(gm)
    from nilearn import image

    fine = image.resample_img(
        img,
        target_affine=np.diag([3.0, 3.0, 3.0]),
        interpolation="continuous",
        force_resample=True,
        copy_header=True,
    )
    nib.save(fine, gm)
    data = {**DATA, "root": str(root), "cohorts": ["external_a"], "on_grid_mismatch": "resample"}
    build_feature_set(data_settings(**data), FeatureSet(name="gm_roi"), tmp_path / "f")
    table = pd.read_parquet(tmp_path / "f" / "gm_roi" / "external_a.parquet")
    assert table.filter(like="gm_").notna().all().all()
    with pytest.raises(CohortError, match="sub-ea001: GM image .* is on grid"):
        build_feature_set(
            data_settings(**{**data, "on_grid_mismatch": "error"}), FeatureSet(name="gm_roi"), tmp_path / "g"
        )


def test_non_responders_as_the_positive_class_end_to_end(tmp_path, tiny_simulated):
    """``data.outcome.positive: non-responder`` flips the label of every subject in the feature tables, and
    the trained ensemble's scores then rank the same subjects the other way round."""
    from src.models.search_space import SearchSpace
    from src.validation.ensemble import EnsembleModel
    from src.validation.nested_cv import CVConfig, run_nested_cv

    scores = {}
    for positive in ("responder", "non-responder"):
        data = {**DATA, "root": str(tiny_simulated), "cohorts": ["discovery"]}
        data["outcome"] = {**DATA["outcome"], "positive": positive}
        build_feature_set(data_settings(**data), FeatureSet(name="gm_roi"), tmp_path / positive)
        table = pd.read_parquet(tmp_path / positive / "gm_roi" / "discovery.parquet")
        X = table[["age", "sex", "tiv", "site", *[c for c in table.columns if c.startswith("gm_")]]]
        space = SearchSpace.from_config({"search_space": {}, "fixed": {"kernel": "linear", "C": 1.0}})
        cv = CVConfig(repeats=1, outer_folds=3, inner_folds=2, n_trials=1)
        result = run_nested_cv(
            X, table["response"].to_numpy(), space, cv, 0, ids=table["participant_id"].tolist()
        )
        scores[positive] = (table, EnsembleModel.from_result(result).decision_function(table))
    (responders, s_r), (non_responders, s_n) = scores["responder"], scores["non-responder"]
    np.testing.assert_array_equal(non_responders["response"], 1 - responders["response"])
    assert np.corrcoef(s_r, s_n)[0, 1] < -0.9


def _wide_table(n_features: int, dtype: type, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    meta = pd.DataFrame(
        {
            "participant_id": [f"sub-{i:02d}" for i in range(6)],
            "age": rng.normal(40, 9, 6),
            "sex": ["F", "M"] * 3,
            "site": "a",
            "tiv": rng.normal(1500, 100, 6),
            "treatment": "ketamine",
            "response": [0, 1] * 3,
            "outcome": rng.normal(50, 20, 6),
        }
    )
    values = pd.DataFrame(
        rng.random((6, n_features)).astype(dtype), columns=[f"v{i}" for i in range(n_features)]
    )
    return pd.concat([meta, values], axis=1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_wide_table_is_stored_packed_and_read_back_exactly(tmp_path, dtype):
    """A voxel-wide table is one list column in the file (parquet's per-column metadata made a 181 k-column
    table cost ~0.9 GB to open) and reads back as the same wide DataFrame: names, order, float type and
    every value bit for bit; a region table stays one column per feature, readable by any parquet reader."""
    import pyarrow.parquet as pq

    wide = _wide_table(PACK_ABOVE + 1, dtype)
    write_feature_table(wide, tmp_path / "wide.parquet")
    schema = pq.read_schema(tmp_path / "wide.parquet")
    assert schema.names == [*wide.columns[: -(PACK_ABOVE + 1)], PACKED_COLUMN]
    back = read_feature_table(tmp_path / "wide.parquet")
    pd.testing.assert_frame_equal(back, wide, check_exact=True)
    assert (back.dtypes.iloc[len(TABLE_META_COLUMNS) :] == dtype).all()
    narrow = _wide_table(PACK_ABOVE, dtype)
    write_feature_table(narrow, tmp_path / "narrow.parquet")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "narrow.parquet"), narrow, check_exact=True)
    pd.testing.assert_frame_equal(read_feature_table(tmp_path / "narrow.parquet"), narrow, check_exact=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["narrow.parquet", "wide.parquet"]  # no temporary


def test_a_packed_table_whose_names_do_not_match_its_values_is_refused(tmp_path):
    import pyarrow.parquet as pq

    path = tmp_path / "discovery.parquet"
    write_feature_table(_wide_table(PACK_ABOVE + 3, np.float32), path)
    stored = pq.read_table(path)
    metadata = dict(stored.schema.metadata)
    metadata[b"ketamine_trd.feature_columns"] = b'["v0", "v1"]'
    pq.write_table(stored.replace_schema_metadata(metadata), path)
    with pytest.raises(
        UserInputError, match=r"discovery\.parquet: 4099 packed values per subject but 2 feature"
    ):
        read_feature_table(path)


@pytest.mark.parametrize("damage", ["truncated", "not parquet", "null row"])
def test_a_damaged_feature_table_is_one_line_naming_the_file(tmp_path, damage):
    """A truncated parquet, a file that is not parquet and a packed table with a subject without values end
    in one UserInputError naming the file (they were raw pyarrow tracebacks naming none)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "gm_voxel" / "discovery.parquet"
    path.parent.mkdir()
    write_feature_table(_wide_table(PACK_ABOVE + 3, np.float32), path)
    if damage == "truncated":
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif damage == "not parquet":
        path.write_text("participant_id,gm_1\nsub-01,0.5\n")
    else:
        stored = pq.read_table(path)
        column = stored.column("__features__").combine_chunks()
        mask = pa.array([i == 2 for i in range(len(column))])
        holed = pa.FixedSizeListArray.from_arrays(column.flatten(), column.type.list_size, mask=mask)
        index = stored.schema.get_field_index("__features__")
        pq.write_table(stored.set_column(index, "__features__", holed), path)
    with pytest.raises(UserInputError, match=rf"feature table {re.escape(str(path))}") as err:
        read_feature_table(path)
    assert "rebuild it with `python -m src.features.build features=gm_voxel`" in str(err.value)
