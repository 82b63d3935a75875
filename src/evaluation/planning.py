"""The planning outputs as read: the markdown of ``plan/plan.md`` (also in the report), the console lines and
the figure (learning curve; power and precision by cohort size). Numbers come from ``src.plan``'s results
only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.utils.tables import markdown_table

EXTERNAL_ASSUMPTIONS = (
    "Simulated cohorts of each size draw their responders' and non-responders' scores with replacement from "
    "the scenario's scores of that class (class counts at the planned prevalence), threshold them at the "
    "model's decision boundary and test as the evaluation does: BAC by the label-permutation test with the "
    "predictions fixed (exact: Fisher's one-sided test), AUC by the one-sided Mann-Whitney test; precision = "
    "half-width of the central 95 % of the simulated estimates. The discovery scenario assumes a new cohort "
    "behaves like the discovery cohort out of fold (same case mix, scanners and effect): independent "
    "cohorts usually do worse, so read it as a minimum. '>N': not reached up to N patients."
)
DEVELOPMENT_CAVEAT = (
    "The criteria assume an unpenalised logistic regression estimating every candidate parameter; a "
    "regularised SVC needs fewer patients than this, but a cohort far below it will be optimistic in its "
    "apparent fit: judge the model by the nested CV and by external cohorts, never by its training fit."
)


def _n(value: int | None, max_n: int) -> str:
    return f">{max_n}" if value is None else str(value)


def external_table(plan: dict[str, Any]) -> pd.DataFrame:
    """One row per scenario: the source scores' n/BAC/AUC and the sizes needed."""
    rows = []
    for name, s in plan["external_validation"].items():
        row = {"scores from": name, "n": s["source_n"], "BAC": f"{s['source_bac']:.3f}"}
        row["AUC"] = f"{s['source_auc']:.3f}"
        for metric in ("bac", "auc"):
            for key in (k for k in s if k.startswith("n_power") and k.endswith(f"_{metric}")):
                power = key.removeprefix("n_power").removesuffix(f"_{metric}")
                row[f"{metric.upper()} > chance, {power} % power"] = _n(s[key], s["max_n"])
        for metric in ("bac", "auc"):
            row[f"{metric.upper()} within ±{s['precision']:g}"] = _n(s[f"n_precision_{metric}"], s["max_n"])
        rows.append(row)
    return pd.DataFrame(rows)


def development_parts(plan: dict[str, Any]) -> list[str | pd.DataFrame]:
    """The development statement: inputs, the three criteria and the minimum n against the discovery n."""
    dev = plan["development"]
    if "n" not in dev:
        return [dev.get("note", "not computed")]
    table = pd.DataFrame(dev["criteria"])[["criterion", "n", "shrinkage", "events", "epp"]]
    table["events"] = table["events"].map(lambda v: f"{v:.1f}")
    table["shrinkage"] = table["shrinkage"].map(lambda v: "" if v is None or pd.isna(v) else f"{v:.3f}")
    table["epp"] = table["epp"].map(lambda v: f"{v:.2f}")
    share = 100 * dev["discovery_n"] / dev["n"]
    return [
        f"Anticipated C statistic {dev['anticipated_auc']:.3f}, responder prevalence {dev['prevalence']:.3f} "
        f"-> anticipated Cox-Snell R² {dev['r2cs']:.3f} (maximum {dev['max_r2cs']:.2f}); "
        f"{dev['parameters']} candidate parameters ({dev['parameters_counted']}).",
        table,
        f"**Minimum development sample size: {dev['n']} patients ({dev['events']:.0f} responders, "
        f"{dev['epp']:.2f} per candidate parameter); the discovery cohort has {dev['discovery_n']} "
        f"({share:.0f} % of it).** {DEVELOPMENT_CAVEAT}",
    ]


def _formatted(table: pd.DataFrame) -> pd.DataFrame:
    """Counts as integers, fractions and metrics with 3 decimals (as text: the table helper rounds floats)."""
    out = table.copy()
    for column in out.columns:
        if column in ("n", "draws"):
            out[column] = out[column].astype(int).astype(str)
        elif out[column].dtype.kind == "f":
            out[column] = out[column].map(lambda v: f"{v:.3f}")
    return out


def curve_parts(plan: dict[str, Any]) -> list[str | pd.DataFrame]:
    """The learning curve's table and whether the curve still rises at the full cohort."""
    lc = plan["learning_curve"]
    table = pd.DataFrame(lc["summary"])  # plan.json sorts the keys: the reading order again
    order = [
        "fraction",
        "n",
        "draws",
        "bac_mean",
        "bac_sd",
        "auc_mean",
        "auc_sd",
        "statistic_mean",
        "statistic_sd",
    ]
    table = table[[c for c in order if c in table]]
    lines: list[str | pd.DataFrame] = [
        f"The whole nested CV ({lc['repeats']} repeat) on {lc['draws']} stratified subsamples per size of "
        "the discovery cohort, each with its own splits; mean and SD across the draws.",
        _formatted(table),
    ]
    metric = "bac_mean" if "bac_mean" in table else "statistic_mean"
    if len(table) > 1:
        last, before = table.iloc[-1], table.iloc[-2]
        slope = np.polyfit(np.log(table["n"]), table[metric], 1)[0]
        lines.append(
            f"From {int(before['n'])} to {int(last['n'])} patients the mean "
            f"{'BAC' if metric == 'bac_mean' else lc.get('statistic')} moved by "
            f"{last[metric] - before[metric]:+.3f}; over the whole curve {slope * np.log(2):+.3f} per "
            "doubling of the cohort (least squares on log n). A curve still rising at the full cohort says "
            "more patients would still help."
        )
    for skipped in lc["skipped_fractions"]:
        lines.append(f"Left out: fraction {skipped['fraction']:g} ({skipped['reason']}).")
    return lines


def plan_parts(plan: dict[str, Any]) -> list[str | pd.DataFrame]:
    """The three answers in order: headings (``#### ...``), paragraphs and tables (DataFrames), rendered as
    markdown by :func:`plan_markdown` and as HTML by the report."""
    parts: list[str | pd.DataFrame] = ["#### Learning curve", *curve_parts(plan)]
    parts += ["#### Development sample size (Riley et al. 2020)", *development_parts(plan)]
    parts.append("#### External validation sample size")
    significance = plan.get("discovery_significance") or {}
    if significance.get("note"):
        parts.append(significance["note"])
    if plan["external_validation"]:
        parts += [external_table(plan), EXTERNAL_ASSUMPTIONS]
    else:
        parts.append(plan["development"].get("note", "not computed"))
    return parts


def plan_markdown(plan: dict[str, Any]) -> str:
    """``plan/plan.md``: the three answers with their tables and the assumptions."""
    blocks = [markdown_table(p) if isinstance(p, pd.DataFrame) else p for p in plan_parts(plan)]
    return "\n\n".join(blocks) + "\n"


def summary_lines(name: str, plan: dict[str, Any], out: Path) -> list[str]:
    """The console summary of ``src.plan``."""
    lines = [f"{name}: plan"]
    for row in plan["learning_curve"]["summary"]:
        auc = f", AUC {row['auc_mean']:.3f}" if "auc_mean" in row else ""
        lines.append(
            f"  learning curve n={row['n']}: "
            + (
                f"BAC {row['bac_mean']:.3f}"
                if "bac_mean" in row
                else f"statistic {row['statistic_mean']:.3f}"
            )
            + auc
        )
    dev = plan["development"]
    if "n" in dev:
        lines.append(
            f"  development (Riley): {dev['n']} patients for {dev['parameters']} parameters at C "
            f"{dev['anticipated_auc']:.3f}; discovery has {dev['discovery_n']}"
        )
    for scenario, s in plan["external_validation"].items():
        powers = [
            k.removeprefix("n_power").removesuffix("_bac")
            for k in s
            if k.startswith("n_power") and k.endswith("_bac")
        ]
        sizes = {m: "/".join(_n(s[f"n_power{p}_{m}"], s["max_n"]) for p in powers) for m in ("bac", "auc")}
        lines.append(
            f"  external, {scenario}: > chance with {'/'.join(powers)} % power: BAC {sizes['bac']}, AUC "
            f"{sizes['auc']}; BAC within ±{s['precision']:g}: {_n(s['n_precision_bac'], s['max_n'])}"
        )
    significance = plan.get("discovery_significance") or {}
    if significance and not significance.get("significant"):
        lines.append(f"  note: {significance['note']}")
    lines.append(f"  written to {out}")
    return lines


def plan_figure(path: Path, curve: pd.DataFrame, power: pd.DataFrame, plan: dict[str, Any]) -> None:
    """Left: BAC and AUC of each draw and their means by cohort size. Right: power of the BAC and AUC tests
    by external cohort size, per scenario, with the 80 % and 90 % lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    shown = [(m, c) for m, c in (("bac", "#1f77b4"), ("auc", "#d62728")) if m in curve]
    for metric, colour in shown or [("statistic", "#1f77b4")]:
        left.scatter(curve["n"], curve[metric], s=12, alpha=0.4, color=colour)
        means = curve.groupby("n")[metric].mean()
        left.plot(
            means.index, means.to_numpy(), "o-", color=colour, label=f"{metric.upper()} (mean of draws)"
        )
    if shown:
        left.axhline(0.5, color="grey", ls="--", lw=0.8)
    left.set(xlabel="discovery patients in the nested CV", ylabel="out-of-fold value", title="Learning curve")
    left.legend(fontsize=8)
    styles = {"bac": "-", "auc": ":"}
    for i, (scenario, rows) in enumerate(power.groupby("scenario", sort=False)):
        for metric in ("bac", "auc"):
            right.plot(
                rows["n"],
                rows[f"power_{metric}"],
                styles[metric],
                color=f"C{i}",
                label=f"{metric.upper()}, {scenario}",
            )
    for level in plan["powers"]:
        right.axhline(level, color="grey", ls="--", lw=0.8)
    if power.empty:
        right.text(0.5, 0.5, "not computed", ha="center", transform=right.transAxes)
    right.set(
        xscale="log",
        xlabel="external cohort size",
        ylabel="power (one-sided alpha)",
        title="External validation",
    )
    if not power.empty:
        right.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
