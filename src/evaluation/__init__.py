"""Evaluation of a locked model on independent cohorts: statistics, treatment specificity, harmonisation,
calibration and decision curves."""
