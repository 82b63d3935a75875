"""Repeated nested cross-validation, metrics, permutation tests and the locked ensemble model."""

from src.validation.ensemble import EnsembleModel, load_model
from src.validation.metrics import binary_metrics
from src.validation.nested_cv import CVConfig, NestedCVResult, run_nested_cv
from src.validation.permutation import PermutationResult, permutation_test

__all__ = [
    "CVConfig",
    "EnsembleModel",
    "NestedCVResult",
    "PermutationResult",
    "binary_metrics",
    "load_model",
    "permutation_test",
    "run_nested_cv",
]
