"""Wall time and peak memory of the simulation and of each feature set on the default config.

Usage: ``python benchmarks/simulate_and_features.py [--n-jobs 2] [--out /tmp/bench]``. Prints one row per
step. The target (issue 2): all 199 simulated subjects at 3 mm in <= 60 s on a 2-core machine.
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(args: list[str]) -> tuple[float, float]:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", *args], cwd=ROOT, check=True, capture_output=True)
    elapsed = time.perf_counter() - start
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return elapsed, peak_mb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-jobs", type=int, default=2)
    parser.add_argument("--out", default="/tmp/bench_simulate")
    parser.add_argument("--resolution", type=float, default=3.0)
    args = parser.parse_args()
    common = [
        f"paths.data={args.out}",
        f"n_jobs={args.n_jobs}",
        f"data.simulation.resolution={args.resolution}",
        f"hydra.run.dir={args.out}/hydra",
    ]
    print(f"{'step':<28}{'wall s':>8}{'peak RSS MB (max so far)':>28}")
    t, m = run(["src.data.simulate", *common])
    print(f"{'simulate 199 subjects':<28}{t:>8.1f}{m:>28.0f}")
    for name in ("gm_roi", "gm_wm_roi", "gm_roi_nmm", "gm_voxel"):
        t, m = run(["src.features.build", f"features={name}", *common])
        print(f"{'features ' + name:<28}{t:>8.1f}{m:>28.0f}")


if __name__ == "__main__":
    from record import run_and_record

    run_and_record("simulate_and_features", main)
