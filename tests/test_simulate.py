"""Simulated cohorts: sizes, realism checks, the planted signature and byte-identical determinism."""

from __future__ import annotations

import filecmp
import json

import numpy as np
import pandas as pd
import pytest
from conftest import small_simulation

from src.data.loader import load_cohort
from src.data.simulate import build_anatomy, simulate_cohorts, simulate_participants, site_effects
from src.features.extract import FeatureSet, build_feature_table


def test_default_cohort_sizes_and_demographics(default_config):
    sim = default_config["data"]["simulation"]
    sizes = {}
    for name, spec in sim["cohorts"].items():
        p = simulate_participants(name, spec, sim)
        sizes[name] = (len(p), int(p["response"].sum()), set(p["treatment"]), set(p["site"]))
        # MADRS consistent with the response status under the contract's definition
        reduction = (p["madrs_baseline"] - p["madrs_24h"]) / p["madrs_baseline"]
        assert ((reduction >= 0.5).astype(int) == p["response"]).all()
        assert p["madrs_baseline"].between(0, 60).all() and p["madrs_24h"].between(0, 60).all()
    assert sizes["discovery"][:2] == (99, 52) and sizes["discovery"][2] == {"ketamine"}
    assert sizes["external_a"][0] + sizes["external_b"][0] == 51
    assert sizes["external_a"][3] != sizes["external_b"][3]  # each its own scanner site
    assert sizes["saline"][0] == 49 and sizes["saline"][2] == {"saline"}


def test_population_matches_published_trials(default_config):
    sim = small_simulation(default_config, {"discovery": (3000, 1500)})
    p = simulate_participants("discovery", sim["cohorts"]["discovery"], sim)
    assert abs(p["age"].mean() - 34) < 1 and abs(p["age"].std() - 10) < 1.5
    assert abs((p["sex"] == "F").mean() - 0.63) < 0.03
    assert abs(p["madrs_baseline"].mean() - 33) < 0.5
    ratio = p.loc[p["sex"] == "M", "tiv_true"].mean() / p.loc[p["sex"] == "F", "tiv_true"].mean()
    assert 1.10 < ratio < 1.14


def test_written_cohorts_follow_the_contract(tiny_simulated):
    truth = json.loads((tiny_simulated / "ground_truth.json").read_text())
    assert truth["seed"] == 11 and truth["signature"]["regions"][0]["name"] == "Frontal_Sup_2_L"
    for name, expected in truth["cohorts"].items():
        cohort = load_cohort(tiny_simulated / name, tissues=("GM", "WM", "CSF"))
        assert len(cohort) == expected["n"]
        assert int(cohort.participants["response"].sum()) == expected["responders"]
        assert cohort.reference_shape is not None and np.allclose(np.diag(cohort.reference_affine)[:3], 6.0)
    assert truth["cohorts"]["saline"]["signature_scale"] == 0.0


@pytest.mark.slow
def test_same_seed_gives_byte_identical_files(tmp_path, default_config):
    sim = small_simulation(default_config, {"discovery": (4, 2), "saline": (2, 1)}, resolution=8.0)
    simulate_cohorts(sim, tmp_path / "a", n_jobs=1, progress=False)
    simulate_cohorts(sim, tmp_path / "b", n_jobs=2, progress=False)
    cmp = filecmp.dircmp(tmp_path / "a", tmp_path / "b")
    files = [p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()]
    assert len(files) == 2 * 2 + 6 * 3 + 1 + 2 * 2  # descriptions, 18 maps, truth, tsv + json per cohort
    for rel in files:
        assert filecmp.cmp(tmp_path / "a" / rel, tmp_path / "b" / rel, shallow=False), rel
    assert not cmp.left_only and not cmp.right_only
    sim["seed"] = 12
    simulate_cohorts(sim, tmp_path / "c", n_jobs=1, progress=False)
    gm = "derivatives/simvbm/sub-d001/anat/sub-d001_space-MNI152NLin2009cSym_label-GM_probseg.nii.gz"
    assert not filecmp.cmp(tmp_path / "a/discovery" / gm, tmp_path / "c/discovery" / gm, shallow=False)


@pytest.mark.slow
@pytest.mark.parametrize("resolution", [2.0, 1.5])
def test_fine_resolutions_work(tmp_path, default_config, resolution):
    sim = small_simulation(default_config, {"discovery": (1, 1)}, resolution=resolution)
    simulate_cohorts(sim, tmp_path, n_jobs=1, progress=False)
    cohort = load_cohort(tmp_path / "discovery", tissues=("GM", "WM", "CSF"))
    assert np.allclose(np.abs(np.diag(cohort.reference_affine)[:3]), resolution)


@pytest.fixture(scope="module")
def large_cohorts(tmp_path_factory, default_config):
    """300 ketamine and 300 saline patients at 6 mm: enough for stable group differences."""
    root = tmp_path_factory.mktemp("large")
    sim = small_simulation(default_config, {"discovery": (300, 150), "saline": (300, 150)}, seed=5)
    simulate_cohorts(sim, root, n_jobs=2, progress=False)
    tables = {}
    for name in ("discovery", "saline"):
        cohort = load_cohort(root / name, tissues=("GM", "WM", "CSF"))
        tables[name], _ = build_feature_table(cohort, FeatureSet(name="gm_roi"), n_jobs=2)
    return tables, sim


def _cohens_d(table: pd.DataFrame) -> pd.Series:
    gm = table.filter(like="gm_").div(table["tiv"], axis=0)  # proportional scaling by TIV
    resp, non = gm[table["response"] == 1], gm[table["response"] == 0]
    pooled = np.sqrt((resp.var() + non.var()) / 2)
    return (resp.mean() - non.mean()) / pooled


@pytest.mark.slow
def test_planted_signature_is_visible_in_ketamine_only(large_cohorts):
    tables, sim = large_cohorts
    planted = {f"gm_{r['name']}": r["sign"] for r in sim["signature"]["regions"]}
    d = _cohens_d(tables["discovery"])
    for column, sign in planted.items():
        assert np.sign(d[column]) == sign, (column, d[column])
        assert abs(d[column]) > 0.25, (column, d[column])
    others = d.drop(list(planted))
    assert others.abs().mean() < 0.5 * np.mean([abs(d[c]) for c in planted])
    saline = _cohens_d(tables["saline"])
    assert saline[list(planted)].abs().mean() < 0.2  # response unrelated to anatomy under saline


@pytest.mark.slow
def test_realistic_anatomy(large_cohorts):
    tables, sim = large_cohorts
    t = pd.concat(tables.values(), ignore_index=True)
    gm_total = t.filter(like="gm_").sum(axis=1)
    ratio = t.loc[t["sex"] == "M", "tiv"].mean() / t.loc[t["sex"] == "F", "tiv"].mean()
    assert 1.08 < ratio < 1.16
    assert 0.3 < (gm_total / t["tiv"]).mean() < 0.6
    # age-related GM decline, after TIV scaling: about -0.5 %/year
    slope = np.polyfit(t["age"], np.log(gm_total / t["tiv"]), 1)[0]
    assert -0.008 < slope < -0.003


@pytest.mark.slow
def test_measured_tiv_and_site_effects_match_the_simulators_truth(large_cohorts):
    """Against the simulator's own per-subject TIV and per-site, per-region scanner effects (recomputed
    from the same seeds): the TIV the features measure from the GM + WM + CSF maps is each subject's true
    TIV up to the scanner's overall effect (within-cohort SD of the ratio < 1.5 %), and the measured
    difference between the two scanners is the planted one."""
    tables, sim = large_cohorts
    anatomy = build_anatomy(float(sim["resolution"]), str(sim["atlas"]), sim["anatomy"])
    measured_site = {}
    for name, table in tables.items():
        truth = simulate_participants(name, sim["cohorts"][name], sim).set_index("participant_id")
        true_tiv = truth.loc[table["participant_id"], "tiv_true"].to_numpy()
        ratio = table["tiv"].to_numpy() / true_tiv  # its mean carries the scanner's GM/WM effect
        assert np.corrcoef(table["tiv"], true_tiv)[0, 1] > 0.99 and ratio.std() < 0.015, name
        assert abs(ratio.mean() - 1) < 0.03, name
        # mean log(GM / TIV) per region, age-adjusted to the cohort mean age the simulator centres on
        gm = np.log(table[[f"gm_{r}" for r in anatomy.regions["name"]]].div(table["tiv"], axis=0))
        age = (table["age"] - float(sim["demographics"]["age_mean"])).to_numpy()[:, None]
        measured_site[name] = (gm + float(sim["anatomy"]["gm_age_decline"]) * age).mean(axis=0).to_numpy()
    (site_a,), (site_b,) = sim["cohorts"]["discovery"]["sites"], sim["cohorts"]["saline"]["sites"]
    n_regions = len(anatomy.regions)
    planted = (
        site_effects(site_a, int(sim["seed"]), n_regions, sim["anatomy"])["GM"]
        - site_effects(site_b, int(sim["seed"]), n_regions, sim["anatomy"])["GM"]
    )
    measured = measured_site["discovery"] - measured_site["saline"]
    assert np.abs(planted).max() <= 2 * float(sim["anatomy"]["site_max"])
    assert np.corrcoef(measured, planted)[0, 1] > 0.9
    assert np.median(np.abs(measured - planted)) < 0.02  # seen: 0.012 (biology, noise, TIV estimate)


def test_simulated_cohorts_carry_a_mark_that_any_data_config_reads(tiny_simulated, tmp_path):
    """What makes data simulated is the simulator's mark in each cohort's dataset_description.json, not the
    name of the data config: a config called anything else over the same folders is simulated, the same
    config over a copy without the mark (a user's data) is not."""
    import shutil

    from conftest import data_settings

    from src.data.cohorts import is_marked_simulated, is_simulated

    assert all(is_marked_simulated(tiny_simulated / name) for name in ("discovery", "saline"))
    cohorts = [{"name": "discovery", "role": "discovery", "treatment": "ketamine"}]
    assert is_simulated(data_settings(name="mystudy", root=str(tiny_simulated), cohorts=cohorts))
    own = tmp_path / "own"
    shutil.copytree(tiny_simulated / "discovery", own / "discovery")
    description = own / "discovery" / "dataset_description.json"
    description.write_text(json.dumps({**json.loads(description.read_text()), "GeneratedBy": []}))
    assert not is_simulated(data_settings(name="mystudy", root=str(own), cohorts=cohorts))
