"""Linear SVC weights back-projected to the input features through the pipeline's linear steps."""

from __future__ import annotations

import numpy as np
from sklearn.pipeline import Pipeline

from src.models.linear import AffineDecision


def feature_weights(model: Pipeline | AffineDecision) -> np.ndarray:
    """Weight of each input feature in a fitted residualise -> scale -> [PCA] -> linear SVC model.

    The decision is ``w . pca(scale(residualise(x)))``; PCA and scaling are linear, so the weight on the
    residualised feature j is ``(w @ components)_j / scale_j``. Residualisation subtracts a covariate
    term from x, so the weight on x_j itself is the same (the covariates get ``-coef @ weight``).
    Positive weight = a larger feature value pushes towards the positive class (response).
    """
    if isinstance(model, AffineDecision):
        return model.weights
    return AffineDecision.from_pipeline(model).weights
