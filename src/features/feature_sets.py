"""Building one feature set for every cohort of a data config: the feature tables DVC versions."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import nibabel as nib

from src.config.settings import DataSettings
from src.data.cohorts import cohort_specs, declared_clinical, load_configured
from src.data.contract import TABLE_META_COLUMNS
from src.data.loader import CohortError
from src.features.extract import FeatureSet, build_feature_table
from src.features.tables import feature_columns, write_feature_table
from src.utils.io import atomic_directory, file_md5, write_json_atomic, write_text_atomic
from src.utils.logging import status

log = logging.getLogger(__name__)


def build_feature_set(
    data: DataSettings, feature_set: FeatureSet, out_root: str | Path, n_jobs: int = 1
) -> dict[str, Any]:
    """Build ``feature_set`` for every cohort of the ``data`` config; return the manifest.

    Parameters
    ----------
    data : DataSettings
        The data settings (root, layout, pipeline, space, cohorts with their roles, source, table_format,
        outcome, on_grid_mismatch).
    feature_set : FeatureSet
        What to extract (atlas regions, voxels, clinical columns or a regional table's columns).
    out_root : path
        Parent folder; the tables go to ``out_root/<feature set name>/``.
    n_jobs : int
        Parallel workers over subjects; the tables are byte-identical for any value.
    """
    out_dir = Path(out_root) / feature_set.name
    source = data.source
    if source not in ("images", "table"):
        raise ValueError(f"data.source must be 'images' or 'table', got {source!r}")
    if source == "table" and feature_set.kind == "voxel":
        raise CohortError(
            f"feature set {feature_set.name!r} needs voxel images, but data.source=table (regional tables)"
        )
    if source == "table" and feature_set.uses_images:
        feature_set = FeatureSet(name=feature_set.name, kind="table", clinical=feature_set.clinical)
    clinical = declared_clinical(data) if feature_set.uses_clinical else ()
    specs = cohort_specs(data)
    manifest: dict[str, Any] = {"feature_set": feature_set.name, "kind": feature_set.kind, "cohorts": {}}
    columns: list[str] | None = None
    side: dict[str, Any] = {}
    with atomic_directory(out_dir) as tmp:
        for spec in specs:
            name, root = spec.name, spec.folder(data.root)
            table_path, table_format = None, "plain"
            if feature_set.kind == "clinical":
                cohort = load_configured(spec, data, (), with_images=False)
            elif feature_set.kind == "table":
                cohort = load_configured(spec, data, (), with_images=False)
                table_path, table_format = spec.regional_table(data)
            else:
                tissues = tuple(feature_set.tissues)
                cohort = load_configured(spec, data, tissues)
                if "tiv" not in cohort.participants.columns:  # TIV = GM + WM + CSF from the maps
                    cohort = load_configured(spec, data, tuple(dict.fromkeys((*tissues, "GM", "WM", "CSF"))))
            status(f"features {feature_set.name}: cohort {name} ({len(cohort.participants)} subjects) ...")
            table, cohort_side = build_feature_table(
                cohort,
                feature_set,
                table_path=table_path,
                table_format=table_format,
                n_jobs=n_jobs,
                clinical=clinical,
            )
            if spec.role == "discovery":  # the model's columns are the discovery cohort's
                side = cohort_side
            features = feature_columns(table)
            if columns is None:
                columns = list(table.columns)
            elif list(table.columns) != columns:
                diff = sorted(set(table.columns) ^ set(columns))
                raise CohortError(
                    f"cohort {name!r}: feature columns differ from cohort {specs[0].name!r} "
                    f"({len(diff)} column(s), e.g. {diff[:5]}); "
                    + (
                        "do the regional tables hold the same regions?"
                        if feature_set.kind == "table"
                        else "are the images on different grids?"
                    )
                )
            path = tmp / f"{name}.parquet"
            write_feature_table(table, path)
            manifest["cohorts"][name] = {
                "n": len(table),
                "responders": int(table["response"].sum()),
                "excluded_missing_outcome": cohort.excluded,
                "n_features": table.shape[1] - len(TABLE_META_COLUMNS),
                "role": spec.role,
                "participants_md5": file_md5(root / "participants.tsv"),
                "table_md5": file_md5(path),
                "source": str(table_path) if table_path else str(root),
            }
            log.info(
                "features %s / %s: %d subjects x %d features",
                feature_set.name,
                name,
                len(table),
                len(features),
            )
        if "regions" in side:
            write_text_atomic(
                tmp / "regions.tsv", side["regions"].to_csv(sep="\t", index=False, lineterminator="\n")
            )
        if "mask" in side:
            nib.save(side["mask"], tmp / "mask.nii.gz")
        if clinical:  # the declaration the columns were coded with (kinds, ranges, codes)
            manifest["clinical"] = [dataclasses.asdict(v) for v in clinical]
        write_json_atomic(tmp / "manifest.json", manifest)
    return manifest
