"""Estimators: covariate residualisation, the SVC pipeline and its Optuna search space."""

from src.models.pipeline import build_pipeline
from src.models.residualize import CovariateResidualizer
from src.models.search_space import SearchSpace

__all__ = ["CovariateResidualizer", "SearchSpace", "build_pipeline"]
