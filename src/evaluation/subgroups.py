"""For whom does the model work: performance per subgroup, its heterogeneity test and the forest plot.

Per cohort group (the discovery cohort's out-of-fold ensemble, the pooled external and control cohorts) and
per grouping (sex, site, age band, baseline-severity tertile and every participants.tsv column listed in
``evaluation.subgroups.columns``): n, responders, BAC, sensitivity, specificity, AUC and calibration-in-the-
large (observed responder fraction vs mean predicted P(response)) per level, with stratified-bootstrap 95 %
intervals (:func:`~src.evaluation.statistics.bootstrap_ci`). A level with fewer than ``min_n`` subjects, or
with one class only, is reported as too small and not computed. The point estimates per level come from
fairlearn's :class:`~fairlearn.metrics.MetricFrame` (the kept library for metrics disaggregated by a group).

The heterogeneity test of a grouping is a likelihood-ratio test in a logistic model of response: ``response
~ score + level`` against ``response ~ score * level`` (statsmodels), over the levels large enough to be
reported; a small p says the score's relation to response differs between the levels.

Cut points: age bands are fixed edges in years (``age_bands``); the severity tertiles and the tertiles of a
numeric listed column with more than ``max_levels`` distinct values use the discovery cohort's tertiles for
every group, so a level means the same patients' range in each cohort.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from src.evaluation.statistics import bootstrap_ci
from src.validation.metrics import binary_metrics
from src.validation.seeds import Stream, derive_seed

CELL_METRICS = ("bac", "sensitivity", "specificity", "auc")
TOO_SMALL = "too small"
SUBGROUPS_DIR = "subgroups"  # evaluate/subgroups/


def age_band_labels(age: pd.Series, edges: Sequence[float]) -> pd.Series:
    """``age`` cut at ``edges`` (years): ``<30``, ``30-44``, ``>=45`` for edges (30, 45)."""
    edges = sorted(float(e) for e in edges)
    labels = [f"<{edges[0]:g}"]
    labels += [f"{low:g}-{high - 1:g}" for low, high in zip(edges[:-1], edges[1:], strict=True)]
    labels.append(f">={edges[-1]:g}")
    return pd.cut(age.astype(float), [-np.inf, *edges, np.inf], right=False, labels=labels).astype(str)


def tertile_cuts(values: pd.Series) -> tuple[float, float]:
    """The 1/3 and 2/3 quantiles of ``values`` (the discovery cohort's): the cut points of the tertiles."""
    low, high = np.nanquantile(pd.to_numeric(values, errors="coerce").to_numpy(float), [1 / 3, 2 / 3])
    return float(low), float(high)


def tertile_labels(values: pd.Series, cuts: tuple[float, float]) -> pd.Series:
    """``values`` in the tertiles of ``cuts``: ``T1 (<=a)``, ``T2 (a-b]``, ``T3 (>b)``; NaN stays NaN."""
    low, high = cuts
    labels = [f"T1 (<={low:.3g})", f"T2 ({low:.3g}-{high:.3g}]", f"T3 (>{high:.3g})"]
    numeric = pd.to_numeric(values, errors="coerce")
    out = pd.cut(numeric, [-np.inf, low, high, np.inf], labels=labels).astype(object)
    return out.where(numeric.notna(), None)


def grouping_columns(
    table: pd.DataFrame,
    participants: pd.DataFrame | None,
    *,
    columns: Sequence[str],
    age_bands: Sequence[float],
    severity: str | None,
    cuts: Mapping[str, tuple[float, float]],
) -> pd.DataFrame:
    """One column per grouping, one row per row of ``table`` (which holds ``participant_id``, ``sex``,
    ``site`` and ``age``): the built-in groupings and ``columns`` from ``participants`` (participants.tsv,
    joined on ``participant_id``). ``cuts``: tertile cut points per numeric grouping (``severity`` and
    listed numeric columns), from the discovery cohort (:func:`discovery_cuts`)."""
    out = pd.DataFrame(index=table.index)
    for name in ("sex", "site"):
        if name in table:
            out[name] = table[name].astype(str)
    if "age" in table:
        out["age_band"] = age_band_labels(table["age"], age_bands)
    extra = [c for c in ([severity] if severity else []) + list(columns) if c]
    if extra and participants is not None:
        joined = table[["participant_id"]].merge(
            participants[["participant_id", *dict.fromkeys(extra)]], on="participant_id", how="left"
        )
        joined.index = table.index
        if severity and severity in joined and "severity" in cuts:
            out["severity"] = tertile_labels(joined[severity], cuts["severity"])
        for column in columns:
            if column in cuts:
                out[column] = tertile_labels(joined[column], cuts[column])
            else:
                out[column] = joined[column].map(_level_text)
    return out


def _level_text(value: Any) -> str | None:
    """A level as text: None for a missing value, ``1`` (not ``1.0``) for a whole number read as float (an
    integer-coded column with empty cells)."""
    if pd.isna(value):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def discovery_cuts(
    participants: pd.DataFrame, columns: Sequence[str], severity: str | None, max_levels: int
) -> dict[str, tuple[float, float]]:
    """Tertile cut points from the discovery cohort's participants.tsv: the severity column's, and each listed
    numeric column's with more than ``max_levels`` distinct values (fewer: its values are the levels)."""
    cuts = {}
    if severity and severity in participants:
        cuts["severity"] = tertile_cuts(participants[severity])
    for column in columns:
        values = participants[column]
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().sum() == values.notna().sum() and numeric.nunique() > max_levels:
            cuts[column] = tertile_cuts(numeric)
    return cuts


def check_columns(participants: pd.DataFrame | None, columns: Sequence[str], where: str) -> None:
    """Every listed subgroup column is in the cohort's participants.tsv (one error naming file and column)."""
    from src.utils.errors import UserInputError

    if participants is None:
        if columns:
            raise UserInputError(
                f"evaluation.subgroups.columns: {list(columns)} listed but {where} not found"
            )
        return
    missing = [c for c in columns if c not in participants.columns]
    if missing:
        raise UserInputError(
            f"evaluation.subgroups.columns: {missing} not in {where} (columns: {list(participants.columns)})"
        )


def _cell_metrics(
    y: np.ndarray, decision: np.ndarray, probability: np.ndarray, groups: pd.Series
) -> pd.DataFrame:
    """Per level of ``groups``: n, responders, the binary metrics and calibration, by fairlearn's MetricFrame
    (NaN where a level has one class only)."""
    from fairlearn.metrics import MetricFrame  # lazy: only the evaluation needs fairlearn

    def metric(name: str) -> Any:
        return lambda y_true, y_score: binary_metrics(y_true, y_score)[name]

    metrics: dict[str, Any] = {name: metric(name) for name in CELL_METRICS}
    metrics["n"] = lambda y_true, y_score: len(y_true)
    metrics["responders"] = lambda y_true, y_score: int(np.sum(y_true))
    metrics["observed"] = lambda y_true, y_score: float(np.mean(y_true))
    metrics["mean_predicted"] = lambda y_true, y_score, probability: float(np.mean(probability))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # one-class levels: NaN metrics, reported as too small
        frame = MetricFrame(
            metrics=metrics,
            y_true=y,
            y_pred=decision,
            sensitive_features=groups.rename("level"),
            sample_params={"mean_predicted": {"probability": probability}},
        )
    cells = frame.by_group.reset_index()
    return cells.iloc[sorted(range(len(cells)), key=lambda i: _level_order(cells["level"].iloc[i]))]


def _level_order(level: str) -> tuple[float, str]:
    """Levels in reading order: by the first number in the label (age bands ``<30``, ``30-44``, ``>=45``;
    tertiles ``T1 (<=a)``...), else alphabetically."""
    import re

    if level.startswith("<"):
        return (-np.inf, level)
    match = re.search(r"-?\d+(\.\d+)?", level.removeprefix("T"))
    return (float(match.group()) if match and not level.startswith("T") else np.inf, level)


def subgroup_table(
    y: np.ndarray,
    decision: np.ndarray,
    probability: np.ndarray,
    groupings: pd.DataFrame,
    *,
    min_n: int,
    n_boot: int,
    seed: int,
    group: str,
) -> pd.DataFrame:
    """One row per (grouping, level) of one cohort group: n, responders, BAC/sens/spec/AUC with bootstrap 95 %
    intervals, observed vs mean predicted P(response), and ``status`` (``ok`` or ``too small``: fewer than
    ``min_n`` subjects or a single class, metrics left empty). Subjects with no value of a grouping are left
    out of that grouping."""
    y, decision, probability = (np.asarray(a) for a in (y, decision, probability))
    rows = []
    for grouping in groupings.columns:
        values = groupings[grouping]
        known = values.notna().to_numpy()
        if not known.any():
            continue
        cells = _cell_metrics(y[known], decision[known], probability[known], values[known].astype(str))
        for cell in cells.to_dict("records"):
            n, responders = int(cell["n"]), int(cell["responders"])
            row: dict[str, Any] = {"group": group, "grouping": grouping, "level": cell["level"], "n": n}
            row["responders"] = responders
            small = n < min_n or responders in (0, n)
            row["status"] = TOO_SMALL if small else "ok"
            if not small:
                member = known & (values.astype(str) == cell["level"]).to_numpy()
                ci = bootstrap_ci(y[member], decision[member], n=n_boot, seed=seed)
                for name in CELL_METRICS:
                    row[name] = float(cell[name])
                    row[f"{name}_low"], row[f"{name}_high"] = ci[name]
                row["observed"] = float(cell["observed"])
                row["mean_predicted"] = float(cell["mean_predicted"])
            rows.append(row)
    return pd.DataFrame(rows)


# The likelihood-ratio statistic's chi-squared distribution is asymptotic: in cells of 10-30 patients it is
# anti-conservative (on independent null data, label permutations at the default's cell sizes put 10 % of
# the statistics above the nominal 5 % cut). Its p is therefore a parametric bootstrap under the fitted null
# model (Davison & Hinkley 1997, ch. 4) unless every level holds at least LARGE_CELL patients of each class,
# where the asymptotic p is used (the rule; both p-values are reported).
LARGE_CELL = 50
LR_BOOTSTRAP = 199


def _designs(score: np.ndarray, levels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(null, full) design matrices: ``1 + score + level dummies`` and the same plus ``score x dummies``."""
    names = sorted(set(levels))
    dummies = np.column_stack([(levels == name).astype(float) for name in names[1:]])
    null = np.column_stack([np.ones(len(score)), score, dummies])
    return null, np.column_stack([null, score[:, None] * dummies])


def _log_likelihood(y: np.ndarray, design: np.ndarray) -> float:
    import statsmodels.api as sm  # lazy: statsmodels loads in ~1 s

    return float(sm.Logit(y, design).fit(disp=0, method="newton", maxiter=100).llf)


def _lr_statistic(y: np.ndarray, null: np.ndarray, full: np.ndarray) -> float:
    return max(2.0 * (_log_likelihood(y, full) - _log_likelihood(y, null)), 0.0)


def heterogeneity_test(
    y: np.ndarray, score: np.ndarray, levels: pd.Series, seed: int = 0, n_bootstrap: int = LR_BOOTSTRAP
) -> dict[str, Any]:
    """Likelihood-ratio test of the score x level interaction in a logistic model of response.

    ``response ~ score + level`` (null) against ``response ~ score * level``: the statistic has (levels - 1)
    degrees of freedom. The score is standardised first (its scale does not change the test). ``p`` is the
    parametric-bootstrap p (``n_bootstrap`` responses drawn from the fitted null model, both models refitted
    to each; ``(1 + #{LR* >= LR}) / (n_bootstrap + 1)``) unless every level holds :data:`LARGE_CELL`
    patients of each class, where it is the asymptotic chi-squared p; ``p_asymptotic`` is always the latter
    and ``method`` says which ``p`` is. Returns ``lr``, ``df``, ``p``, ``p_asymptotic``, ``method`` and
    ``levels``; ``p`` is None with a ``note`` when the models cannot be fitted (one level, separation)."""
    from scipy.stats import chi2

    y = np.asarray(y, int)
    level = levels.astype(str).to_numpy()
    k = len(set(level))
    result: dict[str, Any] = {
        "levels": int(k),
        "lr": None,
        "df": int(max(k - 1, 0)),
        "p": None,
        "p_asymptotic": None,
        "method": None,
    }
    if k < 2:
        return {**result, "note": "one level"}
    z = np.asarray(score, float)
    z = (z - z.mean()) / (z.std(ddof=1) or 1.0)
    null, full = _designs(z, level)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            import statsmodels.api as sm

            fitted_null = sm.Logit(y, null).fit(disp=0, method="newton", maxiter=100)
            lr = max(2.0 * (_log_likelihood(y, full) - float(fitted_null.llf)), 0.0)
            asymptotic = float(chi2.sf(lr, k - 1))
            counts = pd.crosstab(level, y)
            large = counts.shape[1] == 2 and int(counts.to_numpy().min()) >= LARGE_CELL
            if large:
                return {
                    **result,
                    "lr": float(lr),
                    "p": asymptotic,
                    "p_asymptotic": asymptotic,
                    "method": "chi2",
                }
            rng = np.random.default_rng(seed)
            probability = fitted_null.predict(null)
            exceed, done = 0, 0
            for _ in range(n_bootstrap):
                drawn = (rng.random(len(y)) < probability).astype(int)
                try:
                    exceed += _lr_statistic(drawn, null, full) >= lr - 1e-9
                    done += 1
                except Exception:  # a draw the models cannot fit (separation): not counted
                    continue
    except Exception as err:  # statsmodels: PerfectSeparationError, singular matrix (LinAlgError)
        return {**result, "note": f"not estimable ({type(err).__name__})"}
    if done < n_bootstrap // 2:
        return {**result, "lr": float(lr), "p_asymptotic": asymptotic, "note": "bootstrap not estimable"}
    return {
        **result,
        "lr": float(lr),
        "p": (1 + exceed) / (done + 1),
        "p_asymptotic": asymptotic,
        "method": f"parametric bootstrap ({done})",
    }


def heterogeneity_table(
    y: np.ndarray,
    score: np.ndarray,
    groupings: pd.DataFrame,
    cells: pd.DataFrame,
    *,
    group: str,
    seed: int = 0,
) -> pd.DataFrame:
    """The heterogeneity test of each grouping of one cohort group, over its levels reported as ``ok``
    (each bootstrap seeded from ``seed``, the group and the grouping's position), with Holm's adjustment
    over the groupings tested (``p_holm``)."""
    from statsmodels.stats.multitest import multipletests

    rows = []
    for i, grouping in enumerate(groupings.columns):
        ok = cells.query("grouping == @grouping and status == 'ok'")["level"].tolist() if len(cells) else []
        values = groupings[grouping]
        member = values.notna().to_numpy() & values.astype(str).isin(ok).to_numpy()
        test = heterogeneity_test(
            np.asarray(y)[member],
            np.asarray(score)[member],
            values[member],
            seed=derive_seed(seed, Stream.HETEROGENEITY, zlib.crc32(group.encode()), i),
        )
        rows.append({"group": group, "grouping": grouping, "n": int(member.sum()), **test})
    table = pd.DataFrame(rows)
    # many groupings of one cohort group: Holm's adjustment over those tested (what the card judges by)
    tested = table["p"].notna() if len(table) else pd.Series(dtype=bool)
    table["p_holm"] = np.nan
    if tested.any():
        table.loc[tested, "p_holm"] = multipletests(table.loc[tested, "p"].astype(float), method="holm")[1]
    return table


def forest_figure(path: Path, table: pd.DataFrame) -> None:
    """AUC and BAC (columns) with their 95 % intervals per subgroup level, one row of panels per cohort group;
    levels too small to report are listed without an estimate. Chance (0.5) is the dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(dict.fromkeys(table["group"]))
    sizes = [int((table["group"] == g).sum()) for g in groups]
    fig, axes = plt.subplots(
        len(groups),
        2,
        figsize=(9, sum(0.26 * n + 0.9 for n in sizes)),
        squeeze=False,
        sharex=True,
        gridspec_kw={"height_ratios": sizes},
    )
    for gi, group in enumerate(groups):
        rows = table[table["group"] == group].reset_index(drop=True)
        labels = [f"{r.grouping}: {r.level} (n={r.n})" for r in rows.itertuples()]
        ypos = np.arange(len(rows))[::-1]
        ok = (rows["status"] == "ok").to_numpy()
        for mi, (metric, title) in enumerate([("auc", "AUC"), ("bac", "BAC")]):
            ax = axes[gi, mi]
            if ok.any():
                est = rows.loc[ok, metric].to_numpy(float)
                err = np.vstack([est - rows.loc[ok, f"{metric}_low"], rows.loc[ok, f"{metric}_high"] - est])
                ax.errorbar(est, ypos[ok], xerr=np.clip(err, 0, None), fmt="o", color="#1f77b4", capsize=2)
            for y_small in ypos[~ok]:
                ax.text(0.5, y_small, TOO_SMALL, ha="center", va="center", fontsize=7, color="grey")
            ax.axvline(0.5, color="grey", ls="--", lw=0.8)
            ax.set_xlim(0, 1)
            ax.set_ylim(-0.7, len(rows) - 0.3)
            ax.set_yticks(ypos)
            ax.set_yticklabels(labels if mi == 0 else [], fontsize=7)
            ax.set_title(f"{group}: {title}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def read_participants(folder: Path) -> pd.DataFrame | None:
    """A cohort's participants.tsv (``participant_id`` as text); None when the folder has none (feature
    tables built elsewhere: the subgroups then come from the tables' own columns)."""
    path = folder / "participants.tsv"
    if not path.is_file():
        return None
    return pd.read_csv(path, sep="\t", dtype={"participant_id": str})


def evaluate_subgroups(
    scored: Mapping[str, tuple[pd.DataFrame, np.ndarray, np.ndarray, np.ndarray]],
    participants: Mapping[str, pd.DataFrame],
    settings: Any,
    severity: str | None,
    *,
    n_boot: int,
    seed: int,
) -> dict[str, pd.DataFrame]:
    """Subgroup performance and heterogeneity of each cohort group.

    ``scored``: group -> (table with ``participant_id``/``sex``/``site``/``age``, labels, decision scores,
    P(response)); ``participants``: group -> its cohorts' participants.tsv rows (``discovery``'s tertile
    cut points serve every group; a group absent: its table's own columns only); ``settings``:
    :class:`~src.config.settings.SubgroupSettings`; ``severity``: the baseline-severity column (None: no
    severity grouping). Returns ``{"cells": one row per (group, grouping, level), "heterogeneity": one row
    per (group, grouping)}``."""
    columns = list(settings.columns)
    severity = severity if settings.severity else None
    first = participants.get("discovery")
    cuts = {} if first is None else discovery_cuts(first, columns, severity, settings.max_levels)
    cells, tests = [], []
    for group, (table, y, decision, probability) in scored.items():
        groupings = grouping_columns(
            table.reset_index(drop=True),
            participants.get(group),
            columns=columns,
            age_bands=settings.age_bands,
            severity=severity,
            cuts=cuts,
        )
        table_cells = subgroup_table(
            y, decision, probability, groupings, min_n=settings.min_n, n_boot=n_boot, seed=seed, group=group
        )
        cells.append(table_cells)
        tests.append(heterogeneity_table(y, decision, groupings, table_cells, group=group, seed=seed))
    return {
        "cells": pd.concat(cells, ignore_index=True),
        "heterogeneity": pd.concat(tests, ignore_index=True),
    }


def subgroup_metrics(cells: pd.DataFrame, heterogeneity: pd.DataFrame) -> dict[str, dict[str, float]]:
    """MLflow metrics per cohort group: ``subgroup_<metric>_<grouping>_<level>`` (levels reported as ok) and
    ``heterogeneity_p_<grouping>``; names keep MLflow's allowed characters only."""

    def clean(text: str) -> str:
        return "".join(c if c.isalnum() or c in "_-." else "_" for c in str(text)).strip("_")

    out: dict[str, dict[str, float]] = {}
    for row in cells[cells["status"] == "ok"].itertuples():
        for metric in ("bac", "auc"):
            key = f"subgroup_{metric}_{clean(row.grouping)}_{clean(row.level)}"
            out.setdefault(row.group, {})[key] = float(getattr(row, metric))
    for row in heterogeneity.itertuples():
        if row.p is not None and not pd.isna(row.p):
            out.setdefault(row.group, {})[f"heterogeneity_p_{clean(row.grouping)}"] = float(row.p)
    return out
