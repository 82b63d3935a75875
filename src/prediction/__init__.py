"""Scoring new patients (no outcome needed) with the locked ensemble."""

from src.prediction.inputs import patient_features, read_patient_table
from src.prediction.score import predict_patients

__all__ = ["patient_features", "predict_patients", "read_patient_table"]
