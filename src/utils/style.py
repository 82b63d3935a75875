"""One colour per cohort role, in every figure of the evaluation, the report and the patient card
(colour-blind-safe Okabe-Ito palette)."""

from __future__ import annotations

COHORT_COLOURS = {"discovery": "#0072B2", "external": "#E69F00", "control": "#009E73"}
OTHER_COLOUR = "#999999"


def cohort_colour(name: str) -> str:
    """The colour of a cohort group (``discovery (OOF)`` -> discovery's), grey for anything else."""
    return COHORT_COLOURS.get(name.split(" ")[0], OTHER_COLOUR)
