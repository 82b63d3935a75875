"""Does the embedded default keep the paper's shape across simulation seeds?

For each simulation seed: simulate the default cohorts (3 mm), build ``gm_roi``, run the default nested CV
of ``gm_only`` (10 x 10 x 5, 30 trials) on the discovery cohort, lock the ensemble and score the external
(pooled) and control cohorts, as ``python -m src.evaluate`` does (decision > 0 -> responder). Prints one row
per seed (discovery OOF-ensemble BAC, external BAC, control BAC, the external drop) and their means.
Optionally several values of the external cohorts' ``signature_scale`` are compared on the same subjects
(the external cohorts' noise depends only on the seed and the cohort name).

Usage::

    python benchmarks/simulation_calibration.py --seeds 1 2 3 4 5
    python benchmarks/simulation_calibration.py --seeds 1 2 3 --external-scale 1.0 0.6
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _config() -> dict:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=gm_only"])
    return OmegaConf.to_container(cfg, resolve=True)


def _table(root: Path, name: str, cfg: dict):
    from src.data.loader import ImageLayout, load_cohort
    from src.features.extract import FeatureSet, build_feature_table

    cohort = load_cohort(
        root / name,
        name=name,
        tissues=("GM", "WM", "CSF"),
        images=ImageLayout(pipeline=cfg["data"]["pipeline"]),
    )
    table, _ = build_feature_table(cohort, FeatureSet.from_config(cfg["features"]), n_jobs=2)
    return table


def run_seed(seed: int, scales: list[float | None], cfg: dict, work: Path) -> list[dict]:
    import pandas as pd

    from src.config.settings import settings_from
    from src.data.cohorts import cohort_specs
    from src.data.simulate import simulate_cohorts
    from src.models.search_space import SearchSpace
    from src.validation.ensemble import EnsembleModel
    from src.validation.metrics import binary_metrics
    from src.validation.nested_cv import CVConfig, run_nested_cv

    data = cfg["data"]
    roles = {spec.name: spec.role for spec in cohort_specs(settings_from(cfg).data)}
    sim = copy.deepcopy(data["simulation"])
    sim["seed"] = seed
    base = work / f"seed{seed}"
    fixed = [n for n, role in roles.items() if role != "external"]
    simulate_cohorts(sim, base, pipeline=data["pipeline"], cohorts=fixed, n_jobs=2, progress=False)
    discovery = next(n for n, role in roles.items() if role == "discovery")
    train = _table(base, discovery, cfg)
    model_cfg = cfg["model"]
    covariates = list(model_cfg["covariates"])
    features = [c for c in train.columns if c.startswith("gm_")]
    result = run_nested_cv(
        train[[*covariates, *features]],
        train["response"].to_numpy(int),
        SearchSpace.from_config(model_cfg),
        CVConfig.from_config(cfg["cv"]),
        seed,
        covariates=covariates,
        categorical=list(model_cfg["categorical"]),
        n_jobs=2,
    )
    model = EnsembleModel.from_result(result)
    disc = result.ensemble_metrics()["bac"]
    control = pd.concat([_table(base, n, cfg) for n, role in roles.items() if role == "control"])
    ctl = binary_metrics(control["response"], model.decision_function(control))["bac"]
    rows = []
    for scale in scales:
        sim_ext = copy.deepcopy(sim)
        for name, role in roles.items():
            if role == "external" and scale is not None:
                sim_ext["cohorts"][name]["signature_scale"] = scale
        folder = work / f"seed{seed}_ext{scale}"
        externals = [n for n, role in roles.items() if role == "external"]
        simulate_cohorts(
            sim_ext, folder, pipeline=data["pipeline"], cohorts=externals, n_jobs=2, progress=False
        )
        ext_table = pd.concat([_table(folder, n, cfg) for n in externals])
        ext = binary_metrics(ext_table["response"], model.decision_function(ext_table))
        rows.append(
            {
                "seed": seed,
                "external_scale": "config" if scale is None else scale,
                "discovery_bac": 100 * disc,
                "external_bac": 100 * ext["bac"],
                "external_auc": ext["auc"],
                "control_bac": 100 * ctl,
                "drop": 100 * (disc - ext["bac"]),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3, 4, 5])
    parser.add_argument(
        "--external-scale",
        type=float,
        nargs="*",
        default=None,
        help="signature_scale of the external cohorts",
    )
    args = parser.parse_args()
    import pandas as pd

    from src.utils.logging import configure_logging

    configure_logging(False)
    cfg = _config()
    scales = args.external_scale or [None]
    rows = []
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            rows += run_seed(seed, scales, cfg, Path(tmp))
            print(pd.DataFrame(rows[-len(scales) :]).round(1).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    print("\nall seeds:")
    print(table.round(3).to_string(index=False))
    print("\nmean over seeds:")
    print(table.groupby("external_scale").mean(numeric_only=True).drop(columns="seed").round(1).to_string())
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    from record import run_and_record

    run_and_record("simulation_calibration", main)
