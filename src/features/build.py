"""``python -m src.features.build [features=gm_roi] [data=bids ...]``: one feature set for every cohort.

Writes ``${paths.features}/<feature set>/``: ``<cohort>.parquet`` per cohort, ``regions.tsv`` (ROI sets:
column -> atlas region) or ``mask.nii.gz`` (voxel sets: column j -> j-th mask voxel in C order), and
``manifest.json`` (inputs' hashes, subject counts). The folder is replaced as a whole, atomically.

Needs the cohorts ``src.data.prepare`` wrote or validated.

Example::

    python -m src.features.build features=gm_voxel data=simulated
"""

from __future__ import annotations

from src.config.checks import check_config
from src.config.cli import run
from src.features.extract import FeatureSet
from src.features.feature_sets import build_feature_set


def main() -> None:
    """Hydra entry point."""
    import hydra
    from omegaconf import DictConfig, OmegaConf

    from src.utils.errors import user_errors
    from src.utils.logging import configure_logging

    @hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
    @user_errors
    def _run(cfg: DictConfig) -> None:
        configure_logging(bool(cfg.verbose))
        check_config(cfg)
        data = OmegaConf.to_container(cfg.data, resolve=True)
        feature_set = FeatureSet.from_config(OmegaConf.to_container(cfg.features, resolve=True))
        manifest = build_feature_set(data, feature_set, cfg.paths.features, n_jobs=int(cfg.n_jobs))
        for name, info in manifest["cohorts"].items():
            print(
                f"{feature_set.name}/{name}: {info['n']} subjects ({info['responders']} responders) "
                f"x {info['n_features']} features"
            )

    _run()


if __name__ == "__main__":
    run(main, __doc__)
