"""Typed results of scoring one cohort group: metrics, permutation p-values and bootstrap intervals as fields.

The evaluation, its tracking and the registry read these objects; ``evaluate/metrics.json`` holds
:meth:`CohortResult.to_dict` of each (the same keys as before the results were typed).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from src.validation.metrics import METRICS, binary_metrics


@dataclass(frozen=True)
class CohortResult:
    """Performance of the locked model (or of the out-of-fold ensemble) on one cohort group.

    Attributes
    ----------
    n, responders : int
        Subjects and positive-class subjects.
    bac, sensitivity, specificity, auc, ppv, npv : float
        At decision score 0 (NaN where undefined, e.g. AUC with one class).
    ci95 : dict
        Metric name -> (low, high) stratified-bootstrap 95 % interval.
    p_bac, p_auc : float or None
        Label-permutation p-values: with the predictions fixed for an evaluation cohort; for the discovery
        cohort ``p_bac`` is the permutation test of the whole nested CV (None when none was run).
    n_permutations : int or None
        Label permutations behind ``p_bac``/``p_auc`` of an evaluation cohort; None for the discovery cohort
        (whose ``p_auc`` and ``n_permutations`` are then left out of :meth:`to_dict`).
    """

    n: int
    responders: int
    bac: float
    sensitivity: float
    specificity: float
    auc: float
    ppv: float
    npv: float
    ci95: dict[str, tuple[float, float]] = field(default_factory=dict)
    p_bac: float | None = None
    p_auc: float | None = None
    n_permutations: int | None = None

    @classmethod
    def of_scores(cls, y: Any, scores: Any, **extra: Any) -> CohortResult:
        """The metrics of ``scores > 0`` against ``y``, with ``extra`` (``ci95``, p-values) as given."""
        y = np.asarray(y, int)
        return cls(n=len(y), responders=int(y.sum()), **binary_metrics(y, scores), **extra)

    @classmethod
    def from_dict(cls, document: dict[str, Any]) -> CohortResult:
        """A result read back from ``metrics.json`` (:meth:`to_dict`'s inverse)."""
        ci95 = {name: (float(low), float(high)) for name, (low, high) in (document.get("ci95") or {}).items()}
        return cls(**{**document, "ci95": ci95})

    def metrics(self) -> dict[str, float]:
        """The six metrics by name (:data:`~src.validation.metrics.METRICS`)."""
        return {name: getattr(self, name) for name in METRICS}

    def to_dict(self) -> dict[str, Any]:
        """As written to ``metrics.json``."""
        out = dataclasses.asdict(self)
        if self.n_permutations is None:
            del out["p_auc"], out["n_permutations"]
        return out
