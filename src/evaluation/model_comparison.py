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
from scipy.stats import t as t_distribution

from src.config.settings import saved_settings
from src.data.cohorts import cohort_specs, evaluation_groups
from src.evaluation.artefacts import check_experiment
from src.evaluation.comparison import (
    bayesian_correlated_ttest,
    corrected_ttest,
    delong_test,
    holm,
    paired_bootstrap,
)
from src.utils.errors import MissingInputError, UserInputError
from src.validation.metrics import binary_metrics

METRICS = ("bac", "auc")
# the threshold on P(response) at which the table states the net-benefit difference (the figure: all of them)
NET_BENEFIT_THRESHOLD = 0.5


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
        check_experiment(name, run)  # its tables as written, its evaluation of this very model
        document = json.loads((train / "metrics.json").read_text())
        if is_continuous(document):
            raise UserInputError(
                f"experiment {name!r} predicts a continuous outcome: src.compare compares classifiers "
                "(paired on the same stratified outer splits); comparing regressors is not supported yet"
            )
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


def is_continuous(document: Mapping[str, Any]) -> bool:
    """Whether a training's ``metrics.json`` document is a regressor's (continuous outcome)."""
    return (document.get("outcome") or {}).get("kind") == "continuous"


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
    """Per evaluation group scored by both locked models: DeLong's test of the AUC difference, and the BAC
    and net-benefit differences with stratified paired bootstrap 95 % intervals (subjects resampled within
    class, both models' scores together: :func:`~src.evaluation.comparison.paired_bootstrap`)."""
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
        boot = paired_bootstrap(
            y,
            sa["decision"].to_numpy(float),
            sb["decision"].to_numpy(float),
            sa["probability"].to_numpy(float),
            sb["probability"].to_numpy(float),
            n_bootstrap,
            seed,
        )
        out[group] = {
            "n": len(y),
            "delong": asdict(delong_test(y, sa["decision"].to_numpy(float), sb["decision"].to_numpy(float))),
            "bac": {
                "a": boot.bac_a,
                "b": boot.bac_b,
                "difference": boot.bac_difference,
                "ci95": boot.bac_ci95,
            },
            "net_benefit": {
                "thresholds": boot.thresholds,
                "a": boot.net_benefit_a,
                "b": boot.net_benefit_b,
                "difference": boot.net_benefit_difference,
                "ci95_low": boot.net_benefit_ci_low,
                "ci95_high": boot.net_benefit_ci_high,
                "treat_all": boot.net_benefit_treat_all,
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
            half = float(t_distribution.ppf(0.975, test["df"])) * test["se"]
            rows.append(
                {
                    "A": pair["a"],
                    "B": pair["b"],
                    "source": f"discovery {metric.upper()}",
                    "A value": d["a_ensemble"],
                    "B value": d["b_ensemble"],
                    "B - A": test["mean"],  # the mean outer-fold difference (what the tests test)
                    "95% CI": _interval(test["mean"] - half, test["mean"] + half),
                    "p": test["p_value"],
                    "p Holm": test["p_holm"],
                    "P(A better)": bayes["p_a_better"],
                    "P(equivalent)": bayes["p_equivalent"],
                    "P(B better)": bayes["p_b_better"],
                }
            )
        for group, c in pair["cohorts"].items():
            delong = c["delong"]
            rows.append(
                {
                    "A": pair["a"],
                    "B": pair["b"],
                    "source": f"{group} AUC (DeLong)",
                    "A value": delong["auc_a"],
                    "B value": delong["auc_b"],
                    "B - A": delong["difference"],
                    "95% CI": _interval(
                        delong["difference"] - 1.96 * delong["se"], delong["difference"] + 1.96 * delong["se"]
                    ),
                    "p": delong["p_value"],
                    "p Holm": delong["p_holm"],
                }
            )
            rows.append(
                {
                    "A": pair["a"],
                    "B": pair["b"],
                    "source": f"{group} BAC (paired bootstrap)",
                    "A value": c["bac"]["a"],
                    "B value": c["bac"]["b"],
                    "B - A": c["bac"]["difference"],
                    "95% CI": _interval(*c["bac"]["ci95"]),
                }
            )
            net = net_benefit_at(c)
            if net:
                rows.append(
                    {
                        "A": pair["a"],
                        "B": pair["b"],
                        "source": f"{group} net benefit at P >= {net['threshold']:.2f}",
                        "A value": net["a"],
                        "B value": net["b"],
                        "B - A": net["difference"],
                        "95% CI": _interval(net["ci95_low"], net["ci95_high"]),
                    }
                )
    return pd.DataFrame(rows)


def net_benefit_at(cohort: Mapping[str, Any], threshold: float = NET_BENEFIT_THRESHOLD) -> dict[str, float]:
    """One evaluation group's net-benefit comparison at the computed threshold nearest ``threshold``:
    threshold, a, b, difference, ci95_low, ci95_high ({} when the group has none)."""
    net = cohort.get("net_benefit")
    if not net:
        return {}
    i = int(np.argmin(np.abs(np.asarray(net["thresholds"]) - threshold)))
    keys = ("a", "b", "difference", "ci95_low", "ci95_high")
    return {"threshold": net["thresholds"][i], **{k: net[k][i] for k in keys}}


def _interval(low: float, high: float) -> str:
    return f"{low:+.3f} to {high:+.3f}"


def decision_curves(document: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per evaluation group: the thresholds, each experiment's net-benefit curve, and treat-all's."""
    out: dict[str, dict[str, Any]] = {}
    for pair in document["pairs"]:
        for group, c in pair["cohorts"].items():
            net = c.get("net_benefit")
            if not net:
                continue
            entry = out.setdefault(
                group, {"thresholds": net["thresholds"], "curves": {}, "treat_all": net["treat_all"]}
            )
            entry["curves"][pair["a"]], entry["curves"][pair["b"]] = net["a"], net["b"]
    return out


def comparison_figure(document: Mapping[str, Any], table: pd.DataFrame, path: Path) -> None:
    """``comparison.png``: B - A with its 95 % interval for every pair and source (left), and each evaluation
    group's decision curves of every experiment with treat-all and treat-none (right)."""
    # lazy: matplotlib 0.6 s (benchmarks/import_time.py), only for figures
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = decision_curves(document)
    rows = table[table["95% CI"].notna()].reset_index(drop=True)
    fig, axes = plt.subplots(
        1,
        1 + len(curves),
        figsize=(7 + 4.5 * len(curves), max(4.0, 0.28 * len(rows) + 1.5)),
        gridspec_kw={"width_ratios": [1.6] + [1] * len(curves)},
        squeeze=False,
    )
    forest = axes[0, 0]
    for i, row in rows.iterrows():
        low, high = (float(v) for v in str(row["95% CI"]).split(" to "))
        forest.plot([low, high], [i, i], color="0.3")
        forest.plot(row["B - A"], i, "o", color="C3" if low > 0 or high < 0 else "C0")
    forest.axvline(0, color="0.6", lw=0.8)
    forest.set_yticks(range(len(rows)))
    forest.set_yticklabels([f"{r.B} - {r.A}: {r.source}" for r in rows.itertuples()], fontsize=7)
    forest.invert_yaxis()
    forest.set_xlabel("B - A (95 % interval; red: excludes 0)")
    for ax, (group, entry) in zip(axes[0, 1:], curves.items(), strict=True):
        thresholds = np.asarray(entry["thresholds"])
        for name, values in entry["curves"].items():
            ax.plot(thresholds, values, label=name)
        ax.plot(thresholds, entry["treat_all"], color="0.4", ls="--", lw=0.8, label="treat all")
        ax.axhline(0, color="0.6", lw=0.8, label="treat none")
        ax.set_ylim(bottom=-0.1)
        ax.set_title(f"decision curves: {group}")
        ax.set_xlabel("threshold P(response)")
        ax.set_ylabel("net benefit")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
