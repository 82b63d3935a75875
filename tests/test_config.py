"""Configuration: Hydra groups compose, params.yaml agrees with conf/, README and CI agree."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import ROOT, compose_config


def _hydra_default(group: str) -> str:
    defaults = yaml.safe_load((ROOT / "conf" / "config.yaml").read_text())["defaults"]
    return next(d[group] for d in defaults if isinstance(d, dict) and group in d)


def committed_params() -> dict:
    """The committed params.yaml (git's HEAD), not the working copy: `dvc exp run -S permutation.n=100`
    edits the working copy, as the README suggests, and must not make the suite fail."""
    shown = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=ROOT, capture_output=True, text=True)
    text = shown.stdout if shown.returncode == 0 else (ROOT / "params.yaml").read_text()
    return yaml.safe_load(text)


def test_params_yaml_agrees_with_hydra_defaults():
    """params.yaml as committed (what DVC runs) and conf/ (what a bare `python -m src.<stage>` runs) say the
    same."""
    params = committed_params()
    cfg = compose_config()
    assert params["seed"] == cfg["seed"]
    if "simulation" in cfg["data"]:
        assert cfg["data"]["simulation"]["seed"] == cfg["seed"]
    assert params["data"] == _hydra_default("data") == cfg["data"]["name"]
    assert params["cv"] == _hydra_default("cv")
    # `dvc repro` builds the feature sets its experiments use, no more (each a config of conf/features/)
    available = {p.stem for p in (ROOT / "conf" / "features").glob("*.yaml")}
    used = {spec["features"] for spec in params["experiments"].values()}
    assert set(params["feature_sets"]) == used and used <= available
    assert params["permutation"]["n"] == cfg["permutation"]["n"]
    # each experiment's own permutation count; the seed study's model keeps the paper's 1000
    assert all(int(spec["permutations"]) >= 1 for spec in params["experiments"].values())
    assert params["experiments"]["gm_only"]["permutations"] == cfg["permutation"]["n"]
    for name, spec in params["experiments"].items():
        composed = compose_config([f"+experiment={name}"])
        assert composed["name"] == name
        assert composed["features"]["name"] == spec["features"], name
        assert composed["model"]["name"] == spec["model"], name


def test_every_dvc_stage_passes_its_params_to_hydra():
    """Each parameter a stage uses reaches Hydra as an override, so params.yaml always wins at run time."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    expected = {
        "cohorts": ["data=${data}", "seed=${seed}"],
        "features": ["data=${data}", "features=${item}", "seed=${seed}"],
        "train": [
            "+experiment=${key}",
            "data=${data}",
            "cv=${cv}",
            "seed=${seed}",
            "permutation.n=${item.permutations}",
        ],
        "evaluate": ["+experiment=${key}", "data=${data}", "cv=${cv}", "seed=${seed}"],
        "plan": ["+experiment=${key}", "data=${data}"],
        "compare": ["data=${data}"],
        # the report reads the experiments where the pipeline's data put them (outputs/<data>/ otherwise)
        "report": ["data=${data}"],
    }
    for stage, overrides in expected.items():
        cmd = (stages[stage].get("do") or stages[stage])["cmd"]
        for override in overrides:
            assert override in cmd.split(), (stage, override)


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "features").glob("*.yaml")))
def test_every_feature_set_composes(name):
    cfg = compose_config([f"features={name}"])
    assert cfg["features"]["name"] == name
    assert cfg["features"]["kind"] in ("roi", "voxel", "table", "clinical")


def test_stable_keys_override():
    cfg = compose_config(["seed=7", "n_jobs=2", "paths.data=/x", "data=bids"])
    assert cfg["seed"] == 7 and cfg["n_jobs"] == 2 and cfg["data"]["root"] == "/x/bids"


def _readme_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    first_section = text.split("\n## ", 2)[1]
    return re.findall(r"```(?:bash|sh)\n(.*?)\n```", first_section, flags=re.S)


def test_readme_first_section_has_two_commands_and_ci_runs_the_second():
    commands = _readme_commands()
    assert len(commands) == 2 and all("\n" not in c for c in commands)
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert commands[1] in ci
    assert "dvc repro" in commands[0]


@pytest.mark.slow
def test_entry_points_on_a_tiny_simulation(tmp_path):
    """`python -m src.data.simulate` then `python -m src.features.build`, as a user runs them."""
    overrides = [
        f"paths.data={tmp_path}",
        "data.cohorts=[discovery,saline]",
        "data.simulation.resolution=8",
        "data.simulation.cohorts.discovery.n=6",
        "data.simulation.cohorts.discovery.responders=3",
        "data.simulation.cohorts.saline.n=4",
        "data.simulation.cohorts.saline.responders=1",
        "n_jobs=1",
        f"hydra.run.dir={tmp_path}/hydra",
    ]
    run = dict(cwd=ROOT, capture_output=True, text=True, check=True)
    subprocess.run([sys.executable, "-m", "src.data.simulate", *overrides], **run)
    assert (Path(tmp_path) / "cohorts" / "ground_truth.json").is_file()
    out = subprocess.run(
        [sys.executable, "-m", "src.features.build", "features=gm_wm_roi", *overrides], **run
    )
    assert "gm_wm_roi/discovery: 6 subjects (3 responders) x 240 features" in out.stdout
    table = pd.read_parquet(Path(tmp_path) / "features" / "gm_wm_roi" / "saline.parquet")
    assert len(table) == 4 and set(table["treatment"]) == {"saline"}


def test_no_pipeline_output_is_committed_to_git():
    """DVC refuses to write an output git already tracks (`dvc repro` on a fresh clone would fail)."""
    outs = ["data/cohorts", "data/features", "outputs", "reports"]
    listed = subprocess.run(["git", "ls-files", *outs], cwd=ROOT, capture_output=True, text=True)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    tracked = [f for f in listed.stdout.splitlines() if not f.endswith(("/metrics.json", "/summary.json"))]
    assert tracked == [], f"pipeline outputs committed to git: {tracked[:5]}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "feature_sets: gm_roi\n",
            "feature_sets='gm_roi' must be a list of feature set names, e.g. feature_sets: [gm_roi]",
        ),
        (
            "experiments: [gm_only]\n",
            "experiments must be a mapping of name -> {features: <set>, model: <model>}, not a list",
        ),
        (
            "experiments: {gm_only: gm_roi}\n",
            "experiments.gm_only='gm_roi' must be {features: <set>, model: <model>}",
        ),
        ("- a\n- b\n", "a mapping of settings is needed, not a list"),
        ("seed: [\n", "cannot be read as YAML"),
    ],
)
def test_params_of_the_wrong_shape_are_one_error(tmp_path, text, expected):
    """params.yaml with a string for a list, a list for a mapping: one error naming the file and key, from
    every reader (prepare's feature plan, the report's experiments)."""
    from src.config.settings import FeaturesSettings
    from src.data.validation import pipeline_feature_sets
    from src.utils.errors import UserInputError

    params = tmp_path / "params.yaml"
    params.write_text(text)
    with pytest.raises(UserInputError) as error:
        pipeline_feature_sets(params, FeaturesSettings(name="gm_roi"))
    assert str(error.value).startswith(str(params)) and expected in str(error.value)


def test_the_typed_settings_are_registered_with_hydra(tmp_path):
    """The dataclasses are Hydra structured configs: a config composed on the registered ``schema`` gets its
    types from them (``cv.repeats=abc`` is refused by Hydra itself; without the schema it would pass)."""
    from hydra import compose, initialize_config_dir
    from hydra.errors import ConfigCompositionException

    from src.config.settings import ExperimentConfig, register

    register()
    (tmp_path / "typed.yaml").write_text("defaults:\n  - schema\n  - _self_\ncv:\n  repeats: 3\n")
    (tmp_path / "untyped.yaml").write_text("cv:\n  repeats: 3\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        cfg = compose(config_name="typed")
        assert cfg.cv.repeats == 3 and cfg.cv.inner_folds == ExperimentConfig().cv.inner_folds
        assert cfg.data.outcome.threshold == 0.5  # every group's defaults come with it
        with pytest.raises(ConfigCompositionException, match="cv.repeats"):
            compose(config_name="typed", overrides=["cv.repeats=abc"])
        assert compose(config_name="untyped", overrides=["cv.repeats=abc"]).cv.repeats == "abc"
