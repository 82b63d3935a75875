"""Fixtures: real NIfTI cohorts made on the fly (tiny hand-made ones and small simulated ones)."""

from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from src.data.contract import image_relpath
from src.data.simulate import simulate_cohorts

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for entry points run as subprocesses from any directory: the project importable, no
    tracking server inherited from the developer's shell."""
    # neither URI MLflow exports (a store this test process connected to must not reach the subprocess)
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return {**env, **extra}


def data_settings(**data: Any) -> Any:
    """:class:`~src.config.settings.DataSettings` of a data config given as keywords (the rest defaults)."""
    from src.config.settings import settings_from

    return settings_from({"data": data}).data


def compose_config(overrides: list[str] | None = None) -> dict[str, Any]:
    """The project's real Hydra config, resolved, as a plain dict."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides or [])
    return OmegaConf.to_container(cfg, resolve=True)


def train_tiny(work: Path, table: pd.DataFrame, *overrides: str) -> tuple[dict[str, Any], Any, Path]:
    """gm_only trained through the library (1 x 3 x 3 folds, 2 trials, no permutations) on ``table`` written
    as the discovery feature table under ``work``: (resolved config, outcome, its train folder)."""
    import yaml

    from src.config.settings import settings_from
    from src.validation.experiment import experiment_inputs, run_training, write_training_outputs

    features = work / "features" / "gm_roi"
    features.mkdir(parents=True)
    table.to_parquet(features / "discovery.parquet", index=False)
    config = compose_config(
        [
            "+experiment=gm_only",
            f"paths.features={work / 'features'}",
            f"paths.output={work / 'out'}",
            "cv.repeats=1",
            "cv.outer_folds=3",
            "cv.inner_folds=3",
            "cv.n_trials=2",
            "permutation.n=0",
            "n_jobs=1",
            *overrides,
        ]
    )
    settings = settings_from(config)
    outcome = run_training(settings, experiment_inputs(settings), progress=False)
    train_dir = work / "out" / "gm_only" / "train"
    write_training_outputs(train_dir, outcome, yaml.safe_dump(config))
    return config, outcome, train_dir


@pytest.fixture(scope="session")
def default_config() -> dict[str, Any]:
    return compose_config()


def small_simulation(
    default: dict[str, Any], sizes: dict[str, tuple[int, int]], resolution: float = 6.0, seed: int = 11
) -> dict[str, Any]:
    """The default simulation config with other cohort sizes (n, responders) and resolution."""
    sim = copy.deepcopy(default["data"]["simulation"])
    sim["seed"], sim["resolution"] = seed, resolution
    sim["cohorts"] = {
        name: {**sim["cohorts"][name], "n": n, "responders": r} for name, (n, r) in sizes.items()
    }
    return sim


@pytest.fixture(scope="session")
def tiny_simulated(tmp_path_factory, default_config) -> Path:
    """Four small simulated cohorts at 6 mm (written once per test session)."""
    root = tmp_path_factory.mktemp("sim") / "cohorts"
    sim = small_simulation(
        default_config, {"discovery": (12, 6), "external_a": (5, 3), "external_b": (5, 2), "saline": (6, 2)}
    )
    simulate_cohorts(sim, root, n_jobs=1, progress=False)
    return root


SHAPE = (6, 7, 5)
AFFINE = np.diag([4.0, 4.0, 4.0, 1.0])
AFFINE[:3, 3] = [-10.0, -12.0, -8.0]


def write_image(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), path)
    return path


def make_cohort(
    root: Path,
    n: int = 4,
    tissues: tuple[str, ...] = ("GM", "WM", "CSF"),
    pipeline: str = "cat12",
    rows: list[dict[str, Any]] | None = None,
) -> Path:
    """A minimal valid cohort folder with real (tiny) NIfTI maps: 4 subjects, 2 responders."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text('{"Name": "test", "BIDSVersion": "1.9.0"}\n')
    if rows is None:
        rows = [
            {
                "participant_id": f"sub-t{i:02d}",
                "age": 30 + i,
                "sex": "FM"[i % 2],
                "site": "s1",
                "treatment": "ketamine",
                "madrs_baseline": 30,
                "madrs_24h": 10 if i % 2 == 0 else 25,
            }
            for i in range(n)
        ]
    pd.DataFrame(rows).to_csv(root / "participants.tsv", sep="\t", index=False)
    rng = np.random.default_rng(0)
    for row in rows:
        for tissue in tissues:
            write_image(root / image_relpath(row["participant_id"], tissue, pipeline), rng.random(SHAPE))
    return root


def rewrite_participants(root: Path, edit) -> None:
    """Apply ``edit(DataFrame) -> DataFrame`` to a cohort's participants.tsv (all values as text)."""
    path = root / "participants.tsv"
    df = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    edit(df).to_csv(path, sep="\t", index=False)
