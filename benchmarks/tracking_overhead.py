"""Wall time that MLflow tracking adds to `python -m src.train` (the default nested CV: 10 x 10 x 5,
30 trials, so 100 child runs with 30-step trial histories, the model registered, figures and tables logged).

The entry point runs in fresh processes, alternately with ``tracking.enabled=false`` and with tracking into a
store under a temporary directory: the first tracked run creates the SQLite store (schema migrations), the
later ones log into the existing store. Also reported: the time spent inside the tracking layer, from its
own log line. The denominator is the nested CV without its permutation test (``permutation.n=0``), the
strictest case; the 1000 permutations of the default run only add untracked compute.

Usage::

    python benchmarks/tracking_overhead.py --features data/features --rounds 2
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_train(
    features: Path, out: Path, tracking: list[str], n_jobs: int, experiment: str
) -> tuple[float, float]:
    """(wall seconds of the process, seconds inside the tracking layer or 0)."""
    command = [
        sys.executable,
        "-m",
        "src.train",
        f"+experiment={experiment}",
        f"paths.features={features}",
        f"paths.output={out}",
        "permutation.n=0",
        f"n_jobs={n_jobs}",
        "verbose=true",
        f"hydra.run.dir={out}/hydra",
        *tracking,
    ]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(done.stderr)
    # Hydra's console log handler writes to stdout
    logged = re.search(r"MLflow: logged run \w+ in ([\d.]+) s", done.stdout + done.stderr)
    return wall, float(logged.group(1)) if logged else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--features", type=Path, default=ROOT / "data" / "features")
    parser.add_argument("--experiment", default="gm_only")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()
    features = args.features.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp) / "mlruns"
        off, on, inside = [], [], []
        for round_ in range(args.rounds):
            wall, _ = run_train(
                features, Path(tmp) / "off", ["tracking.enabled=false"], args.n_jobs, args.experiment
            )
            off.append(wall)
            wall, logged = run_train(
                features, Path(tmp) / "on", [f"tracking.root={store}"], args.n_jobs, args.experiment
            )
            on.append(wall)
            inside.append(logged)
            print(
                f"round {round_ + 1}: tracking off {off[-1]:.1f} s, on {on[-1]:.1f} s "
                f"({'new' if round_ == 0 else 'existing'} store; {logged:.1f} s inside the tracking layer)",
                flush=True,
            )
    base = statistics.median(off)
    print(f"\n{args.experiment}, permutation.n=0, n_jobs={args.n_jobs}, {args.rounds} rounds")
    print(f"  median wall, tracking off : {base:.1f} s")
    print(f"  first tracked run (new store)      : {on[0]:.1f} s  (+{100 * (on[0] / base - 1):.1f} %)")
    if len(on) > 1:
        warm = statistics.median(on[1:])
        print(f"  median tracked run (existing store): {warm:.1f} s  (+{100 * (warm / base - 1):.1f} %)")
    print(f"  time inside the tracking layer     : {', '.join(f'{t:.1f}' for t in inside)} s")


if __name__ == "__main__":
    from record import run_and_record

    run_and_record("tracking_overhead", main)
