"""Site alignment of unseen sites: empirical Bayes (ComBat) vs per-site location/scale vs none.

Scores the evaluation cohorts with a trained experiment's locked model after aligning each unseen site to
the training cohort (``SiteAligner(method=...)``) and prints BAC and AUC per cohort group. Small sites are
where empirical-Bayes shrinkage should matter: ``--subsample`` also aligns random subsets of each site
(``--draws`` draws per size) and reports the mean BAC/AUC over draws, scored on the subset.

Usage::

    python -m src.train +experiment=gm_only permutation.n=0 tracking.enabled=false paths.output=/tmp/sa
    python benchmarks/site_alignment.py --run /tmp/sa/gm_only --subsample 8 12 16 --draws 200
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import balanced_accuracy_score, roc_auc_score

from src.models.harmonize import SiteAligner
from src.validation.ensemble import load_model


def _scores(model, aligner: SiteAligner | None, table: pd.DataFrame) -> np.ndarray:
    aligned = table if aligner is None else aligner.transform(table)
    return model.decision_function(aligned)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", type=Path, required=True, help="${paths.run} of a trained experiment")
    parser.add_argument("--features", type=Path, default=Path("data/features/gm_roi"))
    parser.add_argument("--groups", nargs="+", default=["external_a+external_b", "saline"])
    parser.add_argument("--subsample", type=int, nargs="*", default=[])
    parser.add_argument("--draws", type=int, default=200)
    args = parser.parse_args()
    model = load_model(args.run / "train" / "model")
    train = pd.read_parquet(args.features / "discovery.parquet")
    aligners = {
        "none": None,
        **{m: SiteAligner(model.feature_columns, method=m).fit(train) for m in ("location_scale", "eb")},
    }
    rows = []
    for group in args.groups:
        table = pd.concat([pd.read_parquet(args.features / f"{c}.parquet") for c in group.split("+")])
        table = table.reset_index(drop=True)
        y = table["response"].to_numpy(int)
        for name, aligner in aligners.items():
            s = _scores(model, aligner, table)
            rows.append(
                {
                    "group": group,
                    "site_n": "all",
                    "method": name,
                    "BAC": balanced_accuracy_score(y, s > 0),
                    "AUC": roc_auc_score(y, s),
                }
            )
        rng = np.random.default_rng(0)
        for size in args.subsample:
            values = {name: [] for name in aligners}
            for _ in range(args.draws):
                # the same subset of every site for every method
                picked = np.concatenate(
                    [
                        rng.choice(np.flatnonzero(table["site"] == site), size, replace=False)
                        for site in table["site"].unique()
                    ]
                )
                sub = table.iloc[picked].reset_index(drop=True)
                if sub["response"].nunique() < 2:
                    continue
                for name, aligner in aligners.items():
                    s = _scores(model, aligner, sub)
                    values[name].append(
                        (balanced_accuracy_score(sub["response"], s > 0), roc_auc_score(sub["response"], s))
                    )
            for name, v in values.items():
                v = np.asarray(v)
                rows.append(
                    {
                        "group": group,
                        "site_n": size,
                        "method": name,
                        "BAC": v[:, 0].mean(),
                        "AUC": v[:, 1].mean(),
                    }
                )
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3f"))


if __name__ == "__main__":
    from record import run_and_record

    run_and_record("site_alignment", main)
