"""``${paths.run}/evaluate/``: tables, figures (ROC, calibration with CIs, decision curves) and weight maps
of an :class:`~src.evaluation.locked.Evaluation`, written in one atomic step by the caller."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib
import nibabel as nib
import numpy as np
import pandas as pd
from nilearn import plotting
from sklearn.metrics import roc_curve

from src.evaluation.clinical import calibration_table, decision_curve
from src.evaluation.continuous import continuous_table, predicted_vs_observed
from src.evaluation.locked import Evaluation
from src.evaluation.subgroups import SUBGROUPS_DIR, TOO_SMALL, forest_figure
from src.interpretation.regions import paint_features
from src.utils.io import file_record, write_json_atomic, write_text_atomic
from src.utils.style import cohort_colour
from src.utils.tables import markdown_table

matplotlib.use("Agg")

MAP_TITLE = "Corrected CV-ratio of the weights, FDR q < 0.05 (red: towards response, blue: non-response)"


def curves_figure(out: Path, curves: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]) -> None:
    """``curves.png`` (ROC, calibration with 95 % Wilson CIs, decision curves; one colour per cohort) and
    the tables behind it: ``calibration.csv``, ``decision_curve.csv`` and ``plots/<kind>/<cohort>.csv``
    (DVC plots)."""
    # lazy: matplotlib 0.6 s (benchmarks/import_time.py), only for figures
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    dca_rows, cal_rows = [], []
    plots = {kind: out / "plots" / kind for kind in ("roc", "calibration", "decision_curve")}
    for folder in plots.values():
        folder.mkdir(parents=True)
    for name, (y, scores, proba) in curves.items():
        colour, stem = cohort_colour(name), name.split(" ")[0]
        fpr, tpr, _ = roc_curve(y, scores)
        axes[0].plot(fpr, tpr, color=colour, label=name)
        pd.DataFrame({"fpr": fpr, "tpr": tpr}).to_csv(plots["roc"] / f"{stem}.csv", index=False)
        cal, brier = calibration_table(y, proba)
        cal.to_csv(plots["calibration"] / f"{stem}.csv", index=False)
        axes[1].errorbar(
            cal["mean_predicted"],
            cal["observed_fraction"],
            # clipped: the Wilson bound of 0/n or n/n equals the rate up to rounding
            yerr=np.clip(
                [
                    cal["observed_fraction"] - cal["observed_low"],
                    cal["observed_high"] - cal["observed_fraction"],
                ],
                0,
                None,
            ),
            marker="o",
            capsize=3,
            color=colour,
            label=f"{name} (Brier {brier:.3f})",
        )
        cal_rows.append(cal.assign(cohort=name, brier=brier))
        dca = decision_curve(y, proba)
        dca.to_csv(plots["decision_curve"] / f"{stem}.csv", index=False)
        axes[2].plot(dca["threshold"], dca["net_benefit_model"], color=colour, label=f"{name}: model")
        axes[2].plot(
            dca["threshold"],
            dca["net_benefit_treat_all"],
            color=colour,
            linestyle=":",
            label=f"{name}: treat all",
        )
        dca_rows.append(dca.assign(cohort=name))
    axes[0].plot([0, 1], [0, 1], color="grey", linewidth=0.5)
    axes[0].set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC")
    axes[1].plot([0, 1], [0, 1], color="grey", linewidth=0.5)
    axes[1].set(
        xlabel="predicted P(response)",
        ylabel="observed response rate",
        title="Calibration (quintiles of patients, 95 % CI)",
    )
    axes[2].axhline(0, color="grey", linewidth=0.5, label="treat none")
    axes[2].set(
        xlabel="threshold probability", ylabel="net benefit", title="Decision curve", ylim=(-0.3, 0.6)
    )
    for ax in axes:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)
    pd.concat(cal_rows, ignore_index=True).to_csv(out / "calibration.csv", index=False)
    pd.concat(dca_rows, ignore_index=True).to_csv(out / "decision_curve.csv", index=False)


def write_maps(out: Path, regions: pd.DataFrame, features_dir: Path) -> str:
    """``maps/weight.nii.gz``, ``maps/cvr.nii.gz`` and ``maps/cvr_map.png`` of a linear model; for other
    models or features without an image (a user's table) a ``maps/README.txt`` saying why. Returns the
    note (empty when maps were written)."""
    out.mkdir()  # always created (a DVC output)
    if "cvr" not in regions:
        note = "no weight map: the model is not linear (see regions.csv for permutation importance)"
    else:
        maps, note = paint_features(regions, features_dir)
    if note:
        write_text_atomic(out / "README.txt", note + "\n")
        return note
    for name, img in maps.items():
        nib.save(img, out / f"{name}.nii.gz")
    display = plotting.plot_stat_map(
        maps["cvr"], threshold=1e-6, display_mode="z", cut_coords=7, title=MAP_TITLE
    )
    display.savefig(str(out / "cvr_map.png"), dpi=120)
    display.close()
    return ""


SUMMARY_FILE = "summary.json"  # what dvc.yaml declares as metrics: numbers and the data's name, a screen wide


def evaluation_summary_metrics(document: dict[str, Any]) -> dict[str, float | str]:
    """The evaluation's DVC metrics: the data config of its cohorts, BAC, AUC and permutation p of the pooled
    groups (external, control), and the treatment-specificity p (each cohort alone, CIs, site-aligned
    results and provenance stay in ``metrics.json``)."""
    out: dict[str, float | str] = {"data": str((document.get("provenance") or {}).get("data"))}
    for group in ("external", "control"):
        result = document["cohorts"].get(group)
        if result is None:
            continue
        for key in ("bac", "auc", "p_bac"):
            if result.get(key) is not None:
                out[f"{group}_{key}"] = round(float(result[key]), 4)
    difference = (document.get("treatment_specificity") or {}).get("auc_difference")
    if difference:
        out["specificity_p"] = round(float(difference["p_value"]), 4)
    continuous = document.get("continuous")
    if continuous:  # a regressor: the continuous outcome's numbers too
        for group in ("external", "control"):
            result = continuous["cohorts"].get(group)
            for key in ("r2", "pearson_r", "mae", "p_pearson_r") if result else ():
                out[f"{group}_{key}"] = round(float(result[key]), 4)
            if result:
                out[f"{group}_calibration_slope"] = round(float(result["calibration"]["slope"]), 4)
        if continuous.get("treatment_interaction"):
            out["interaction_p"] = round(float(continuous["treatment_interaction"]["p_value"]), 4)
    return out


def predicted_vs_observed_figure(out: Path, continuous: dict[str, Any]) -> None:
    """``predicted_vs_observed.png``: one panel per cohort group (discovery out of fold, external, control),
    observed on predicted with the identity line, the OLS calibration line and the responder threshold."""
    # lazy: matplotlib 0.6 s (benchmarks/import_time.py), only for figures
    import matplotlib.pyplot as plt

    groups = [g for g in ("discovery (OOF)", "external", "control") if g in continuous["pairs"]]
    fig, axes = plt.subplots(1, len(groups), figsize=(4.6 * len(groups), 4.4), squeeze=False)
    for ax, name in zip(axes[0], groups, strict=True):
        observed, predicted = continuous["pairs"][name]
        result = continuous["results"]["discovery" if name.startswith("discovery") else name]
        predicted_vs_observed(observed, predicted, ax, name, continuous["cut"], cohort_colour(name))
        line = result["calibration"]
        xs = np.linspace(float(np.min(predicted)), float(np.max(predicted)), 2)
        ax.plot(xs, line["intercept"] + line["slope"] * xs, color="crimson", lw=1.5, label="OLS fit")
        ax.set_title(
            f"{name}: R² {result['r2']:.2f}, r {result['pearson_r']:.2f}, slope {line['slope']:.2f}",
            fontsize=9,
        )
        ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "predicted_vs_observed.png", dpi=110)
    plt.close(fig)


def write_evaluation(out: Path, evaluation: Evaluation, features_dir: Path) -> None:
    """Every file of ``${paths.run}/evaluate/`` but ``tracking.json`` (written once MLflow has the runs)."""
    evaluation.document["maps_note"] = write_maps(out / "maps", evaluation.regions, features_dir) or None
    evaluation.paper_table.to_csv(out / "paper_table.csv", index=False)
    write_text_atomic(out / "paper_table.md", markdown_table(evaluation.paper_table) + "\n")
    columns = ["participant_id", "_cohort", "site", "treatment", "response", "decision", "probability"]
    scored = pd.concat(evaluation.scored.values(), ignore_index=True).drop_duplicates("participant_id")
    # the label the cohort metrics count (a positive decision score), beside the calibrated probability:
    # Platt's intercept moves P = 0.5 away from decision 0, so the two can differ near the boundary
    scored["predicted"] = (scored["decision"] > 0).astype(int)
    columns.insert(columns.index("probability"), "predicted")
    scored[columns].rename(columns={"_cohort": "cohort"}).to_csv(out / "predictions.csv", index=False)
    # what compare and plan read of this evaluation, hashed (src.evaluation.artefacts checks them)
    evaluation.document["provenance"]["files"] = file_record(out, ["predictions.csv", "paper_table.csv"])
    write_json_atomic(out / "metrics.json", evaluation.document)
    write_json_atomic(out / SUMMARY_FILE, evaluation_summary_metrics(evaluation.document))
    evaluation.regions.to_csv(out / "regions.csv", index=False)
    curves_figure(out, evaluation.curves)
    write_continuous(out / CONTINUOUS_DIR, evaluation)
    write_subgroups(out / SUBGROUPS_DIR, evaluation)


CONTINUOUS_DIR = "continuous"  # always written (a DVC output): a regressor's results, or a note


def write_continuous(folder: Path, evaluation: Evaluation) -> None:
    """``evaluate/continuous/``: a regressor's continuous results (``continuous.csv``/``.md``, per group;
    ``predictions.csv``: observed and predicted outcome per evaluation subject; ``predicted_vs_observed.png``)
    or, for a classifier, a ``README.txt`` saying there are none."""
    folder.mkdir()
    if evaluation.continuous is None:
        write_text_atomic(
            folder / "README.txt",
            "A classifier: no continuous outcome (see data.outcome.kind in the README).\n",
        )
        return
    table = continuous_table(evaluation.continuous["results"])
    table.to_csv(folder / "continuous.csv", index=False)
    write_text_atomic(folder / "continuous.md", markdown_table(table) + "\n")
    predicted_vs_observed_figure(folder, evaluation.continuous)
    observed = pd.concat(evaluation.scored.values(), ignore_index=True).drop_duplicates("participant_id")
    columns = ["participant_id", "_cohort", "outcome", "predicted"]
    observed[columns].rename(columns={"_cohort": "cohort"}).to_csv(folder / "predictions.csv", index=False)


def write_subgroups(folder: Path, evaluation: Evaluation) -> None:
    """``evaluate/subgroups/``: ``subgroups.csv``/``.md`` (one row per cohort group x grouping x level),
    ``heterogeneity.csv``/``.md`` (the LR test per grouping) and ``forest.png`` (AUC and BAC with CIs)."""
    folder.mkdir()
    if evaluation.subgroups is None:
        return
    cells, tests = evaluation.subgroups["cells"], evaluation.subgroups["heterogeneity"]
    cells.to_csv(folder / "subgroups.csv", index=False)
    tests.to_csv(folder / "heterogeneity.csv", index=False)
    write_text_atomic(folder / "subgroups.md", markdown_table(subgroup_display(cells)) + "\n")
    write_text_atomic(folder / "heterogeneity.md", markdown_table(heterogeneity_display(tests)) + "\n")
    if len(cells):
        forest_figure(folder / "forest.png", cells)


def _interval(row: Any, metric: str, scale: float, decimals: int) -> str:
    if row["status"] != "ok":
        return ""
    return (
        f"{scale * row[metric]:.{decimals}f} ({scale * row[metric + '_low']:.{decimals}f}-"
        f"{scale * row[metric + '_high']:.{decimals}f})"
    )


def subgroup_display(cells: pd.DataFrame) -> pd.DataFrame:
    """The subgroup table as read: BAC/sens/spec in % and AUC with their 95 % intervals, calibration as
    observed vs mean predicted responder fraction; a level too small shows its n and the note only."""
    rows = []
    for _, row in cells.iterrows():
        ok = row["status"] == "ok"
        rows.append(
            {
                "group": row["group"],
                "subgroup": f"{row['grouping']}: {row['level']}",
                "n": int(row["n"]),
                "responders": int(row["responders"]),
                "BAC % (95% CI)": _interval(row, "bac", 100, 1) if ok else TOO_SMALL,
                "sens %": _interval(row, "sensitivity", 100, 1),
                "spec %": _interval(row, "specificity", 100, 1),
                "AUC (95% CI)": _interval(row, "auc", 1, 2),
                "observed / predicted": f"{row['observed']:.2f} / {row['mean_predicted']:.2f}" if ok else "",
            }
        )
    return pd.DataFrame(rows)


def heterogeneity_display(tests: pd.DataFrame) -> pd.DataFrame:
    """The heterogeneity tests as read: LR chi-squared, df, the calibrated p (parametric bootstrap in small
    cells), Holm's adjustment over the group's groupings, and the asymptotic p beside them (or why
    untested)."""

    def shown(row: pd.Series, key: str) -> str:
        value = row.get(key)
        return "" if value is None or pd.isna(value) else f"{float(value):.3f}"

    rows = []
    for _, row in tests.iterrows():
        tested = row["p"] is not None and not pd.isna(row["p"])
        rows.append(
            {
                "group": row["group"],
                "grouping": row["grouping"],
                "levels": str(int(row["levels"])),
                "n": int(row["n"]),
                "LR chi2": f"{row['lr']:.2f}" if tested else "",
                "df": str(int(row["df"])) if tested else "",
                "p": shown(row, "p") if tested else (row.get("note") or ""),
                "p (Holm)": shown(row, "p_holm") if tested else "",
                "p (chi2)": shown(row, "p_asymptotic") if tested else "",
            }
        )
    return pd.DataFrame(rows)
