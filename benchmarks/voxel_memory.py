"""Wall time and peak memory of one voxel training run, summed over the whole process tree.

``resource.getrusage`` gives the peak of one process (or the largest child), not of the main process and its
workers together; this script samples the resident set of every process in the tree of
``python -m src.train +experiment=<name> permutation.n=0 tracking.enabled=false n_jobs=<jobs>`` every 0.1 s
(psutil) and prints the peak of the sum, of the main process and of the largest worker.

    python benchmarks/voxel_memory.py --experiment gm_voxel_2mm --jobs 2

The feature tables must exist (``python -m src.features.build features=<the experiment's feature set>``).
Samples can miss a peak shorter than 0.1 s; the figures are a lower bound of that order.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from record import ROOT, run_and_record


def _tree_rss(root: psutil.Process) -> tuple[int, int, int]:
    """(sum over the tree, the root's, the largest child's) resident set in bytes."""
    try:
        main = root.memory_info().rss
        children = root.children(recursive=True)
    except psutil.NoSuchProcess:
        return 0, 0, 0
    sizes = []
    for child in children:
        try:
            sizes.append(child.memory_info().rss)
        except psutil.NoSuchProcess:
            continue
    return main + sum(sizes), main, max(sizes, default=0)


def measure(command: list[str], interval: float = 0.1) -> dict[str, float]:
    """Run ``command`` (in the project folder) and sample its process tree until it ends."""
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:  # a file, not a pipe: progress output never blocks the run
        process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=log, text=True)
        root = psutil.Process(process.pid)
        peaks = [0, 0, 0]  # all processes, main, largest worker
        while process.poll() is None:
            peaks = [max(a, b) for a, b in zip(peaks, _tree_rss(root), strict=True)]
            time.sleep(interval)
        wall = time.perf_counter() - start
        if process.returncode != 0:
            log.seek(0)
            sys.exit(f"{' '.join(command)} failed (rc {process.returncode}):\n{log.read()[-2000:]}")
    mb = 1024**2
    return {"wall": wall, "total": peaks[0] / mb, "main": peaks[1] / mb, "worker": peaks[2] / mb}


def main() -> None:
    """Parse the arguments, run the training once, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="gm_voxel_2mm")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=None, help="cv.repeats (default: the experiment's)")
    args = parser.parse_args()
    out = Path(tempfile.mkdtemp(prefix="bench-voxel-memory-"))  # never the project's outputs/
    command = [
        sys.executable, "-m", "src.train", f"+experiment={args.experiment}", "permutation.n=0",
        "tracking.enabled=false", f"n_jobs={args.jobs}", f"paths.output={out}",
        f"hydra.run.dir={out / 'hydra'}",
    ]  # fmt: skip
    if args.repeats:
        command.append(f"cv.repeats={args.repeats}")
    result = measure(command)
    print(" ".join(c for c in command[1:] if not c.startswith(("paths.", "hydra."))))
    print(f"{'wall s':>8}{'peak RSS MB, all processes':>28}{'main':>8}{'largest worker':>16}")
    print(f"{result['wall']:>8.1f}{result['total']:>28.0f}{result['main']:>8.0f}{result['worker']:>16.0f}")


if __name__ == "__main__":
    run_and_record("voxel_memory", main)
