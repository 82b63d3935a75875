"""Is the subgroup heterogeneity test honest at the default's cell sizes? Its rejection rate on null data.

Each null data set has the discovery cohort's size (99 patients, 52 responders on average) and its three
kinds of grouping: baseline-severity tertiles and age bands (3 levels of ~33) and sex (2 levels). The
decision score predicts response equally in every level (logit = 0.8 x score + a main effect of the level):
there is no heterogeneity to find, so a test at alpha = 0.05 should reject 5 % of the time. Reported per
grouping and pooled, with Wilson 95 % intervals: the asymptotic chi-squared p of the likelihood-ratio
statistic and the calibrated p that ``src.evaluation.subgroups.heterogeneity_test`` reports (parametric
bootstrap, its default number of draws).

Usage::

    python benchmarks/heterogeneity_calibration.py --n 300 --jobs 2
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from joblib import Parallel, delayed

GROUPINGS = {"severity tertile": ["T1", "T2", "T3"], "age band": ["<30", "30-44", ">=45"], "sex": ["F", "M"]}


def null_data_set(seed: int) -> list[tuple[str, float, float]]:
    """(grouping, asymptotic p, calibrated p) of each grouping of one null data set."""
    from src.evaluation.subgroups import heterogeneity_test

    rng = np.random.default_rng(seed)
    n = 99
    out = []
    for i, (grouping, names) in enumerate(GROUPINGS.items()):
        levels = pd.Series(rng.choice(names, n))
        main = {name: effect for name, effect in zip(names, rng.normal(0, 0.3, len(names)), strict=True)}
        score = rng.normal(size=n)
        logit = 0.1 + 0.8 * score + levels.map(main).to_numpy()
        y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
        test = heterogeneity_test(y, score, levels, seed=seed * 10 + i)
        if test["p"] is not None:
            out.append((grouping, float(test["p_asymptotic"]), float(test["p"])))
    return out


def wilson(k: int, n: int) -> str:
    from statsmodels.stats.proportion import proportion_confint

    low, high = proportion_confint(k, n, alpha=0.05, method="wilson")
    return f"{100 * k / n:5.1f} % ({100 * low:4.1f}-{100 * high:4.1f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=300, help="null data sets")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    from src.evaluation.subgroups import LR_BOOTSTRAP

    rows = Parallel(n_jobs=args.jobs)(delayed(null_data_set)(seed) for seed in range(args.n))
    table = pd.DataFrame(
        [r for data_set in rows for r in data_set], columns=["grouping", "chi2", "calibrated"]
    )
    print(
        f"{args.n} null data sets (n = 99), {len(table)} tests; rejected at alpha = 0.05 (chi2: p < alpha; "
        f"calibrated, a Monte Carlo p: p <= alpha; Wilson 95 % CI); calibrated = parametric bootstrap, "
        f"{LR_BOOTSTRAP} draws"
    )
    print(f"{'grouping':<18} {'tests':>5}  {'asymptotic chi2':<22} calibrated (reported)")
    for grouping, part in [*table.groupby("grouping", sort=False), ("all", table)]:
        n = len(part)
        print(
            f"{grouping:<18} {n:>5}  {wilson(int((part['chi2'] < 0.05).sum()), n):<22} "
            f"{wilson(int((part['calibrated'] <= 0.05).sum()), n)}"
        )


if __name__ == "__main__":
    from record import run_and_record

    run_and_record("heterogeneity_calibration", main)
