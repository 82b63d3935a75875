"""The DVC pipeline end to end, with real DVC in a temporary git repository and a tiny configuration."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, subprocess_env

pytestmark = pytest.mark.slow

TINY_DATA = """\
# tiny simulated cohorts for the pipeline test
defaults:
  - simulated
  - _self_
name: tiny
simulation:
  resolution: 6.0
  cohorts:
    discovery: {n: 24, responders: 12}
    external_a: {n: 8, responders: 4}
    external_b: {n: 8, responders: 4}
    saline: {n: 10, responders: 4}
"""
TINY_CV = """\
repeats: 2
outer_folds: 3
inner_folds: 3
n_trials: 3
sampler: tpe
n_startup_trials: 2
"""
PARAMS = {
    "seed": 2026,
    "data": "tiny",
    "cv": "tiny",
    "feature_sets": ["gm_roi"],
    "experiments": {
        "gm_only": {"features": "gm_roi", "model": "svc_linear", "permutations": 3},
        "gm_rbf": {"features": "gm_roi", "model": "svc_rbf", "permutations": 3},
    },
    "permutation": {"n": 3, "inline": True, "sharded": {"experiments": [], "shards": 2, "ids": [0, 1]}},
}


def run(repo: Path, *args: str) -> str:
    done = subprocess.run(args, cwd=repo, env=subprocess_env(), capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def ran_stages(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A copy of the project (code, conf, dvc.yaml) in a fresh git + DVC repository, with tiny params."""
    repo = tmp_path_factory.mktemp("dvc") / "project"
    repo.mkdir()
    for folder in ("src", "conf", "cluster"):
        shutil.copytree(ROOT / folder, repo / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, repo / name)
    (repo / "data" / "bids").mkdir(parents=True)
    shutil.copy(ROOT / "data" / "bids" / "README.md", repo / "data" / "bids" / "README.md")
    (repo / "mlruns").mkdir()
    shutil.copy(ROOT / "mlruns" / ".gitignore", repo / "mlruns" / ".gitignore")
    (repo / "conf" / "data" / "tiny.yaml").write_text(TINY_DATA)
    (repo / "conf" / "cv" / "tiny.yaml").write_text(TINY_CV)
    (repo / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False))
    config = (repo / "conf" / "config.yaml").read_text()  # a short learning curve for the tiny cohorts
    config = config.replace("fractions: [0.4, 0.6, 0.8, 1.0], draws: 5", "fractions: [0.6, 1.0], draws: 2")
    assert "draws: 2" in config
    (repo / "conf" / "config.yaml").write_text(config)
    run(repo, "git", "init", "-q")
    run(repo, "git", "config", "user.email", "test@example.org")
    run(repo, "git", "config", "user.name", "test")
    run(repo, "dvc", "init", "-q")
    shutil.copy(ROOT / ".dvcignore", repo / ".dvcignore")  # byte-code caches are not dependencies
    run(repo, "dvc", "config", "core.analytics", "false")
    shutil.copy(ROOT / ".dvc" / "plots_offline.html", repo / ".dvc" / "plots_offline.html")
    run(repo, "dvc", "config", "plots.html_template", "plots_offline.html")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "tiny pipeline")
    return repo


@pytest.fixture(scope="module")
def first_repro(repo) -> str:
    return run(repo, "dvc", "repro")


def test_repro_runs_every_stage_and_writes_outputs(repo, first_repro):
    assert ran_stages(first_repro) == {
        "cohorts",
        "features@gm_roi",
        "train@gm_only",
        "train@gm_rbf",
        "evaluate@gm_only",
        "evaluate@gm_rbf",
        "plan@gm_only",
        "plan@gm_rbf",
        "compare",
        "report",
    }
    for experiment in PARAMS["experiments"]:
        run_dir = repo / "outputs" / experiment
        assert (run_dir / "evaluate" / "model_card.md").is_file()
        assert (run_dir / "evaluate" / "subgroups" / "subgroups.csv").is_file()
        assert json.loads((run_dir / "plan" / "plan.json").read_text())["learning_curve"]["fractions"] == [
            0.6,
            1.0,
        ]
        # linear ensembles as arrays + JSON, others as skops
        saved = {"gm_only": "model.npz", "gm_rbf": "model.skops"}[experiment]
        assert sorted(
            p.name for p in (repo / "outputs" / experiment / "train" / "model").iterdir()
        ) == sorted(["columns.json", "config.yaml", saved])
        assert (repo / "outputs" / experiment / "evaluate" / "paper_table.md").is_file()
        for kind in ("roc", "calibration", "decision_curve"):
            assert sorted(
                p.name for p in (repo / "outputs" / experiment / "evaluate" / "plots" / kind).iterdir()
            ) == ["control.csv", "discovery.csv", "external.csv"]
    assert (repo / "outputs" / "gm_only" / "evaluate" / "maps" / "cvr_map.png").is_file()  # linear: a map
    rbf_maps = repo / "outputs" / "gm_rbf" / "evaluate" / "maps"
    assert [p.name for p in rbf_maps.iterdir()] == ["README.txt"]  # RBF: no map, a note saying why
    assert "not linear" in (rbf_maps / "README.txt").read_text()
    report = (repo / "reports" / "report.html").read_text()
    for experiment in PARAMS["experiments"]:
        assert f"Experiment <code>{experiment}</code>" in report
    assert "paper BAC" in report and "TRIPOD+AI" in report and "12c Model type and tuning" in report
    for section in ("Subgroups", "Learning curve and sample size", "Model card"):
        assert f"<h3>{section}</h3>" in report, section
    assert 'src="http' not in report and "<script" not in report  # self-contained
    assert "## Experiment `gm_rbf`" in (repo / "reports" / "report.md").read_text()
    assert "Does the scan add anything?" in report  # the compare stage's pair, as the report shows it
    assert (repo / "comparisons" / "gm_only-gm_rbf" / "comparison.json").is_file()
    assert (repo / "mlruns" / "mlflow.db").is_file()


def test_second_repro_is_a_no_op(repo, first_repro):
    output = run(repo, "dvc", "repro")
    assert ran_stages(output) == set() and "Data and pipelines are up to date" in output


def test_metrics_show_lists_every_experiment(repo, first_repro):
    shown = json.loads(run(repo, "dvc", "metrics", "show", "--json"))
    metrics = {}
    for workspace in shown.values():
        for path, content in workspace["data"].items():
            metrics[path] = content["data"]
    for experiment in PARAMS["experiments"]:
        train = metrics[f"outputs/{experiment}/train/summary.json"]
        assert {"discovery_bac", "discovery_auc", "permutation_p"} <= set(train)
        evaluation = metrics[f"outputs/{experiment}/evaluate/summary.json"]
        assert {"external_bac", "external_auc", "control_bac", "specificity_p"} <= set(evaluation)
    # metrics and the data's name only, a screen wide: no other provenance, no nested per-cohort documents
    assert {m.pop("data") for m in metrics.values()} == {PARAMS["data"]}
    assert all(isinstance(v, float) for m in metrics.values() for v in m.values()), metrics
    assert sum(len(m) for m in metrics.values()) <= 15 * len(PARAMS["experiments"])


def test_changing_one_experiment_reruns_only_its_stages(repo, first_repro):
    path = repo / "conf" / "experiment" / "gm_rbf.yaml"
    path.write_text(path.read_text() + "# changed\n")
    try:
        status = run(repo, "dvc", "status")
        assert "train@gm_rbf" in status and "train@gm_only" not in status
        assert ran_stages(run(repo, "dvc", "repro")) == {
            "train@gm_rbf",
            "evaluate@gm_rbf",
            "plan@gm_rbf",
            "compare",
            "report",
        }
    finally:
        path.write_text(path.read_text().replace("# changed\n", ""))
        # the change was a comment: the outputs stand for the restored file too; record that instead of
        # rerunning (DVC's run cache does not restore these stages: their uncached metrics are not saved)
        run(
            repo, "dvc", "commit", "-f", "train@gm_rbf", "evaluate@gm_rbf", "plan@gm_rbf", "compare", "report"
        )


def test_plots_render_offline(repo, first_repro):
    """`dvc plots show` writes one page with the ROC/calibration/decision plots and no network resources."""
    run(repo, "dvc", "plots", "show", "-o", "plots_html")
    page = (repo / "plots_html" / "index.html").read_text()
    assert "cdn.jsdelivr" not in page and "<script src=" not in page
    for experiment in PARAMS["experiments"]:
        for kind in ("roc", "calibration", "decision_curve"):
            assert f"outputs/{experiment}/evaluate/plots/{kind}/external.csv" in page


def test_sharded_permutations_as_dvc_stages_merge_to_the_inline_test(repo, first_repro):
    """With an experiment listed in permutation.sharded, `dvc repro` adds one stage per shard and a merge
    (cluster/dvc.yaml); the merged test equals the one the train stage ran inline (the same 3 permutations),
    and a second repro runs nothing."""
    import pandas as pd

    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["permutation"]["sharded"]["experiments"] = ["gm_only"]
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    output = run(repo, "dvc", "repro")
    assert {stage.split(":")[-1] for stage in ran_stages(output)} == {
        "permute@gm_only-0",
        "permute@gm_only-1",
        "merge@gm_only",
        "compare",  # it reads the experiments' outputs
        "report",  # it reads the merged test
    }
    run_dir = repo / "outputs" / "gm_only"
    merged = json.loads((run_dir / "permutation" / "metrics.json").read_text())
    inline = json.loads((run_dir / "train" / "metrics.json").read_text())["permutation"]
    assert (merged["p_value"], merged["observed"], merged["n"]) == (inline["p_value"], inline["observed"], 3)
    assert (
        pd.read_csv(run_dir / "permutation" / "permutation_null.csv")["mean_bac"].tolist()
        == pd.read_csv(run_dir / "train" / "permutation_null.csv")["mean_bac"].tolist()
    )
    assert ran_stages(run(repo, "dvc", "repro")) == set()
