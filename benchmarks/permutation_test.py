"""Wall time of the default permutation test: ``python -m src.train`` with the experiment's defaults
(10 x 10 x 5 nested CV, 30 trials, ``permutation.n`` permutations of 1 repeat each), tracking off.

The nested CV and the permutation test are timed apart from the progress of the checkpoint files (the
run's own summary says how many permutations ran). Checkpoints are removed first, so nothing is resumed.

Usage::

    python benchmarks/permutation_test.py --experiment gm_only --n 1000 --jobs 2
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", default="gm_only")
    parser.add_argument("--n", type=int, default=1000, help="permutations")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--features-dir", default=str(ROOT / "data" / "features"))
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench-permutation-"))
    command = [
        sys.executable,
        "-m",
        "src.train",
        f"+experiment={args.experiment}",
        f"paths.features={args.features_dir}",
        f"paths.output={out}",
        f"hydra.run.dir={out / 'hydra'}",
        f"permutation.n={args.n}",
        f"n_jobs={args.jobs}",
        "tracking.enabled=false",
    ]
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    folds_done = None
    checkpoints = out / args.experiment / ".checkpoints"
    while process.poll() is None:
        if folds_done is None and list(checkpoints.glob("permutations-*.jsonl")):
            folds_done = time.perf_counter() - start  # the nested CV has finished: permutations started
        time.sleep(0.2)
    stdout, stderr = process.communicate()
    total = time.perf_counter() - start
    if process.returncode:
        sys.exit(stderr)
    print(stdout.strip())
    nested = folds_done or float("nan")
    print(
        f"\n{args.experiment}: total {total:.0f} s = nested CV (+ start-up) {nested:.0f} s + "
        f"{args.n} permutations {total - nested:.0f} s ({(total - nested) / args.n:.2f} s each) "
        f"with n_jobs={args.jobs}"
    )
    shutil.rmtree(out)


if __name__ == "__main__":
    from record import run_and_record

    # one recorded section per experiment (gm_only's keeps its former name)
    experiment = sys.argv[sys.argv.index("--experiment") + 1] if "--experiment" in sys.argv else "gm_only"
    run_and_record("permutation_test" + ("" if experiment == "gm_only" else f"_{experiment}"), main)
