"""Label-free alignment of an unseen site's features to the training distribution.

ComBat-style location/scale adjustment for a site that was not in the training data, estimated from that
site's features and covariates only — never its outcomes. neuroHarmonize/neuroCombat estimate site effects
jointly over all sites at fit time and cannot apply a model to a site they have not seen, which is exactly
the external-validation situation; the estimator below does the per-site part of ComBat (without the
empirical-Bayes pooling) for one new site at a time.

For each feature j: a covariate model ``x_j ~ 1 + age + sex + tiv`` is fitted on the training rows; the
residual mean and SD of the training rows (mu_j, sd_j) define the target. A new site's residuals are
standardised with the site's own residual mean and SD and mapped onto (mu_j, sd_j); the covariate part is
added back.
"""

from __future__ import annotations

import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from src.models.residualize import CovariateResidualizer

OUTCOME_COLUMNS = ("response", "madrs_baseline", "madrs_24h")


class SiteAligner(TransformerMixin, BaseEstimator):
    """Align each site of a new table to the training table's feature distribution (no labels used).

    Parameters
    ----------
    feature_columns : list of str
        Columns to align.
    covariates, categorical : sequence of str
        Biological covariates kept out of the site effect (site itself is not one of them).
    min_site_size : int
        Smaller sites cannot estimate a scale reliably and are left unchanged (with the reason recorded).
    """

    def __init__(
        self,
        feature_columns: list[str],
        covariates=("age", "sex", "tiv"),
        categorical=("sex",),
        min_site_size: int = 8,
    ) -> None:
        self.feature_columns = feature_columns
        self.covariates = covariates
        self.categorical = categorical
        self.min_site_size = min_site_size

    def _inputs(self, table: pd.DataFrame) -> pd.DataFrame:
        # only covariates and features ever enter: outcome columns are dropped before anything is read
        return table.drop(columns=[c for c in OUTCOME_COLUMNS if c in table.columns])[
            [*self.covariates, *self.feature_columns]
        ]

    def fit(self, table: pd.DataFrame, y: object = None) -> SiteAligner:
        X = self._inputs(table)
        self.residualizer_ = CovariateResidualizer(self.covariates, self.categorical).fit(X)
        residuals = self.residualizer_.transform(X)
        self.mean_ = residuals.mean(axis=0)
        self.scale_ = residuals.std(axis=0, ddof=1)
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
            r = residuals[rows]
            sd = r.std(axis=0, ddof=1)
            sd[sd == 0] = 1.0
            aligned_features[rows] = (
                covariate_part[rows] + (r - r.mean(axis=0)) / sd * self.scale_ + self.mean_
            )
        # one block for all feature columns (column-by-column assignment takes minutes on voxel tables)
        others = table.drop(columns=self.feature_columns)
        aligned = pd.DataFrame(aligned_features, columns=self.feature_columns, index=table.index)
        out = pd.concat([others, aligned], axis=1)[list(table.columns)]
        out.attrs["skipped_sites"] = skipped
        return out
