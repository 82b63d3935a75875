"""What a lazy import saves: the start-up cost of each library the code imports inside a function.

For each library, a fresh interpreter first imports the module that holds the lazy import's top-level
imports (``--host``, default ``src.validation.experiment``: what every training already loads), then the
library; the printed time is the library's marginal cost (best of ``--repeats``). A lazy import stays only
where this cost is paid by commands that do not need the library (the source says so beside it); the others
are module-level imports.

Usage::

    python benchmarks/import_time.py --repeats 3
"""

from __future__ import annotations

import argparse
import subprocess
import sys

# the libraries imported inside functions in src/, and who needs them
LAZY = {
    "mlflow": "tracking only (tracking.enabled=false, shards, tests without a store never load it)",
    "statsmodels.api": "evaluation's interaction test only",
    "dcurves": "evaluation's decision curves only",
    "skops.io": "RBF (object) model files only; linear models are arrays",
    "nilearn.maskers": "feature extraction and prediction from images only",
    "matplotlib.pyplot": "figures (evaluation, tracking, merge) only",
    "dask.distributed": "parallel.backend=dask only",
    "pgserver": "the PostgreSQL store of the tests only",
    "sklearn.calibration": "Platt scaling when a model is locked",
    "threadpoolctl": "the BLAS limit of a fold",
    "tqdm.auto": "progress bars",
    "jinja2": "the report's methods text",
    "filelock": "concurrent writers of one checkpoint",
}


def marginal(host: str, library: str, repeats: int) -> float:
    code = f"import time, {host}; t = time.perf_counter(); import {library}; print(time.perf_counter() - t)"
    times = []
    for _ in range(repeats):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        times.append(float(done.stdout))
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="src.validation.experiment")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"marginal import time after `import {args.host}` (best of {args.repeats}):")
    for library, who in LAZY.items():
        print(f"  {library:22s} {marginal(args.host, library, args.repeats):6.3f} s   {who}")


if __name__ == "__main__":
    from record import run_and_record

    run_and_record("import_time", main)
