"""A one-page, self-contained HTML card per scored patient (figures inlined as PNG, no external files).

The card shows what ``predictions.csv`` holds for the patient, drawn: the calibrated probability with the
fold models' interval and the decision threshold, the warnings, the regions pushing the score towards response
and towards non-response (linear models: each region's contribution, see
:meth:`~src.validation.ensemble.EnsembleModel.contributions`), those contributions on a brain map, and where
the prediction came from (model version and hash, input file and hash, code commit).
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
from collections.abc import Iterator, Mapping, Sequence

import matplotlib
from nilearn import plotting

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import nibabel as nib  # noqa: E402
import pandas as pd  # noqa: E402

from src.data.templates import mni152_template_2mm  # noqa: E402
from src.prediction.score import call_of  # noqa: E402

RESPONSE, NON_RESPONSE = "#b2182b", "#2166ac"  # one colour per direction, on every panel
BARS = 8  # regions shown per direction

STYLE = """
body{font-family:system-ui,sans-serif;max-width:900px;margin:24px auto;color:#222}
h1{font-size:1.4em;margin-bottom:0} .sub{color:#666;margin-top:4px}
.big{font-size:2.2em;font-weight:600} .warn{background:#fff4e5;border-left:4px solid #e08a00;padding:8px 12px}
.ok{color:#2a7d2a} table{border-collapse:collapse;font-size:.85em}
td{padding:2px 10px 2px 0;vertical-align:top} img{max-width:100%} .note{color:#666;font-size:.85em}
"""


def _png(fig: plt.Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="" src="data:image/png;base64,{base64.b64encode(buffer.getvalue()).decode()}">'


def probability_figure(probability: float, low: float, high: float, threshold: float) -> str:
    """P(response) on [0, 1]: the point, the fold models' interval and the decision threshold."""
    fig, ax = plt.subplots(figsize=(7, 1.1))
    ax.axvspan(threshold, 1, color=RESPONSE, alpha=0.08)
    ax.axvspan(0, threshold, color=NON_RESPONSE, alpha=0.08)
    ax.plot([low, high], [0, 0], color="#333", linewidth=6, solid_capstyle="butt", alpha=0.45)
    ax.plot([probability], [0], "o", color=RESPONSE if probability >= threshold else NON_RESPONSE, ms=12)
    ax.axvline(threshold, color="#555", linestyle="--", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(-1, 1), yticks=[], xlabel="P(response)")
    for side in ("left", "right", "top"):
        ax.spines[side].set_visible(False)
    return _png(fig)


def contribution_figure(contributions: pd.Series, names: Mapping[str, str]) -> str:
    """The regions pushing the decision score most towards response (right) and non-response (left)."""
    ordered = contributions.sort_values()
    shown = pd.concat(
        [ordered.head(BARS)[ordered.head(BARS) < 0], ordered.tail(BARS)[ordered.tail(BARS) > 0]]
    )
    shown = shown[~shown.index.duplicated()]
    fig, ax = plt.subplots(figsize=(7, 0.28 * len(shown) + 0.9))
    ax.barh(
        [names.get(c, c) for c in shown.index],
        shown.to_numpy(),
        color=[RESPONSE if v > 0 else NON_RESPONSE for v in shown],
    )
    ax.axvline(0, color="#333", linewidth=0.8)
    ax.set_xlabel("contribution to the decision score (right: towards response)")
    ax.tick_params(axis="y", labelsize=8)
    return _png(fig)


@contextlib.contextmanager
def cached_plot_background() -> Iterator[None]:
    """While plotting, nilearn's 2 mm MNI152 template (its plots' background) is the copy kept on disk.

    nilearn's template object loads ``load_mni152_template(resolution=2)``, which it recomputes from the 1 mm
    template in every process and again for copies of the object made while plotting (3-6 s, most of a
    one-patient ``src.predict``). Inside this block its plotting module's loader returns the cached copy for
    resolution 2 (the same voxels: tests/test_predict.py) and nilearn's own loader otherwise; afterwards the
    loader is nilearn's again. A nilearn without that module or loader is left alone.
    """
    try:
        from nilearn.plotting.image import utils
    except ImportError:  # pragma: no cover - another nilearn layout: it loads the template itself
        yield
        return
    loader = getattr(utils, "load_mni152_template", None)
    if loader is None:  # pragma: no cover
        yield
        return

    def cached(resolution: float | None = None) -> nib.Nifti1Image:
        return mni152_template_2mm() if resolution == 2 else loader(resolution=resolution)

    utils.load_mni152_template = cached
    try:
        yield
    finally:
        utils.load_mni152_template = loader


def brain_figure(image: nib.Nifti1Image) -> str:
    """The contributions painted on the brain (nilearn's bundled MNI152 template as background)."""
    with cached_plot_background():
        display = plotting.plot_stat_map(
            image,
            display_mode="z",
            cut_coords=6,
            cmap="RdBu_r",
            colorbar=True,
            annotate=False,
            draw_cross=False,
        )
    figure = display.frame_axes.figure
    return _png(figure)


def headline(row: Mapping[str, object], threshold: float) -> str:
    """``predicted responder`` / ``predicted non-responder``, or ``uncertain (leans responder)``: the row's
    ``call`` (:func:`~src.prediction.score.call_of`, what predictions.csv holds), worded for a title."""
    call = row.get("call") or call_of(
        str(row["prediction"]), float(row["interval_low"]), float(row["interval_high"]), threshold
    )
    return str(call) if str(call).startswith("uncertain") else f"predicted {call}"


def patient_card(
    row: Mapping[str, object],
    *,
    threshold: float,
    coverage: float,
    provenance: Sequence[tuple[str, str]],
    contributions: pd.Series | None = None,
    names: Mapping[str, str] | None = None,
    brain: nib.Nifti1Image | None = None,
    attribution: str = "",
    note: str = "",
    simulated: bool = False,
    model_card: str | None = None,
    decision_zero: float | None = None,
) -> str:
    """The HTML card of one row of :func:`~src.prediction.score.predict_patients` (with
    :func:`~src.prediction.score.top_regions` columns when given); ``contributions`` are the patient's
    per-feature values of :func:`~src.prediction.score.local_attribution`, ``attribution`` says how they
    were computed, ``brain`` is them painted on the brain. ``simulated``: the model was trained on the
    embedded simulated cohorts (said first, in the card's warning colour). ``model_card``: the model card's
    address relative to the card (what the model is for, how it performed, its limits), linked above the
    provenance; None: the model has no card yet (said). ``decision_zero``: P(response) at a decision score
    of 0 (where the cohort metrics put the boundary), said beside the card's own rule."""
    esc = html.escape
    probability = float(row["probability"])
    warnings = [w for w in str(row.get("warnings") or "").split("; ") if w]
    parts = []
    if simulated:
        parts.append(
            '<div class="warn"><b>Model trained on simulated data.</b> This model was trained on '
            "simulated cohorts (the embedded default or the example study, marked by the simulator: a "
            "planted signature), not on patients: this card shows what the tool does and says nothing about "
            "this person.</div>"
        )
    parts += [
        f"<h1>{esc(str(row['participant_id']))}: {esc(headline(row, threshold))}</h1>",
        '<p class="sub">Response to one IV ketamine infusion (&ge; 50 % MADRS reduction at 24 h), from '
        "pre-treatment grey-matter volume. Research use only: not a clinical decision tool.</p>",
        f'<p><span class="big">P(response) = {probability:.2f}</span> &nbsp; '
        f"{int(round(100 * coverage))} % of the fold models: {float(row['interval_low']):.2f}"
        f"&ndash;{float(row['interval_high']):.2f} &nbsp; decision threshold {threshold:.2f} &nbsp; "
        f"fold models agreeing: {float(row['fold_agreement']):.0%}</p>",
        probability_figure(probability, float(row["interval_low"]), float(row["interval_high"]), threshold),
    ]
    if row.get("predicted_outcome") is not None and pd.notna(row.get("predicted_outcome")):
        parts += [
            f'<p><span class="big">Predicted outcome = {float(row["predicted_outcome"]):.1f}</span> &nbsp; '
            f"{int(round(100 * coverage))} % of the fold models: {float(row['predicted_low']):.1f}"
            f"&ndash;{float(row['predicted_high']):.1f} (the percentage MADRS reduction unless the model "
            "was trained on another outcome)</p>",
            '<p class="note">A regression model: P(response) is the probability that the outcome reaches '
            "the responder threshold given this prediction, from the spread of the out-of-fold residuals in "
            "the discovery cohort (normal, constant spread assumed). Interval: the spread of the "
            "cross-validation fold models, not a confidence interval.</p>",
        ]
    else:
        parts.append(
            '<p class="note">Probability: Platt calibration fitted on the out-of-fold scores of the '
            "discovery cohort. Interval: the spread of the cross-validation fold models (how much models "
            "trained on different subsets disagree), not a confidence interval. The call: responder when "
            f"P(response) &ge; {threshold:.2f}; &ldquo;uncertain&rdquo; when the fold models&rsquo; interval "
            "reaches across that threshold (the words of predictions.csv&rsquo;s <code>call</code>). The "
            "cohort metrics (BAC, sensitivity, specificity) count a positive decision score instead, which "
            f"calibration puts at P = {decision_zero:.2f}: a patient between the two is called differently "
            "there.</p>"
            if decision_zero is not None
            else ""
        )
    if warnings:
        parts.append('<div class="warn"><b>Check before use</b><ul>')
        parts += [f"<li>{esc(w)}</li>" for w in warnings]
        parts.append("</ul></div>")
    else:
        parts.append(
            '<p class="ok">No out-of-distribution warning (covariates, distance to training, site).</p>'
        )
    parts.append(
        '<p class="note">Not checked: a left-right mirrored scan (a flipped header). Mirroring swaps the '
        "left and right regions; on a symmetric template this looks ordinary, so no warning can see it. "
        "Check the orientation of the scan before trusting this card.</p>"
    )
    if row.get("contribution_imaging") is not None and row.get("contribution_clinical") is not None:
        imaging, clinical = float(row["contribution_imaging"]), float(row["contribution_clinical"])
        parts.append(
            "<h2>Each modality's share</h2>"
            f"<p>Grey-matter volume: <b>{imaging:+.3f}</b> &nbsp; clinical predictors: <b>{clinical:+.3f}</b>"
            " (contributions to the decision score; positive: towards response).</p>"
        )
    if contributions is not None:
        parts.append("<h2>Regions behind the prediction</h2>")
        parts.append(contribution_figure(contributions, names or {}))
        for key, label in (
            ("towards_response", "Towards response"),
            ("towards_non_response", "Towards non-response"),
        ):
            if row.get(key):
                parts.append(f"<p><b>{label}:</b> {esc(str(row[key]))}</p>")
        parts.append(f'<p class="note">{esc(attribution)}</p>')
        if brain is not None:
            parts.append(brain_figure(brain))
            parts.append('<p class="note">The same contributions on the brain (red: towards response).</p>')
    if note:
        parts.append(f'<p class="note">{esc(note)}</p>')
    if model_card:
        parts.append(
            f'<p>Model card: <a href="{esc(model_card)}">{esc(model_card)}</a> (intended use, population, '
            "performance with CIs, subgroups, limitations).</p>"
        )
    else:
        parts.append('<p class="note">No model card yet: `python -m src.evaluate` writes it.</p>')
    parts.append("<h2>Provenance</h2><table>")
    parts += [f"<tr><td>{esc(k)}</td><td>{esc(v)}</td></tr>" for k, v in provenance]
    parts.append("</table>")
    title = esc(f"{row['participant_id']}: ketamine response prediction")
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>'
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
