"""The cross-experiment report (HTML + markdown) and its TRIPOD+AI methods section."""

from src.reporting.document import ExperimentResults, render_html, render_markdown, summary_table
from src.reporting.methods import tripod_ai_methods

__all__ = ["ExperimentResults", "render_html", "render_markdown", "summary_table", "tripod_ai_methods"]
