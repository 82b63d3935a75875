"""Cohorts: the BIDS-style data contract, its loader and the simulated default cohorts."""

from src.data.loader import Cohort, CohortError, load_cohort, load_regional_table

__all__ = ["Cohort", "CohortError", "load_cohort", "load_regional_table"]
