"""Linear SVC weights back-projected to the input features through the pipeline's linear steps."""

from __future__ import annotations

import numpy as np
from sklearn.pipeline import Pipeline


def feature_weights(pipeline: Pipeline) -> np.ndarray:
    """Weight of each input feature in a fitted residualise -> scale -> [PCA] -> linear SVC pipeline.

    The decision is ``w . pca(scale(residualise(x)))``; PCA and scaling are linear, so the weight on the
    residualised feature j is ``(w @ components)_j / scale_j``. Residualisation subtracts a covariate
    term from x, so the weight on x_j itself is the same (the covariates get ``-coef @ weight``).
    Positive weight = a larger feature value pushes towards the positive class (response).
    """
    svc = pipeline.named_steps["svc"]
    if getattr(svc, "kernel", None) != "linear":
        raise ValueError("feature weights exist for linear kernels only; use permutation importance for RBF")
    w = np.asarray(svc.coef_, dtype=float).ravel()
    pca = pipeline.named_steps.get("pca")
    if pca is not None and pca != "passthrough":
        w = w @ pca.components_
    scaler = pipeline.named_steps["scale"]
    return w / scaler.scale_
