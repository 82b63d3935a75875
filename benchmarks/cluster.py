"""The permutation test on Dask (LocalCluster, 1 and 2 workers) against loky, and a projection to a cluster.

For each experiment: the real nested CV once (loky, not timed), then ``--n`` permutations (1 repeat each,
the experiment's CV and search settings, as ``src.train`` runs them) on

- loky with 1 worker: the per-permutation time t of a bare task (the reference),
- loky with 2 workers,
- a Dask LocalCluster of 1 worker and of 2 workers (single-threaded processes; the cluster's start-up is
  timed apart and not counted in the permutations).

Reported: wall time, speed-up and efficiency (speed-up / workers, against Dask with 1 worker), the overhead
of Dask against loky at equal workers, and a projection of the 1000-permutation wall time on 64 and 256
workers from the measured t and the Dask per-task overhead o (per worker: ceil(n / W) x (t + o)), plus the
cluster start-up. Every run's null distribution is checked identical to loky-1's.

Usage::

    python benchmarks/cluster.py --experiment gm_only --n 1000
    python benchmarks/cluster.py --experiment gm_voxel --n 100
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", default="gm_only")
    parser.add_argument("--n", type=int, default=1000, help="permutations")
    parser.add_argument("--reference-n", type=int, default=None, help="permutations of the loky-1 run")
    parser.add_argument("--features-dir", default=str(ROOT / "data" / "features"))
    parser.add_argument("--skip-loky-2", action="store_true", help="leave out the loky run with 2 workers")
    args = parser.parse_args()

    from sklearn.base import clone

    from src.config.settings import settings_from
    from src.models.search_space import SearchSpace
    from src.utils.parallel import ParallelSettings, parallel_backend
    from src.validation.estimator import NestedCVClassifier
    from src.validation.experiment import experiment_inputs
    from src.validation.nested_cv import CVConfig
    from src.validation.permutation import permutation_test

    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", [f"+experiment={args.experiment}", f"paths.features={args.features_dir}"])
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    covariates, categorical = list(model_cfg["covariates"]), list(model_cfg["categorical"])
    inputs = experiment_inputs(settings_from(cfg))
    X, y = inputs.X, inputs.y
    space = SearchSpace.from_config(model_cfg)
    cv = CVConfig.from_config(OmegaConf.to_container(cfg.cv, resolve=True))
    seed = int(cfg.seed)
    method = NestedCVClassifier(space, cv, covariates, categorical, random_state=seed, keep_models=False)
    observed = clone(method).set_params(n_jobs=2).fit(X, y)

    def permutations(n: int, n_jobs: int):
        start = time.perf_counter()
        result = permutation_test(
            observed.set_params(n_jobs=n_jobs), X, y, n, repeats=cfg.permutation.repeats
        )
        return time.perf_counter() - start, result.null

    reference_n = args.reference_n or args.n
    t_loky1, null_ref = permutations(reference_n, 1)
    per_task = t_loky1 / reference_n
    rows = [("loky", 1, t_loky1 * args.n / reference_n, None)]
    wall, nulls = {}, {}
    if not args.skip_loky_2:
        wall["loky", 2], nulls["loky", 2] = permutations(args.n, 2)
    startup = {}
    for workers in (1, 2):
        start = time.perf_counter()
        with parallel_backend(ParallelSettings(backend="dask", workers=workers), n_jobs=workers):
            startup[workers] = time.perf_counter() - start
            wall["dask", workers], nulls["dask", workers] = permutations(args.n, workers)
    common = min(reference_n, args.n)
    for key, null in nulls.items():
        assert np.array_equal(null[:common], null_ref[:common]), f"{key}: the null differs from loky-1's"
    rows += [("loky", 2, wall["loky", 2], None)] if ("loky", 2) in wall else []
    rows += [("dask", w, wall["dask", w], startup[w]) for w in (1, 2)]
    overhead = max(0.0, (wall["dask", 1] - per_task * args.n) / args.n)  # per task, Dask over a bare task

    print(
        f"{args.experiment}: {args.n} permutations ({X.shape[1]} columns, {len(y)} subjects), null identical"
    )
    print(f"  per-permutation time t (loky, 1 worker, {reference_n} permutations): {per_task:.3f} s")
    print("  backend  workers  wall (s)  speed-up vs dask-1  efficiency  cluster start-up (s)")
    for backend, workers, seconds, up in rows:
        speedup = wall["dask", 1] / seconds
        print(
            f"  {backend:7s}  {workers:7d}  {seconds:8.1f}  {speedup:18.2f}  {speedup / workers:10.2f}  "
            + ("-" if up is None else f"{up:.1f}")
        )
    if ("loky", 2) in wall:
        print(
            f"  Dask vs loky at 2 workers: {100 * (wall['dask', 2] / wall['loky', 2] - 1):+.1f} % wall time"
        )
    print(f"  Dask per-task overhead o = {overhead * 1000:.0f} ms (Dask-1 wall / n - t)")
    for workers in (64, 256):
        projected = math.ceil(1000 / workers) * (per_task + overhead) + startup[2]
        print(f"  projection, 1000 permutations on {workers} workers: {projected:.0f} s")


if __name__ == "__main__":
    from record import run_and_record

    run_and_record("cluster", main)
