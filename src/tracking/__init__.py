"""Everything MLflow: the store, training runs (parent + one child per outer fold), the locked model in
the registry, and evaluation runs. The science code (everything below this layer: ``src.validation``,
``src.evaluation``, ...) never imports this package: ``tests/test_architecture.py`` checks it. ``mlflow`` is
imported inside the functions that log (0.9 s at start-up, ``benchmarks/import_time.py``), so a command with
``tracking.enabled=false`` never loads it."""

import os

# MLflow 3 sends usage telemetry by default; clinical servers are air-gapped and runs must not phone home.
# Set MLFLOW_DISABLE_TELEMETRY=false explicitly to allow it.
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
# model downloads (hash checks) are small and frequent: no progress bar in the logs
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

from src.tracking.store import TrackingSettings, open_experiment

__all__ = ["TrackingSettings", "open_experiment"]
