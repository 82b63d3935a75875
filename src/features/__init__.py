"""Feature tables: nilearn maskers turn a cohort's tissue maps (or a regional table) into parquet tables."""

from src.features.extract import (
    FeatureSet,
    build_feature_table,
    region_columns,
    roi_features,
    voxel_features,
    voxel_mask,
)

__all__ = [
    "FeatureSet",
    "build_feature_table",
    "region_columns",
    "roi_features",
    "voxel_features",
    "voxel_mask",
]
