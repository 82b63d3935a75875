"""Result tables as text: every table of the evaluation, the console and the report formats its numbers the
same way (counts as integers, BAC/sensitivity/specificity to 1 decimal, AUC, R², r and calibration slopes to
2, p-values to 3 or '<0.001', missing as '–')."""

from __future__ import annotations

from typing import Any

import pandas as pd

INTEGER_COLUMNS = frozenset({"n", "responders", "paper n", "rank"})
TWO_DECIMALS = frozenset({"R²", "r", "rho", "calibration slope", "discovery R²", "discovery r"})


def _fmt(value: Any, column: str) -> str:
    """Counts as integers, p-values to 3 decimals, AUCs to 2, weights to 3 significant digits, percentages
    and CV-ratios to 1 decimal; missing as '–'."""
    if value is None or (isinstance(value, float) and pd.isna(value)):
        return "–"
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return str(value)
    if column in INTEGER_COLUMNS:
        return str(int(value))
    if column.endswith(" p") or " p " in f"{column} " or column.startswith("p "):
        return "<0.001" if 0 < value < 0.001 else f"{value:.3f}"
    if "AUC" in column:
        return f"{value:.2f}"
    if column in TWO_DECIMALS:  # a continuous outcome's correlations, R² and calibration slope
        return f"{value:.2f}"
    if column in ("q_value", "p_perm", "q_perm"):
        return "<0.001" if 0 < value < 0.001 else f"{value:.3f}"
    if column in ("mean_weight", "sign_consistency", "standardised_weight", "se"):
        return f"{value:.3g}"
    return f"{value:.1f}"


def _formatted(table: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({c: [_fmt(v, c) for v in table[c]] for c in table.columns})


def markdown_table(table: pd.DataFrame) -> str:
    """A GitHub markdown table (``DataFrame.to_markdown``) of the formatted values (counts as integers,
    BAC/sens/spec to 1 decimal, AUC to 2, p-values to 3 or '<0.001'; missing as '–')."""
    return _formatted(table).to_markdown(index=False, tablefmt="github", disable_numparse=True)


def html_table(table: pd.DataFrame) -> str:
    """A DataFrame as an escaped HTML table with the project's number formatting."""
    return _formatted(table).to_html(index=False, border=0, classes="table", escape=True)
