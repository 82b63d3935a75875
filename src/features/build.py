"""``python -m src.features.build [features=gm_roi] [data=bids ...]``: one feature set for every cohort.

Writes ``${paths.features}/<feature set>/``: ``<cohort>.parquet`` per cohort, ``regions.tsv`` (ROI sets:
column -> atlas region) or ``mask.nii.gz`` (voxel sets: column j -> j-th mask voxel in C order), and
``manifest.json`` (inputs' hashes, subject counts). The folder is replaced as a whole, atomically.

Needs the cohorts ``src.data.prepare`` wrote or validated.

Example::

    python -m src.features.build features=gm_voxel data=simulated
"""

from __future__ import annotations

from src.config.cli import run, start
from src.features.extract import FeatureSet
from src.features.feature_sets import build_feature_set


def main() -> None:
    """Hydra entry point."""
    # lazy: `--help` answers before Hydra loads
    import hydra
    from omegaconf import DictConfig

    from src.utils.errors import user_errors

    @hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
    @user_errors
    def _run(cfg: DictConfig) -> None:
        config = start(cfg)
        feature_set = FeatureSet.from_settings(config.features)
        manifest = build_feature_set(config.data, feature_set, config.paths.features, n_jobs=config.n_jobs)
        for name, info in manifest["cohorts"].items():
            print(
                f"{feature_set.name}/{name}: {info['n']} subjects ({info['responders']} responders) "
                f"x {info['n_features']} features"
            )

    _run()


if __name__ == "__main__":
    run(main, __doc__)
