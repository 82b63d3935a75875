"""Compare trained (and evaluated) experiments pairwise: does one predict better than another beyond
resampling noise, on the discovery cross-validation and on the independent cohorts?

Reads what training and evaluation wrote (``train/folds.csv``, ``train/predictions.csv``,
``train/metrics.json``, ``evaluate/predictions.csv``); fits nothing. The tests are paired, so the experiments
must have been trained on the same discovery cohort with the same seed and CV scheme, which gives the same
outer splits: checked, and refused otherwise, before any statistic.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.config.settings import saved_settings
from src.data.cohorts import cohort_specs, evaluation_groups
from src.evaluation.comparison import bayesian_correlated_ttest, corrected_ttest, delong_test, holm
from src.utils.errors import MissingInputError, UserInputError
from src.validation.metrics import binary_metrics

METRICS = ("bac", "auc")


@dataclass
class TrainedExperiment:
    """What a comparison reads of one experiment's outputs."""

    name: str
    cohort: str
    seed: int
    cv: dict[str, Any]
    folds: pd.DataFrame  # per (repeat, fold): n_train, n_test, outer_<metric>
    oof: pd.DataFrame  # per (subject, repeat): fold, y_true, decision
    evaluated: pd.DataFrame | None  # per evaluation subject: cohort, response, decision, probability
    groups: dict[str, list[str]]  # evaluation group -> its cohorts

    @classmethod
    def load(cls, name: str, run: Path) -> TrainedExperiment:
        """Read ``run/train`` (and ``run/evaluate`` if the experiment was evaluated)."""
        train = run / "train"
        for needed in ("metrics.json", "folds.csv", "predictions.csv", "config.yaml"):
            if not (train / needed).is_file():
                raise MissingInputError(
                    f"experiment {name!r}: {train / needed} not found; train it first "
                    f"(`python -m src.train +experiment={name}` or `dvc repro`)"
                )
        document = json.loads((train / "metrics.json").read_text())
        config = saved_settings(train / "config.yaml")
        evaluated = run / "evaluate" / "predictions.csv"
        return cls(
            name=name,
            cohort=str(document["cohort"]),
            seed=int(document["seed"]),
            cv=dict(document["cv"]),
            folds=pd.read_csv(train / "folds.csv"),
            oof=pd.read_csv(train / "predictions.csv", dtype={"participant_id": str}),
            evaluated=pd.read_csv(evaluated, dtype={"participant_id": str}) if evaluated.is_file() else None,
            groups=evaluation_groups(cohort_specs(config.data)),
        )


def check_paired(a: TrainedExperiment, b: TrainedExperiment) -> None:
    """The two experiments share the discovery cohort, seed, CV scheme and hence every outer split; an error
    naming what differs otherwise (an unpaired comparison would need other tests)."""
    where = f"experiments {a.name!r} and {b.name!r}"
    for what, left, right in (
        ("discovery cohort", a.cohort, b.cohort),
        ("seed", a.seed, b.seed),
        (
            "CV repeats x outer folds",
            (a.cv["repeats"], a.cv["outer_folds"]),
            (b.cv["repeats"], b.cv["outer_folds"]),
        ),
    ):
        if left != right:
            raise UserInputError(
                f"{where}: different {what} ({left} vs {right}); a paired comparison needs the same"
            )
    keys = ["participant_id", "repeat"]
    left = a.oof.set_index(keys).sort_index()
    right = b.oof.set_index(keys).sort_index()
    if not left.index.equals(right.index) or not (left["fold"] == right["fold"]).all():
        raise UserInputError(
            f"{where}: the subjects or their outer folds differ; train both on the same data"
        )
    if not (left["y_true"] == right["y_true"]).all():
        raise UserInputError(f"{where}: the labels differ (another outcome definition?)")


def _fold_metrics(e: TrainedExperiment) -> pd.DataFrame:
    return e.folds.set_index(["repeat", "fold"]).sort_index()


def discovery_comparison(
    a: TrainedExperiment, b: TrainedExperiment, rope: Mapping[str, float]
) -> dict[str, dict[str, Any]]:
    """Per metric: the out-of-fold ensemble of each, the mean outer-fold difference B - A, the corrected
    repeated-CV t-test and the Bayesian correlated t-test (P(A better), P(equivalent), P(B better))."""
    fa, fb = _fold_metrics(a), _fold_metrics(b)
    test_fraction = float((fa["n_test"] / fa["n_train"]).mean())
    ensemble = {}
    for e in (a, b):
        scores = e.oof.groupby("participant_id").agg(y=("y_true", "first"), decision=("decision", "mean"))
        ensemble[e.name] = binary_metrics(scores["y"], scores["decision"])
    out: dict[str, dict[str, Any]] = {}
    for metric in METRICS:
        x, y = fa[f"outer_{metric}"].to_numpy(float), fb[f"outer_{metric}"].to_numpy(float)
        out[metric] = {
            "a_ensemble": ensemble[a.name][metric],
            "b_ensemble": ensemble[b.name][metric],
            "corrected_ttest": asdict(corrected_ttest(y - x, test_fraction)),
            "bayesian": asdict(bayesian_correlated_ttest(x, y, int(a.cv["repeats"]), float(rope[metric]))),
        }
    return out


def scored_rows(e: TrainedExperiment, cohorts: Sequence[str]) -> pd.DataFrame:
    """The evaluation subjects of ``cohorts`` as ``e``'s locked model scored them, by participant_id."""
    assert e.evaluated is not None
    rows = e.evaluated[e.evaluated["cohort"].isin(cohorts)]
    return rows.set_index("participant_id").sort_index()


def cohort_comparison(
    a: TrainedExperiment, b: TrainedExperiment, n_bootstrap: int, seed: int
) -> dict[str, dict[str, Any]]:
    """Per evaluation group scored by both locked models: DeLong's test of the AUC difference and the BAC
    difference with a stratified paired bootstrap 95 % interval (subjects resampled within class, both
    models' scores together)."""
    if a.evaluated is None or b.evaluated is None:
        return {}
    out: dict[str, dict[str, Any]] = {}
    for group, cohorts in a.groups.items():
        if b.groups.get(group) != cohorts:
            continue
        sa, sb = scored_rows(a, cohorts), scored_rows(b, cohorts)
        if not sa.index.equals(sb.index) or len(sa) == 0:
            raise UserInputError(
                f"evaluation group {group!r}: experiments {a.name!r} and {b.name!r} scored different subjects"
            )
        y = sa["response"].to_numpy(int)
        da, db = sa["decision"].to_numpy(float), sb["decision"].to_numpy(float)
        bac_a, bac_b = binary_metrics(y, da)["bac"], binary_metrics(y, db)["bac"]
        rng = np.random.default_rng(seed)
        pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
        diffs = []
        for _ in range(n_bootstrap):
            rows = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
            diffs.append(binary_metrics(y[rows], db[rows])["bac"] - binary_metrics(y[rows], da[rows])["bac"])
        out[group] = {
            "n": len(y),
            "delong": asdict(delong_test(y, da, db)),
            "bac": {
                "a": bac_a,
                "b": bac_b,
                "difference": bac_b - bac_a,
                "ci95": [float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))],
            },
        }
    return out


def compare_experiments(
    experiments: Sequence[TrainedExperiment], rope: Mapping[str, float], n_bootstrap: int, seed: int
) -> dict[str, Any]:
    """Every pair (A, B) in the given order: discovery and cohort comparisons, and Holm-adjusted p-values
    over the pairs (per test: the corrected t-test of each metric, DeLong per evaluation group)."""
    if len(experiments) < 2:
        raise UserInputError("a comparison needs at least two experiments (compare.experiments=[a,b,...])")
    pairs = list(itertools.combinations(experiments, 2))
    for a, b in pairs:
        check_paired(a, b)  # every pair before any statistic
    results = []
    for a, b in pairs:
        results.append(
            {
                "a": a.name,
                "b": b.name,
                "discovery": discovery_comparison(a, b, rope),
                "cohorts": cohort_comparison(a, b, n_bootstrap, seed),
            }
        )
    for metric in METRICS:
        adjusted = holm([r["discovery"][metric]["corrected_ttest"]["p_value"] for r in results])
        for r, p in zip(results, adjusted, strict=True):
            r["discovery"][metric]["corrected_ttest"]["p_holm"] = p
    for group in {g for r in results for g in r["cohorts"]}:
        having = [r for r in results if group in r["cohorts"]]
        for r, p in zip(
            having, holm([r["cohorts"][group]["delong"]["p_value"] for r in having]), strict=True
        ):
            r["cohorts"][group]["delong"]["p_holm"] = p
    return {"experiments": [e.name for e in experiments], "rope": dict(rope), "pairs": results}


def comparison_table(document: Mapping[str, Any]) -> pd.DataFrame:
    """One row per pair and source (discovery BAC/AUC, each evaluation group's AUC and BAC)."""
    rows = []
    for pair in document["pairs"]:
        for metric in METRICS:
            d = pair["discovery"][metric]
            test, bayes = d["corrected_ttest"], d["bayesian"]
            rows.append(
                {
                    "A": pair["a"],
                    "B": pair["b"],
                    "source": f"discovery {metric.upper()}",
                    "A value": d["a_ensemble"],
                    "B value": d["b_ensemble"],
                    "B - A": test["mean"],  # the mean outer-fold difference (what the tests test)
                    "p": test["p_value"],
                    "p Holm": test["p_holm"],
                    "P(A better)": bayes["p_a_better"],
                    "P(equivalent)": bayes["p_equivalent"],
                    "P(B better)": bayes["p_b_better"],
                }
            )
        for group, c in pair["cohorts"].items():
            rows.append(
                {
                    "A": pair["a"],
                    "B": pair["b"],
                    "source": f"{group} AUC (DeLong)",
                    "A value": c["delong"]["auc_a"],
                    "B value": c["delong"]["auc_b"],
                    "B - A": c["delong"]["difference"],
                    "p": c["delong"]["p_value"],
                    "p Holm": c["delong"]["p_holm"],
                }
            )
    return pd.DataFrame(rows)
