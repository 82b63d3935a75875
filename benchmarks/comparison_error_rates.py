"""False-positive rate of the corrected repeated-CV t-test against the naive t-test on the same folds.

``--n`` simulated null comparisons (a fresh sample each; two nearest-centroid classifiers on different but
equally informative features, so their true performances are equal; 10 x 10 stratified folds): the share of
comparisons each test calls significant at 5 %. The simulation is the one ``tests/test_comparison.py`` checks.

Usage::

    python benchmarks/comparison_error_rates.py --n 200
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_comparison import _null_comparison  # noqa: E402  (the tests' simulation, not a copy of it)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    results = np.array([_null_comparison(seed) for seed in range(args.n)])
    corrected, naive = (results < 0.05).mean(axis=0)
    print(f"{args.n} null comparisons (10 x 10 folds), rejected at the 5 % level:")
    print(f"  corrected repeated-CV t-test (Nadeau & Bengio)  {100 * corrected:5.1f} %")
    print(f"  naive t-test on the same 100 folds              {100 * naive:5.1f} %")


if __name__ == "__main__":
    from record import run_and_record

    run_and_record("comparison_error_rates", main)
