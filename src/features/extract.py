"""Regional and voxel-wise features from modulated tissue maps, with nilearn maskers.

A modulated tissue map holds, per voxel, the fraction of the voxel's volume that is that tissue in the
subject's native space. The volume of a region in ml is therefore the sum of the map over the region
times the voxel volume in ml: ``NiftiLabelsMasker(strategy="sum")`` times ``voxel_ml``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from nilearn import image
from nilearn.maskers import NiftiLabelsMasker, NiftiMasker

from src.config.settings import FeaturesSettings
from src.data.clinical import ClinicalVariable, clinical_features
from src.data.contract import TABLE_META_COLUMNS
from src.data.loader import Cohort, CohortError, load_regional_table
from src.data.templates import atlas_on_grid, load_tissue_templates

log = logging.getLogger(__name__)
_REPORTED_DROPS: set[tuple[str, tuple[str, ...]]] = set()  # warn once per process, not once per cohort


@dataclass(frozen=True)
class FeatureSet:
    """A feature set as configured in ``conf/features/<name>.yaml``.

    Parameters
    ----------
    name : str
        Feature-set name (folder of its tables).
    kind : {"roi", "voxel", "table"}
        Regional volumes per atlas region, voxel values inside a GM mask, or a user's regional table.
    atlas : str
        Bundled atlas for ``roi`` (``aal`` or ``neuromorphometrics``).
    tissues : tuple of str
        Tissue maps the features come from (``GM``, ``WM``).
    resolution : float
        Voxel size in mm of ``voxel`` features.
    smoothing_fwhm : float or None
        Gaussian smoothing (mm) applied before ``voxel`` sampling.
    mask_threshold : float
        GM-template probability above which a voxel is in the ``voxel`` mask.
    clinical : bool
        Also the data config's clinical predictors (:mod:`src.data.clinical`) as columns; ``kind="clinical"``
        is those columns alone.
    """

    name: str
    kind: str = "roi"
    atlas: str = "aal"
    tissues: tuple[str, ...] = ("GM",)
    resolution: float = 4.0
    smoothing_fwhm: float | None = 8.0
    mask_threshold: float = 0.2
    clinical: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_clinical(self) -> bool:
        """The table holds clinical predictor columns."""
        return self.clinical or self.kind == "clinical"

    @property
    def uses_images(self) -> bool:
        """The features are read from tissue maps."""
        return self.kind in ("roi", "voxel")

    @classmethod
    def from_settings(cls, settings: FeaturesSettings) -> FeatureSet:
        """The feature set of the typed ``features`` settings."""
        return cls(
            name=settings.name,
            kind=settings.kind,
            atlas=settings.atlas,
            tissues=tuple(settings.tissues),
            resolution=settings.resolution,
            smoothing_fwhm=settings.smoothing_fwhm,
            mask_threshold=settings.mask_threshold,
            clinical=settings.clinical,
        )

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> FeatureSet:
        """The feature set from its ``features`` config group; an unknown key is an error."""
        known = {
            "name",
            "kind",
            "atlas",
            "tissues",
            "resolution",
            "smoothing_fwhm",
            "mask_threshold",
            "clinical",
        }
        kwargs = {k: v for k, v in cfg.items() if k in known}
        kwargs["tissues"] = tuple(kwargs.get("tissues", ("GM",)))
        if kwargs.get("kind", "roi") not in ("roi", "voxel", "table", "clinical"):
            raise ValueError(f"feature set {cfg.get('name')!r}: kind must be roi, voxel, table or clinical")
        return cls(**kwargs, extra={k: v for k, v in cfg.items() if k not in known})


def _voxel_ml(affine: np.ndarray) -> float:
    return float(abs(np.linalg.det(affine[:3, :3]))) / 1000.0


def _read_image(cohort: Cohort, tissue: str, i: int) -> nib.Nifti1Image:
    """Load one map fully (catches corrupt data that a header check cannot) and put it on the grid."""
    pid, path = cohort.participant_ids[i], cohort.images[tissue][i]
    try:
        img = nib.load(path)
        data = np.asarray(img.get_fdata(dtype=np.float64))
    except Exception as err:
        raise CohortError(
            f"cohort {cohort.name!r}: subject {pid}: cannot read {tissue} image {path} "
            f"(unreadable or corrupt NIfTI: {err})"
        ) from err
    if data.ndim == 4:
        data = data[..., 0]
    if not np.isfinite(data).all():
        raise CohortError(f"cohort {cohort.name!r}: subject {pid}: {tissue} image {path} contains NaN or inf")
    img = nib.Nifti1Image(data, img.affine)
    on_grid = data.shape == tuple(cohort.reference_shape or ()) and np.allclose(
        img.affine, cohort.reference_affine, atol=1e-3
    )
    if not on_grid:  # only reachable with on_grid_mismatch="resample": the loader rejects it otherwise
        img = image.resample_to_img(
            img, _reference(cohort), interpolation="continuous", force_resample=True, copy_header=True
        )
    return img


def _reference(cohort: Cohort) -> nib.Nifti1Image:
    if cohort.reference_affine is None or cohort.reference_shape is None:
        raise CohortError(f"cohort {cohort.name!r} has no images")
    return nib.Nifti1Image(np.zeros(cohort.reference_shape, dtype=np.int8), cohort.reference_affine)


def region_columns(labels: pd.DataFrame, tissue: str) -> list[str]:
    """Readable column names: ``gm_Frontal_Sup_2_L``; characters other than [A-Za-z0-9_] become ``_``."""
    clean = labels["name"].astype(str).str.replace(r"[^A-Za-z0-9_]+", "_", regex=True).str.strip("_")
    return [f"{tissue.lower()}_{name}" for name in clean]


def _tiv_ml(images: list[nib.Nifti1Image], voxel_ml: float) -> float:
    """TIV in ml: the summed GM + WM + CSF densities times the voxel volume."""
    return float(sum(np.asarray(img.dataobj).sum() for img in images)) * voxel_ml


def _subject_roi(
    cohort: Cohort, i: int, maskers: dict[str, NiftiLabelsMasker], tiv_tissues: tuple[str, ...]
) -> tuple[np.ndarray, float]:
    values = []
    loaded: dict[str, nib.Nifti1Image] = {}
    for tissue in dict.fromkeys((*maskers, *tiv_tissues)):
        loaded[tissue] = _read_image(cohort, tissue, i)
    for tissue, masker in maskers.items():
        values.append(np.asarray(masker.transform(loaded[tissue]), dtype=np.float64).ravel())
    voxel_ml = _voxel_ml(cohort.reference_affine)
    tiv = _tiv_ml([loaded[t] for t in tiv_tissues], voxel_ml)
    return np.concatenate(values) * voxel_ml, tiv


def _tiv_tissues(cohort: Cohort) -> tuple[str, ...]:
    """Tissues whose sum gives TIV, or () when participants.tsv provides a ``tiv`` column."""
    if "tiv" in cohort.participants.columns:
        return ()
    missing = [t for t in ("GM", "WM", "CSF") if t not in cohort.images]
    if missing:
        raise CohortError(
            f"cohort {cohort.name!r}: cannot compute TIV: participants.tsv has no 'tiv' column and "
            f"the {missing} map(s) are missing (TIV = GM + WM + CSF)"
        )
    return ("GM", "WM", "CSF")


def roi_features(
    cohort: Cohort, atlas: str = "aal", tissues: tuple[str, ...] = ("GM",), n_jobs: int = 1
) -> tuple[pd.DataFrame, pd.Series, pd.DataFrame]:
    """Regional tissue volume (ml) of every atlas region, and TIV (ml), per subject.

    Returns
    -------
    features : DataFrame
        One row per subject (cohort order), one column per tissue x region (``gm_<region>``).
    tiv : Series
        Total intracranial volume in ml: participants.tsv's ``tiv`` if given, else GM + WM + CSF.
    regions : DataFrame
        column, tissue, atlas, atlas index, region name, voxels on the grid.
    """
    reference = _reference(cohort)
    atlas_img, labels = atlas_on_grid(atlas, reference)
    dropped = labels.loc[labels["n_voxels"] == 0, "name"].tolist()
    if dropped and (atlas, tuple(dropped)) not in _REPORTED_DROPS:
        _REPORTED_DROPS.add((atlas, tuple(dropped)))
        log.warning(
            "atlas %s: %d region(s) have no voxel on this grid and are left out: %s",
            atlas,
            len(dropped),
            ", ".join(dropped),
        )
    labels = labels[labels["n_voxels"] > 0].reset_index(drop=True)
    maskers = {}
    for tissue in tissues:
        if tissue not in cohort.images:
            raise CohortError(f"cohort {cohort.name!r}: feature tissue {tissue} has no images")
        masker = NiftiLabelsMasker(
            labels_img=atlas_img, strategy="sum", resampling_target=None, standardize=None
        )
        masker.fit()
        order = [masker.region_ids_[k] for k in sorted(k for k in masker.region_ids_ if k != "background")]
        if list(map(int, order)) != labels["index"].tolist():  # guard: nilearn's column order is ours
            raise RuntimeError("NiftiLabelsMasker region order differs from the atlas label table")
        maskers[tissue] = masker
    tiv_tissues = _tiv_tissues(cohort)
    results = Parallel(n_jobs=n_jobs)(
        delayed(_subject_roi)(cohort, i, maskers, tiv_tissues) for i in range(len(cohort))
    )
    columns = [c for tissue in tissues for c in region_columns(labels, tissue)]
    features = pd.DataFrame(np.vstack([r[0] for r in results]), columns=columns)
    tiv = cohort.participants["tiv"] if not tiv_tissues else pd.Series([r[1] for r in results])
    regions = pd.concat(
        [labels.assign(column=region_columns(labels, t), tissue=t, atlas=atlas) for t in tissues],
        ignore_index=True,
    )[["column", "tissue", "atlas", "index", "name", "n_voxels"]]
    return features, tiv.reset_index(drop=True).rename("tiv"), regions


def voxel_mask(resolution: float, threshold: float) -> nib.Nifti1Image:
    """GM mask from the MNI152 GM template (data-independent, so it cannot leak outcome information)."""
    gm = load_tissue_templates(float(resolution))["GM"]
    data = (np.asarray(gm.dataobj) > threshold).astype(np.uint8)
    mask = nib.Nifti1Image(data, gm.affine)
    mask.header.set_xyzt_units("mm")
    mask.set_sform(gm.affine, code=4)
    mask.set_qform(gm.affine, code=4)
    return mask


def _subject_voxels(
    cohort: Cohort, i: int, masker: NiftiMasker, fwhm: float | None, tiv_tissues: tuple[str, ...]
) -> tuple[np.ndarray, float]:
    img = _read_image(cohort, "GM", i)
    tiv = _tiv_ml(
        [img if t == "GM" else _read_image(cohort, t, i) for t in tiv_tissues],
        _voxel_ml(cohort.reference_affine),
    )
    if fwhm:
        img = image.smooth_img(img, fwhm)
    # density maps: interpolating to the coarser mask grid keeps "fraction of voxel that is GM"
    img = image.resample_to_img(
        img, masker.mask_img_, interpolation="continuous", force_resample=True, copy_header=True
    )
    return np.asarray(masker.transform(img), dtype=np.float32).ravel(), tiv


def voxel_features(
    cohort: Cohort, mask: nib.Nifti1Image, smoothing_fwhm: float | None = 8.0, n_jobs: int = 1
) -> tuple[pd.DataFrame, pd.Series]:
    """Modulated GM values of every voxel inside ``mask`` (columns ``gm_v000000`` in mask order) and TIV."""
    masker = NiftiMasker(mask_img=mask, standardize=None).fit()
    tiv_tissues = _tiv_tissues(cohort)
    results = Parallel(n_jobs=n_jobs)(
        delayed(_subject_voxels)(cohort, i, masker, smoothing_fwhm, tiv_tissues) for i in range(len(cohort))
    )
    values = np.vstack([r[0] for r in results])
    columns = [f"gm_v{j:06d}" for j in range(values.shape[1])]
    features = pd.DataFrame(values, columns=columns)
    tiv = cohort.participants["tiv"] if not tiv_tissues else pd.Series([r[1] for r in results])
    return features, tiv.reset_index(drop=True).rename("tiv")


def assemble_table(cohort: Cohort, features: pd.DataFrame, tiv: pd.Series) -> pd.DataFrame:
    """Contract layout: participant_id, age, sex, site, tiv, treatment, response, then the features."""
    meta = cohort.participants.reset_index(drop=True).assign(tiv=tiv.to_numpy(dtype=float))
    table = pd.concat([meta[list(TABLE_META_COLUMNS)], features.reset_index(drop=True)], axis=1)
    return table


def build_feature_table(
    cohort: Cohort,
    feature_set: FeatureSet,
    *,
    table_path: str | Path | None = None,
    table_format: str = "plain",
    n_jobs: int = 1,
    clinical: Sequence[ClinicalVariable] = (),
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Feature table of one cohort for one feature set, plus side products (region table or mask).

    ``clinical``: the declared clinical predictors, appended as columns (:func:`clinical_features`) when the
    feature set uses them (``clinical: true`` or ``kind: clinical``).

    Returns
    -------
    table : DataFrame
        The contract's feature table.
    side : dict
        ``regions`` (DataFrame) for ROI sets, ``mask`` (NIfTI image) for voxel sets.
    """
    side: dict[str, Any] = {}
    if feature_set.uses_clinical and not clinical:
        raise CohortError(
            f"feature set {feature_set.name!r} uses clinical predictors, but the data config declares none "
            "(data.clinical: column -> {kind, range/codes})"
        )
    if feature_set.kind == "clinical":
        # no image is read: TIV from participants.tsv where given (a covariate only if the model lists it)
        participants = cohort.participants
        tiv = participants["tiv"] if "tiv" in participants else pd.Series(np.nan, index=participants.index)
        features = pd.DataFrame(index=participants.index)
    elif feature_set.kind == "table":
        if table_path is None:
            raise CohortError(
                f"cohort {cohort.name!r}: feature set {feature_set.name!r} needs a regional table"
            )
        features, table_tiv = load_regional_table(table_path, cohort, table_format)
        if "tiv" in cohort.participants.columns:
            tiv = cohort.participants["tiv"]
        elif table_tiv is not None:
            tiv = table_tiv
        else:
            raise CohortError(
                f"cohort {cohort.name!r}: a regional table in format {table_format!r} carries no TIV: add a "
                "'tiv' column (ml) to participants.tsv"
            )
        side["regions"] = pd.DataFrame(
            {
                "column": features.columns,
                "tissue": "table",
                "atlas": f"table:{table_format}",
                "index": np.arange(1, features.shape[1] + 1),
                "name": features.columns,
                "n_voxels": 0,
            }
        )
    elif feature_set.kind == "roi":
        features, tiv, side["regions"] = roi_features(cohort, feature_set.atlas, feature_set.tissues, n_jobs)
    else:
        side["mask"] = voxel_mask(feature_set.resolution, feature_set.mask_threshold)
        features, tiv = voxel_features(cohort, side["mask"], feature_set.smoothing_fwhm, n_jobs)
    if feature_set.uses_clinical:
        block = clinical_features(cohort.participants, clinical).reset_index(drop=True)
        features = pd.concat([features.reset_index(drop=True), block], axis=1)
    return assemble_table(cohort, features, tiv), side
