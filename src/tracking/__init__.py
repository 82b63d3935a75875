"""Everything MLflow: the store, training runs (parent + one child per outer fold), the locked model in
the registry, and evaluation runs. The science code (``src.validation``, ``src.evaluation``) never imports
this package."""

from src.tracking.store import TrackingSettings, open_experiment

__all__ = ["TrackingSettings", "open_experiment"]
