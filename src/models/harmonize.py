"""Label-free alignment of an unseen site's features to the training distribution.

ComBat-style location/scale adjustment for a site that was not in the training data, estimated from that
site's features and covariates only — never its outcomes. This is ComBat with the training cohort as the
reference batch (neuroCombat's ``ref_batch``): the training data are the target and are never changed.
neuroCombat (0.2.12, unmaintained) does not run on numpy 2 and neuroHarmonize pins numpy < 2 and pandas < 3,
so the few lines of the per-site estimate are here; ``tests/test_evaluation.py`` checks them against
neuroCombat's ``ref_batch`` output.

For each feature j: a covariate model ``x_j ~ 1 + age + sex + tiv`` is fitted on the training rows; the
residual mean and SD of the training rows (mu_j, sd_j) define the target. A new site's standardised
residuals ``z = (r - mu) / sd`` have a per-feature shift gamma_j and scale delta_j:

* ``method="eb"``: ComBat's parametric empirical Bayes (Johnson, Li & Rabinovic 2007): gamma and
  delta are shrunk towards their distribution over all features, which stabilises a small site's estimates;
* ``method="location_scale"`` (default; it scored the simulated external cohorts better,
  ``benchmarks/site_alignment.py``): the site's own per-feature mean and variance, no pooling.

The aligned values are ``covariate part + mu + sd * (z - gamma) / sqrt(delta)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from src.models.residualize import CovariateResidualizer

OUTCOME_COLUMNS = ("response", "madrs_baseline", "madrs_24h")
METHODS = ("eb", "location_scale")


def empirical_bayes(z: np.ndarray, tol: float = 1e-4, max_iter: int = 1000) -> tuple[np.ndarray, np.ndarray]:
    """ComBat's parametric empirical-Bayes site shift and scale for one site's standardised data ``z``
    (rows: the site's subjects, columns: features), as ``neuroCombat``'s ``find_parametric_adjustments``."""
    n = z.shape[0]
    gamma_hat = z.mean(axis=0)
    delta_hat = z.var(axis=0, ddof=1)
    if z.shape[1] < 3 or gamma_hat.var(ddof=1) == 0 or delta_hat.var(ddof=1) == 0:
        return gamma_hat, delta_hat  # no distribution over features to shrink towards
    gamma_bar, tau2 = gamma_hat.mean(), gamma_hat.var(ddof=1)
    m, s2 = delta_hat.mean(), delta_hat.var(ddof=1)
    a_prior, b_prior = (2 * s2 + m**2) / s2, (m * s2 + m**3) / s2  # inverse-gamma prior of delta
    gamma, delta = gamma_hat.copy(), delta_hat.copy()
    for _ in range(max_iter):
        gamma_new = (n * tau2 * gamma_hat + delta * gamma_bar) / (n * tau2 + delta)
        sum2 = ((z - gamma_new) ** 2).sum(axis=0)
        delta_new = (0.5 * sum2 + b_prior) / (n / 2.0 + a_prior - 1.0)
        change = max(
            np.max(np.abs(gamma_new - gamma) / np.abs(gamma)), np.max(np.abs(delta_new - delta) / delta)
        )
        gamma, delta = gamma_new, delta_new
        if change <= tol:
            break
    return gamma, delta


class SiteAligner(TransformerMixin, BaseEstimator):
    """Align each site of a new table to the training table's feature distribution (no labels used).

    Parameters
    ----------
    feature_columns : list of str
        Columns to align.
    covariates, categorical : sequence of str
        Biological covariates kept out of the site effect (site itself is not one of them).
    min_site_size : int
        Smaller sites cannot estimate a scale reliably and are left unchanged (listed in the output's
        ``attrs["skipped_sites"]``).
    method : {"eb", "location_scale"}
        Empirical-Bayes shrinkage of the site's shift and scale (ComBat), or none.
    """

    def __init__(
        self,
        feature_columns: list[str],
        covariates: Sequence[str] = ("age", "sex", "tiv"),
        categorical: Sequence[str] = ("sex",),
        min_site_size: int = 8,
        method: str = "location_scale",
    ) -> None:
        self.feature_columns = feature_columns
        self.covariates = covariates
        self.categorical = categorical
        self.min_site_size = min_site_size
        self.method = method

    def _inputs(self, table: pd.DataFrame) -> pd.DataFrame:
        # only covariates and features ever enter: outcome columns are dropped before anything is read
        return table.drop(columns=[c for c in OUTCOME_COLUMNS if c in table.columns])[
            [*self.covariates, *self.feature_columns]
        ]

    def fit(self, table: pd.DataFrame, y: object = None) -> SiteAligner:
        """The training rows' covariate model and residual mean and SD of every feature (``y`` is ignored)."""
        if self.method not in METHODS:
            raise ValueError(f"site alignment method {self.method!r}: choose one of {list(METHODS)}")
        X = self._inputs(table)
        self.residualizer_ = CovariateResidualizer(self.covariates, self.categorical).fit(X)
        residuals = self.residualizer_.transform(X)
        self.mean_ = residuals.mean(axis=0)
        self.scale_ = residuals.std(axis=0, ddof=1)
        self.scale_[self.scale_ == 0] = 1.0  # a constant feature: nothing to scale
        return self

    def transform(self, table: pd.DataFrame) -> pd.DataFrame:
        """A copy of ``table`` with each site's feature columns aligned (the fitted aligner is unchanged;
        sites too small to align are listed in the returned frame's ``attrs["skipped_sites"]``)."""
        X = self._inputs(table)
        residuals = self.residualizer_.transform(X)
        features = X[self.feature_columns].to_numpy(float)
        covariate_part = features - residuals
        aligned_features = features.copy()
        sites = table["site"].to_numpy()
        skipped = []
        for site in pd.unique(sites):
            rows = sites == site
            if rows.sum() < self.min_site_size:
                skipped.append(site)
                continue
            z = (residuals[rows] - self.mean_) / self.scale_
            if self.method == "eb":
                gamma, delta = empirical_bayes(z)
            else:
                gamma, delta = z.mean(axis=0), z.var(axis=0, ddof=1)
            delta = np.where(delta > 0, delta, 1.0)
            aligned_features[rows] = (
                covariate_part[rows] + self.mean_ + self.scale_ * (z - gamma) / np.sqrt(delta)
            )
        # one block for all feature columns (column-by-column assignment takes minutes on voxel tables)
        others = table.drop(columns=self.feature_columns)
        aligned = pd.DataFrame(aligned_features, columns=self.feature_columns, index=table.index)
        out = pd.concat([others, aligned], axis=1)[list(table.columns)]
        out.attrs["skipped_sites"] = skipped
        return out
