"""Wall time of README command (a)'s `dvc repro`, per stage, on a clean clone of this repository's HEAD.

Clones HEAD into a temporary folder (nothing of this working tree's data, outputs or MLflow store is used),
runs ``dvc repro`` there with this Python environment (the project installed), and times each stage from
the moment DVC announces it. Prints one row per stage, the total, the permutation rate line of the training
(what a user sees) and the second ``dvc repro`` (a no-op). ``--load`` reports the machine's load average
before and after, so times measured on a busy machine are read as such.

Usage::

    python benchmarks/dvc_repro.py [--keep DIR] [-S permutation.n=100]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def timed_repro(repo: Path, extra: list[str]) -> tuple[float, list[tuple[str, float]], list[str]]:
    """(total seconds, [(stage, seconds)], the permutation status lines) of one ``dvc repro``."""
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    command = ["dvc", "exp", "run", *extra] if extra else ["dvc", "repro"]
    started = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    stages: list[tuple[str, float]] = []
    rates: list[str] = []
    assert process.stdout is not None
    for line in process.stdout:
        now = time.perf_counter() - started
        match = re.match(r"Running stage '([^']+)'", line)
        if match:
            stages.append((match[1], now))
        elif line.startswith("permutations: "):
            rates.append(line.strip())
    if process.wait() != 0:
        raise SystemExit(f"{' '.join(command)} failed in {repo}")
    total = time.perf_counter() - started
    ends = [start for _, start in stages[1:]] + ([total] if stages else [])  # a no-op runs no stage
    return total, [(name, end - start) for (name, start), end in zip(stages, ends, strict=True)], rates


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--keep", type=Path, help="clone here and keep it (default: a temporary folder)")
    parser.add_argument("-S", dest="set", action="append", default=[], help="a parameter, as dvc exp run -S")
    args = parser.parse_args()
    folder = args.keep or Path(tempfile.mkdtemp(prefix="dvc-repro-"))
    if folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"{folder} is not empty")
    subprocess.run(["git", "clone", "-q", str(ROOT), str(folder)], check=True)
    load_before = os.getloadavg()[0]
    try:
        extra = [part for value in args.set for part in ("-S", value)]
        total, stages, rates = timed_repro(folder, extra)
        again, _, _ = timed_repro(folder, [])
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)
    print(f"{'stage':<28}{'seconds':>10}")
    for name, seconds in stages:
        print(f"{name:<28}{seconds:>10.0f}")
    print(f"{'total':<28}{total:>10.0f}")
    print(f"second dvc repro (no-op): {again:.0f} s")
    if rates:
        print(f"rate seen by the user: {rates[0]}")
    print(f"load average (1 min) before: {load_before:.2f}, after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    from record import run_and_record

    run_and_record("dvc_repro", main)
