"""Scoring new patients (no outcome needed) with the locked ensemble."""

from src.prediction.score import predict_patients, read_patient_table

__all__ = ["predict_patients", "read_patient_table"]
