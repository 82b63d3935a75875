"""The MLflow pyfunc that serves patients: probability, interval, decision, out-of-distribution notes.

``mlflow models serve`` of the training run's ``scorer`` model answers an ``/invocations`` request (a table
of patients: the model's covariates and feature columns, ``participant_id`` optional) with one row per
patient, the same numbers as ``python -m src.predict`` (:func:`~src.prediction.score.predict_patients`).

It is an MLflow "model from code" (``scorer_model.py`` beside this file), not a pickled object: loading it
runs this project's code shipped in the model (``code_paths``: ``src/``), and reads the locked ensemble from
the model's ``model.npz``/``model.skops`` artifact with its sha256 verified, so the served ensemble is the one
training recorded. Serving therefore executes the code stored with the model: serve models from your own
registry only.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from mlflow.pyfunc import PythonModel

SETTINGS = ("threshold", "coverage", "distance_percentile")


class PatientScorer(PythonModel):
    """``predict(table, params)`` -> one row per patient (see :func:`predict_patients`); ``params`` may set
    ``threshold``, ``coverage`` and ``distance_percentile`` (defaults: the training config's ``predict``)."""

    def load_context(self, context: Any) -> None:
        """Load and verify the locked model file from the MLflow artifacts."""
        # lazy: MLflow loads this model-from-code file before the project is on its path
        from src.validation.ensemble import read_model_file

        config = context.model_config
        self.model = read_model_file(context.artifacts["model"], config["model_sha256"])
        self.settings = {key: float(config[key]) for key in SETTINGS}

    # no return annotation on purpose: MLflow reads predict's type hints to infer the model signature, and the
    # scorer's signature is the one logged from the training table
    def predict(self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None):  # noqa: ANN201
        """P(response), decision and the fold models' interval for each row of a feature table."""
        # lazy: MLflow loads this model-from-code file before the project is on its path
        from src.prediction.score import predict_patients

        table = pd.DataFrame(model_input)
        if "participant_id" not in table:
            table.insert(0, "participant_id", [f"row-{i}" for i in range(len(table))])
        settings = {**self.settings, **{k: float(v) for k, v in (params or {}).items() if k in SETTINGS}}
        return predict_patients(self.model, table, where="request", **settings)
