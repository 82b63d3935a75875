"""Weights of the R x K fold models -> per-feature mean, SE, CV-ratio and sign consistency -> region tables
and brain maps (NeuroMiner's CVR: mean weight / standard error across the CV models)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn.maskers import NiftiLabelsMasker, NiftiMasker

from src.interpretation.weights import feature_weights

_LOBES = [
    (r"^(Frontal|Precentral|Rolandic|Supp_Motor|Olfactory|Rectus|OFC|Paracentral)", "frontal"),
    (r"^(Temporal|Heschl|Fusiform)", "temporal"),
    (r"^(Hippocampus|ParaHippocampal|Amygdala|Cingulate|ACC|Insula)", "limbic/insula"),
    (r"^(Parietal|Postcentral|SupraMarginal|Angular|Precuneus)", "parietal"),
    (r"^(Occipital|Calcarine|Cuneus|Lingual)", "occipital"),
    (r"^(Caudate|Putamen|Pallidum|Thalamus|N_Acc|VTA|SN_|Red_N|LC_|Raphe)", "subcortical"),
    (r"^(Cerebelum|Vermis|Cerebellum|Cerebellar)", "cerebellum"),
]
_NMM_LOBES = [
    (
        r"(frontal|precentral|orbital|OrG|FRP|GRe|MFC|SMC|SCA|MSFG|MFG|IFG|SFG|PrG|OpIFG|TrIFG|OrIFG)",
        "frontal",
    ),
    (r"(temporal|TMP|ITG|MTG|STG|FuG|PP|PT|TTG)", "temporal"),
    (r"(Hippocampus|Amygdala|PHG|Ent|cingul|ACgG|MCgG|PCgG|Ins|AIns|PIns)", "limbic/insula"),
    (r"(parietal|PoG|SMG|AnG|SPL|PCu|PO)", "parietal"),
    (r"(occipital|Calc|Cun|LiG|IOG|MOG|SOG|OCP|OFuG)", "occipital"),
    (r"(Caudate|Putamen|Pallidum|Thalamus|Accumbens|Ventral_DC|Basal)", "subcortical"),
    (r"Cerebell", "cerebellum"),
]


def hemisphere(name: str) -> str:
    """left / right / midline from AAL (``_L``/``_R``), Neuromorphometrics (``Left_``/``Right_``) or
    FreeSurfer (``lh_``/``rh_``) style names."""
    if name.endswith("_L") or name.startswith(("Left", "lh_", "lh.")):
        return "left"
    if name.endswith("_R") or name.startswith(("Right", "rh_", "rh.")):
        return "right"
    return "midline"


def lobe(name: str) -> str:
    for pattern, label in _LOBES:
        if re.search(pattern, name):
            return label
    for pattern, label in _NMM_LOBES:
        if re.search(pattern, name, flags=re.IGNORECASE):
            return label
    return "other"


def read_feature_regions(features_dir: str | Path) -> pd.DataFrame | None:
    """The feature set's ``regions.tsv`` (column -> atlas, index, region name), or None for feature sets
    without regions (voxels, user tables)."""
    path = Path(features_dir) / "regions.tsv"
    return pd.read_csv(path, sep="\t") if path.is_file() else None


def weight_summary(
    models: Sequence,
    feature_columns: Sequence[str],
    training: pd.DataFrame | None = None,
    regions: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """Mean, SE, CV-ratio and sign consistency of each feature's weight across the fold models.

    Positive weight = larger volume pushes towards response; negative = towards non-response.
    With ``training`` (the training table), ``standardised_weight`` = mean weight x feature SD.
    With ``regions`` (``regions.tsv`` of the feature table), atlas names, hemisphere and lobe are added.
    """
    W = np.vstack([feature_weights(m) for m in models])
    mean = W.mean(axis=0)
    se = W.std(axis=0, ddof=1) / np.sqrt(len(W)) if len(W) > 1 else np.full(W.shape[1], np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        cvr = mean / se
    consistency = (np.sign(W) == np.sign(mean)).mean(axis=0)
    table = pd.DataFrame(
        {
            "feature": list(feature_columns),
            "mean_weight": mean,
            "se": se,
            "cvr": cvr,
            "sign_consistency": consistency,
        }
    )
    if training is not None:
        table["standardised_weight"] = mean * training[list(feature_columns)].std().to_numpy()
    table["direction"] = np.where(mean > 0, "response", "non-response")
    if regions is not None and "column" in regions:
        info = regions.set_index("column")
        names = table["feature"].map(info["name"]).fillna(table["feature"]).astype(str)
        table.insert(1, "region", names)
        table.insert(2, "tissue", table["feature"].map(info["tissue"]))
        table.insert(3, "atlas", table["feature"].map(info["atlas"]))
        table.insert(4, "hemisphere", [hemisphere(n) for n in names])
        table.insert(5, "lobe", [lobe(n) for n in names])
    order = np.argsort(-np.abs(table["cvr"].fillna(0).to_numpy()), kind="stable")
    table = table.iloc[order].reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def voxel_maps(table: pd.DataFrame, mask: nib.Nifti1Image) -> dict[str, nib.Nifti1Image]:
    """Mean-weight and CVR images: column ``gm_v<j>`` is the j-th voxel of ``mask`` (C order)."""
    order = table.assign(j=table["feature"].str.extract(r"(\d+)$")[0].astype(int)).sort_values("j")
    masker = NiftiMasker(mask_img=mask, standardize=None).fit()
    return {
        "weight": masker.inverse_transform(order["mean_weight"].to_numpy()),
        "cvr": masker.inverse_transform(order["cvr"].fillna(0).to_numpy()),
    }


def region_maps(
    table: pd.DataFrame, atlas_regions: pd.DataFrame, atlas: nib.Nifti1Image, tissue: str = "GM"
) -> dict[str, nib.Nifti1Image]:
    """Mean-weight and CVR painted onto the atlas regions of one tissue (0 elsewhere).

    Parameters
    ----------
    table : output of :func:`weight_summary` (``feature``, ``mean_weight``, ``cvr``).
    atlas_regions : the feature set's ``regions.tsv`` (``column``, ``tissue``, ``index``).
    atlas : the atlas label image the features were extracted with.
    """
    regions = atlas_regions[atlas_regions["tissue"] == tissue].merge(
        table, left_on="column", right_on="feature", how="inner"
    )
    masker = NiftiLabelsMasker(labels_img=atlas).fit()
    # one value per atlas label, in the masker's label order (labels without a feature stay 0)
    order = [int(v) for v in masker.labels_ if int(v) != 0]
    out = {}
    for name, column in (("weight", "mean_weight"), ("cvr", "cvr")):
        values = pd.Series(regions[column].fillna(0).to_numpy(), index=regions["index"].astype(int))
        out[name] = masker.inverse_transform(values.reindex(order, fill_value=0.0).to_numpy()[None, :])
    return out


def paint_features(table: pd.DataFrame, features_dir: str | Path) -> tuple[dict[str, nib.Nifti1Image], str]:
    """``table``'s ``mean_weight`` and ``cvr`` per ``feature`` as brain images: voxel features through the
    feature set's mask, regional features painted onto their bundled atlas (GM regions). ({}, note) when the
    features have no image to go to (a user's regional table)."""
    from src.data.templates import ATLASES, load_atlas

    features_dir = Path(features_dir)
    if (features_dir / "mask.nii.gz").is_file():
        return voxel_maps(table, nib.load(features_dir / "mask.nii.gz")), ""
    atlas_regions = read_feature_regions(features_dir)
    atlases = [] if atlas_regions is None else sorted(atlas_regions["atlas"].astype(str).unique())
    if len(atlases) != 1 or atlases[0] not in ATLASES or "index" not in atlas_regions:
        return {}, (
            f"no brain map: the features come from {', '.join(atlases) or 'a table'} with no bundled atlas "
            "image to paint them on; the tables hold every feature's value"
        )
    atlas, _ = load_atlas(atlases[0])
    return region_maps(table, atlas_regions, atlas), ""
