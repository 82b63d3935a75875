"""Your own cohorts end to end, as a new user runs them (README, "Your own data").

The cohorts come from ``tests/owndata.py``, which shares no code with the simulator: CAT12 file names on a
LAS 4 mm grid with its own origin, three discovery sites, an unseen external site, other cohort/site/subject
names, a missing outcome, an external cohort without a ``tiv`` column and without WM maps (TIV from CAT12's
XML reports) and a control cohort without ``tiv`` (TIV = GM + WM + CSF), a signature planted in other regions
(temporal/insula up, occipital down). Two runs:

- a **null** set (no signal) through the README's individual commands, from regional tables in three tools'
  formats (CAT12 ROI csv, FreeSurfer asegstats2table, FreeSurfer aseg.stats): everything at chance, for the
  responder classifier and for the regression of the percentage MADRS reduction;
- a **signal** set through ``dvc repro`` with ``data: mystudy`` in a temporary git repository: the planted
  regions come out on top with the planted signs, the external cohort above chance.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import subprocess_env
from owndata import (
    SIGNATURE,
    OwnCohort,
    write_aseg_stats,
    write_asegstats2table,
    write_cat12_roi_csv,
    write_cohorts,
)
from tutorials import project_copy

pytestmark = pytest.mark.slow

TINY_CV = ["cv.repeats=2", "cv.outer_folds=3", "cv.inner_folds=3", "cv.n_trials=5"]


def cohorts() -> list[OwnCohort]:
    return [
        OwnCohort("hospitalA", "HA", 62, 31, ["north", "south", "east"], missing_outcome=2),
        OwnCohort("hospitalB", "HB", 30, 15, ["oslo"], tiv_column=False, xml_reports=True),
        OwnCohort("placebo", "PL", 30, 12, ["leiden"], treatment="saline", tiv_column=False, wm_csf=True),
    ]


def run(cwd: Path, *args: str, ok: bool = True) -> subprocess.CompletedProcess:
    done = subprocess.run(args, cwd=cwd, env=subprocess_env(), capture_output=True, text=True)
    if ok:
        assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr[-4000:]}"
    return done


def test_null_tables_through_the_readme_commands(tmp_path):
    """Regional tables in three tools' formats, cohorts named on the command line: chance everywhere."""
    root = tmp_path / "study"
    own = cohorts()
    write_cohorts(root, own, signal=0.0, seed=7, images=False)
    hospital_a, hospital_b, placebo = own
    write_cat12_roi_csv(root / "hospitalA" / "ROI_catROI_aal_Vgm.csv", hospital_a)  # TIV: participants.tsv
    write_asegstats2table(root / "hospitalB" / "asegstats.tsv", hospital_b)  # TIV: eTIV column
    write_aseg_stats(root / "placebo" / "freesurfer", placebo)  # TIV: eTIV of each aseg.stats
    data = [
        "data=bids",
        f"data.root={root}",
        "data.source=table",
        "data.cohorts=[{name:hospitalA,role:discovery,treatment:ketamine,table:ROI_catROI_aal_Vgm.csv,"
        "table_format:cat12_roi},{name:hospitalB,role:external,table:asegstats.tsv,table_format:freesurfer_table},"
        "{name:placebo,role:control,treatment:saline,table:freesurfer,table_format:freesurfer_aseg}]",
        f"paths.data={tmp_path / 'derived'}",
        f"paths.output={tmp_path / 'outputs'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        "n_jobs=2",
    ]
    prepared = run(tmp_path, sys.executable, "-m", "src.data.prepare", *data)
    assert "hospitalA (discovery): 60 subjects" in prepared.stdout  # 2 without outcome excluded
    assert "placebo (control): 30 subjects (12 responders) valid" in prepared.stdout
    run(tmp_path, sys.executable, "-m", "src.features.build", "features=gm_roi", *data)
    tables = {
        c.name: pd.read_parquet(tmp_path / "derived" / "features" / "gm_roi" / f"{c.name}.parquet")
        for c in own
    }
    for cohort in own:  # every reader gives the generator's volumes (ml) and TIV
        table = tables[cohort.name].set_index("participant_id")
        truth = cohort.volumes.loc[table.index]
        pd.testing.assert_frame_equal(
            table[truth.columns], truth, check_exact=False, rtol=1e-5, check_names=False
        )
        pd.testing.assert_series_equal(
            table["tiv"], cohort.tiv.loc[table.index], rtol=1e-5, check_names=False
        )
    run(
        tmp_path,
        sys.executable,
        "-m",
        "src.train",
        "+experiment=gm_only",
        *TINY_CV,
        "permutation.n=19",
        *data,
    )
    run(
        tmp_path,
        sys.executable,
        "-m",
        "src.evaluate",
        "+experiment=gm_only",
        "evaluation.n_permutations=2000",
        "evaluation.n_bootstrap=200",
        "evaluation.weight_permutations=200",
        *data,
    )
    report = run(tmp_path, sys.executable, "-m", "src.report", "report.experiments=[gm_only]", *data)
    assert "gm_only" in report.stdout
    train = json.loads((tmp_path / "outputs" / "gm_only" / "train" / "metrics.json").read_text())
    assert train["cohort"] == "hospitalA" and train["n"] == 60
    assert abs(train["ensemble"]["bac"] - 0.5) < 0.15 and train["permutation"]["p_value"] > 0.05
    evaluation = json.loads((tmp_path / "outputs" / "gm_only" / "evaluate" / "metrics.json").read_text())
    assert set(evaluation["cohorts"]) == {"discovery", "external", "control"}
    for name in ("external", "control"):
        assert abs(evaluation["cohorts"][name]["bac"] - 0.5) < 0.2, name
        assert evaluation["cohorts"][name]["p_bac"] > 0.05, name
    # a user's table has no atlas image: no brain map, a note, every other result kept
    assert "no bundled atlas" in evaluation["maps_note"]
    maps = tmp_path / "outputs" / "gm_only" / "evaluate" / "maps"
    assert [p.name for p in maps.iterdir()] == ["README.txt"]
    regions = pd.read_csv(tmp_path / "outputs" / "gm_only" / "evaluate" / "regions.csv")
    assert len(regions) == hospital_a.volumes.shape[1] and regions["atlas"].eq("table:cat12_roi").all()
    # data=bids is not params.yaml's data: the report (report.dir at its default) lives apart
    html = (tmp_path / "reports" / "bids" / "report.html").read_text()
    assert "Experiment <code>gm_only</code>" in html
    # the continuous analysis of the same null tables: the percentage reduction is not predicted (R² <= ~0,
    # r near 0, the permutation test of the whole procedure not significant), in discovery and external
    experiment = ["+experiment=gm_only_change", *TINY_CV, *data]
    run(tmp_path, sys.executable, "-m", "src.train", *experiment, "permutation.n=19")
    run(
        tmp_path,
        sys.executable,
        "-m",
        "src.evaluate",
        *experiment,
        "evaluation.n_permutations=999",
        "evaluation.n_bootstrap=99",
        "evaluation.weight_permutations=0",
    )
    change = json.loads((tmp_path / "outputs" / "gm_only_change" / "train" / "metrics.json").read_text())
    assert change["n"] == 60 and change["outcome"]["target"] == "percent_reduction"
    assert change["ensemble"]["r2"] < 0.05 and abs(change["ensemble"]["pearson_r"]) < 0.3
    assert change["permutation"]["p_value"] > 0.05
    continuous = json.loads(
        (tmp_path / "outputs" / "gm_only_change" / "evaluate" / "metrics.json").read_text()
    )["continuous"]["cohorts"]
    for name in ("external", "control"):
        assert continuous[name]["r2"] < 0.1 and continuous[name]["p_pearson_r"] > 0.01, name
    both = run(
        tmp_path, sys.executable, "-m", "src.report", "report.experiments=[gm_only,gm_only_change]", *data
    )
    assert "gm_only_change" in both.stdout
    assert "<h3>Continuous outcome</h3>" in (tmp_path / "reports" / "bids" / "report.html").read_text()
    # new patients from a feature table: the predicted reduction and P(response) of the locked regressor
    features = tmp_path / "derived" / "features" / "gm_roi" / "hospitalB.parquet"
    patients = tmp_path / "patients.csv"
    pd.read_parquet(features).drop(columns=["response", "outcome", "treatment"]).head(3).to_csv(
        patients, index=False
    )
    scored = run(tmp_path, sys.executable, "-m", "src.predict", *experiment, f"input={patients}")
    assert scored.stdout.count("predicted outcome") == 3


MYSTUDY = """\
# a user's cohorts: CAT12 outputs of three hospitals
name: mystudy
root: ${paths.data}/bids
layout: cat12
pipeline: CAT12.8
space: MNI152NLin2009cSym
cohorts:
  - {name: hospitalA, role: discovery, treatment: ketamine}
  - {name: hospitalB, role: external, treatment: ketamine}
  - {name: placebo, role: control, treatment: saline}
source: images
table_format: plain
outcome: {baseline: madrs_baseline, followup: madrs_24h, threshold: 0.5, positive: responder}
on_grid_mismatch: error
clinical:
  sleep_hours: {kind: numeric, range: [2, 14]}
  smoker: {kind: categorical, codes: [never, former, current]}
  prior_ect: {kind: binary, codes: ["no", "yes"]}
"""
TINY_CV_FILE = "repeats: 2\nouter_folds: 3\ninner_folds: 3\nn_trials: 5\nsampler: tpe\nn_startup_trials: 3\n"


def _project_copy(repo: Path) -> None:
    project_copy(repo)  # what a user has after cloning (the tutorials' runner starts from the same)
    (repo / "conf" / "data" / "mystudy.yaml").write_text(MYSTUDY)
    (repo / "conf" / "cv" / "tiny.yaml").write_text(TINY_CV_FILE)
    # the lab lists a participants.tsv column of its own as a subgroup, and plans with fewer draws
    config = (repo / "conf" / "config.yaml").read_text()
    config = config.replace("subgroups: {columns: []", "subgroups: {columns: [smoker]")
    config = config.replace(
        "learning_curve: {fractions: [0.4, 0.6, 0.8, 1.0], draws: 5",
        "learning_curve: {fractions: [0.5, 1.0], draws: 2",
    )
    assert "columns: [smoker]" in config and "draws: 2" in config
    (repo / "conf" / "config.yaml").write_text(config)


def test_signal_images_through_dvc_repro(tmp_path):
    """CAT12 images of three hospitals through `dvc repro` with `data: mystudy`: the planted regions win;
    with the lab's clinical columns (one missing-value pattern, a categorical column), clinical_only,
    gm_only and gm_clinical_stack are trained, evaluated, compared and reported by the same `dvc repro`."""
    repo = tmp_path / "project"
    _project_copy(repo)
    own = cohorts()
    write_cohorts(repo / "data" / "bids", own, signal=2.5, seed=3)
    params = {
        "seed": 2026,
        "data": "mystudy",
        "cv": "tiny",
        "feature_sets": ["gm_roi", "gm_wm_roi", "clinical", "gm_roi_clinical"],
        "experiments": {
            "gm_only": {"features": "gm_roi", "model": "svc_linear", "permutations": 9},
            "clinical_only": {"features": "clinical", "model": "svc_linear", "permutations": 3},
            "gm_clinical_stack": {"features": "gm_roi_clinical", "model": "svc_linear", "permutations": 3},
        },
        "permutation": {"n": 9, "inline": True, "sharded": {"experiments": [], "shards": 2, "ids": [0, 1]}},
    }
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for args in (["git", "init", "-q"], ["dvc", "init", "-q"], ["dvc", "config", "core.analytics", "false"]):
        run(repo, *args)
    run(
        repo,
        "git",
        "-c",
        "user.email=t@example.org",
        "-c",
        "user.name=t",
        "commit",
        "-qm",
        "init",
        "--allow-empty",
    )
    # GM+WM features asked of a hospital without WM maps: one message before any work, naming what is missing
    refused = run(repo, "dvc", "repro", ok=False)
    assert refused.returncode != 0
    message = refused.stdout + refused.stderr
    assert (
        "params.yaml builds feature set 'gm_wm_roi', which needs WM maps; cohort 'hospitalB' has none"
        in message
    )
    assert not (repo / "data" / "features").exists()
    params["feature_sets"] = ["gm_roi", "clinical", "gm_roi_clinical"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    out = run(repo, "dvc", "repro").stdout
    stages = (
        "cohorts",
        "features@gm_roi",
        "train@gm_only",
        "evaluate@gm_only",
        "plan@gm_only",
        "compare",
        "report",
    )
    for stage in stages:
        assert f"Running stage '{stage}'" in out, out
    for name in ("clinical_only", "gm_clinical_stack"):
        assert f"Running stage 'evaluate@{name}'" in out, out
    validated = json.loads((repo / "data" / "cohorts" / "validated.json").read_text())
    assert {n: c["role"] for n, c in validated["cohorts"].items()} == {
        "hospitalA": "discovery",
        "hospitalB": "external",
        "placebo": "control",
    }
    for name, cohort in validated["cohorts"].items():  # every GM map was read and judged plausible
        assert len(cohort["plausibility"]["total_gm_ml"]) == cohort["n"], name
    # the feature tables are the generator's volumes; TIV from participants.tsv, CAT12 XML, GM + WM + CSF
    for cohort in own:
        table = pd.read_parquet(repo / "data" / "features" / "gm_roi" / f"{cohort.name}.parquet")
        table = table.set_index("participant_id")
        truth = cohort.volumes.loc[table.index].add_prefix("gm_")
        pd.testing.assert_frame_equal(
            table[truth.columns], truth, check_exact=False, rtol=1e-4, check_names=False
        )
        pd.testing.assert_series_equal(
            table["tiv"], cohort.tiv.loc[table.index], rtol=1e-4, check_names=False
        )
    evaluate = repo / "outputs" / "gm_only" / "evaluate"
    regions = pd.read_csv(evaluate / "regions.csv").set_index("region")
    # the six largest weights in SD units (weight x feature SD) are the planted regions, with the planted
    # signs, in every fold model
    by_size = regions.reindex(regions["standardised_weight"].abs().sort_values(ascending=False).index)
    top = by_size.head(len(SIGNATURE))
    assert set(top.index) == set(SIGNATURE), by_size.head(10)[["standardised_weight", "cvr"]]
    for name, sign in SIGNATURE.items():
        assert (top.loc[name, "mean_weight"] > 0) == (sign > 0), name
        assert top.loc[name, "sign_consistency"] == 1.0 and abs(top.loc[name, "cvr"]) > 2, name
    metrics = json.loads((evaluate / "metrics.json").read_text())
    train = json.loads((repo / "outputs" / "gm_only" / "train" / "metrics.json").read_text())
    assert train["ensemble"]["bac"] > 0.7
    assert metrics["cohorts"]["external"]["bac"] > 0.65 and metrics["cohorts"]["external"]["p_bac"] < 0.05
    assert abs(metrics["cohorts"]["control"]["bac"] - 0.5) < 0.2  # saline: the signature is ketamine's
    assert (evaluate / "maps" / "cvr_map.png").is_file()  # AAL regions painted back onto the atlas
    html = (repo / "reports" / "report.html").read_text()
    assert "Experiment <code>gm_only</code>" in html and "Does the scan add anything?" in html
    for section in ("Subgroups", "Learning curve and sample size", "Model card"):
        assert f"<h3>{section}</h3>" in html, section
    # the lab's own subgroup column: its levels (the 5 % left empty are in none), n per level from the table
    cells = pd.read_csv(evaluate / "subgroups" / "subgroups.csv")
    hospital_a = pd.read_csv(repo / "data" / "bids" / "hospitalA" / "participants.tsv", sep="\t")
    scored = pd.read_csv(repo / "outputs" / "gm_only" / "train" / "predictions.csv")[
        "participant_id"
    ].unique()
    smoker = hospital_a.set_index("participant_id").loc[scored, "smoker"]
    discovery = cells.query("group == 'discovery' and grouping == 'smoker'").set_index("level")["n"]
    assert discovery.to_dict() == smoker.value_counts().to_dict()
    assert set(cells.query("grouping == 'site'")["level"]) == {"north", "south", "east", "oslo", "leiden"}
    tests = pd.read_csv(evaluate / "subgroups" / "heterogeneity.csv")
    assert {"sex", "site", "age_band", "severity", "smoker"} <= set(tests["grouping"])
    card = (evaluate / "model_card.md").read_text()
    assert "sites: east (" in card and "Sites leiden, oslo were not in training" in card
    assert f"model sha256: {metrics['provenance']['model_sha256']}" in card
    plan = json.loads((repo / "outputs" / "gm_only" / "plan" / "plan.json").read_text())
    assert [row["n"] for row in plan["learning_curve"]["summary"]] == [round(0.5 * train["n"]), train["n"]]
    assert plan["development"]["discovery_n"] == train["n"] and plan["development"]["n"] > train["n"]
    assert set(plan["external_validation"]) == {"discovery out-of-fold scores", "external cohorts' scores"}
    # the clinical columns as coded features: missing where the lab left them empty, one indicator per code
    clinical = pd.read_parquet(repo / "data" / "features" / "clinical" / "hospitalA.parquet")
    participants = pd.read_csv(repo / "data" / "bids" / "hospitalA" / "participants.tsv", sep="\t")
    participants = participants.set_index("participant_id").loc[clinical["participant_id"]]
    np.testing.assert_array_equal(clinical["clin_sleep_hours"].isna(), participants["sleep_hours"].isna())
    assert clinical.filter(like="clin_smoker=").columns.tolist() == [
        "clin_smoker=never",
        "clin_smoker=former",
        "clin_smoker=current",
    ]
    np.testing.assert_array_equal(
        clinical["clin_prior_ect"], (participants["prior_ect"] == "yes").astype(float)
    )
    # the planted clinical signal is found, with its sign, in the clinical-only and the stacked model
    for name in ("clinical_only", "gm_clinical_stack"):
        weights = pd.read_csv(repo / "outputs" / name / "evaluate" / "regions.csv").set_index("feature")
        assert weights.loc["clin_sleep_hours", "mean_weight"] > 0, name
    trained = json.loads((repo / "outputs" / "clinical_only" / "train" / "metrics.json").read_text())
    assert trained["ensemble"]["auc"] > 0.6
    # every pair compared on the same splits, the stack's meta-learner inside the folds
    document = json.loads(
        (repo / "comparisons" / "gm_only-clinical_only-gm_clinical_stack" / "comparison.json").read_text()
    )
    assert [(p["a"], p["b"]) for p in document["pairs"]] == [
        ("gm_only", "clinical_only"),
        ("gm_only", "gm_clinical_stack"),
        ("clinical_only", "gm_clinical_stack"),
    ]
    assert set(document["pairs"][0]["cohorts"]) == {"external", "control"}
