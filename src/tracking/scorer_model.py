"""MLflow "model from code" entry of :class:`~src.tracking.scorer.PatientScorer` (runs when it loads)."""

import mlflow

from src.tracking.scorer import PatientScorer

mlflow.models.set_model(PatientScorer())
