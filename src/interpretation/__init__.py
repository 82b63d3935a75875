"""Interpretation: model weights mapped back to input features, regions and brain maps."""

from src.interpretation.weights import feature_weights

__all__ = ["feature_weights"]
