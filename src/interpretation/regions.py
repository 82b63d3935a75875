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

from src.data.clinical import PREFIX, is_clinical_column
from src.data.templates import ATLASES, load_atlas
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
    """The lobe (or structure) of an AAL/Neuromorphometrics region name, ``other`` when none matches."""
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
    test_fraction: float | None = None,
) -> pd.DataFrame:
    """Mean, SE, CV-ratio and sign consistency of each feature's weight across the fold models.

    Positive weight = larger volume pushes towards response; negative = towards non-response.
    With ``training`` (the training table), ``standardised_weight`` = mean weight x feature SD (weight per
    SD of the feature, comparable across regions of different sizes).
    With ``regions`` (``regions.tsv`` of the feature table), atlas names, hemisphere and lobe are added.

    With ``test_fraction`` (outer test rows / all rows, 1/K for K folds): the CVR treats the R x K fold
    models as independent, but any two share most of their training rows, so |CVR| > 2 is passed by most
    regions. ``cvr_corrected`` divides it by Nadeau & Bengio's (2003) correction of the resampled variance,
    ``sqrt((1/J + n_test/n_train) / (1/J))`` for J models: a reliability figure of the weight, not a test.
    No region is *selected* here: a normal-theory q of the corrected CVR called null clinical predictors
    significant (q = 4e-4); selection is the weights' label-permutation test's alone
    (:func:`~src.interpretation.importance.model_regions`: ``p_perm``, ``q_perm``, ``selected``).
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
    if test_fraction is not None and len(W) > 1:
        inflation = np.sqrt((1 / len(W) + test_fraction / (1 - test_fraction)) * len(W))
        table["cvr_corrected"] = cvr / inflation
    table["direction"] = np.where(mean > 0, "response", "non-response")
    if regions is not None and "column" in regions:
        info = regions.set_index("column")
        clinical = table["feature"].map(is_clinical_column).to_numpy(bool)
        names = (
            table["feature"].map(info["name"]).fillna(table["feature"].str.removeprefix(PREFIX)).astype(str)
        )
        table.insert(1, "region", names)
        table.insert(2, "tissue", table["feature"].map(info["tissue"]).where(~clinical, "clinical"))
        table.insert(3, "atlas", table["feature"].map(info["atlas"]))
        table.insert(
            4, "hemisphere", ["" if c else hemisphere(n) for n, c in zip(names, clinical, strict=True)]
        )
        table.insert(5, "lobe", ["clinical" if c else lobe(n) for n, c in zip(names, clinical, strict=True)])
    order = np.argsort(-np.abs(table["cvr"].fillna(0).to_numpy()), kind="stable")
    table = table.iloc[order].reset_index(drop=True)
    table.insert(0, "rank", np.arange(1, len(table) + 1))
    return table


def map_values(table: pd.DataFrame) -> dict[str, np.ndarray]:
    """What the brain maps show, per row of a :func:`weight_summary` table: ``weight`` = mean weight;
    ``cvr`` = the corrected CVR of the features the weights' permutation test selected (0 elsewhere) when
    the table has that test, else the corrected CVR (the raw CVR without fold records)."""
    reliability = table["cvr_corrected"] if "cvr_corrected" in table else table["cvr"]
    cvr = (
        np.where(table["selected"], reliability, 0.0)
        if "selected" in table
        else reliability.fillna(0).to_numpy()
    )
    return {"weight": table["mean_weight"].to_numpy(float), "cvr": np.asarray(cvr, float)}


def voxel_maps(table: pd.DataFrame, mask: nib.Nifti1Image) -> dict[str, nib.Nifti1Image]:
    """Weight and CVR images (:func:`map_values`): column ``gm_v<j>`` is the j-th voxel of ``mask`` (C
    order)."""
    order = table.assign(j=table["feature"].str.extract(r"(\d+)$")[0].astype(int)).sort_values("j")
    masker = NiftiMasker(mask_img=mask, standardize=None).fit()
    return {name: masker.inverse_transform(values) for name, values in map_values(order).items()}


def region_maps(
    table: pd.DataFrame, atlas_regions: pd.DataFrame, atlas: nib.Nifti1Image, tissue: str = "GM"
) -> dict[str, nib.Nifti1Image]:
    """Weight and CVR (:func:`map_values`) painted onto the atlas regions of one tissue (0 elsewhere).

    Parameters
    ----------
    table : pandas.DataFrame
        Output of :func:`weight_summary` (``feature``, ``mean_weight``, ``cvr``).
    atlas_regions : pandas.DataFrame
        The feature set's ``regions.tsv`` (``column``, ``tissue``, ``index``).
    atlas : nibabel.Nifti1Image
        The atlas label image the features were extracted with.
    tissue : str
        Which tissue's regions to paint (``GM`` or ``WM``).
    """
    regions = atlas_regions[atlas_regions["tissue"] == tissue].merge(
        table, left_on="column", right_on="feature", how="inner"
    )
    masker = NiftiLabelsMasker(labels_img=atlas).fit()
    # one value per atlas label, in the masker's label order (labels without a feature stay 0)
    order = [int(v) for v in masker.labels_ if int(v) != 0]
    out = {}
    for name, values in map_values(regions).items():
        per_label = pd.Series(values, index=regions["index"].astype(int))
        out[name] = masker.inverse_transform(per_label.reindex(order, fill_value=0.0).to_numpy()[None, :])
    return out


def paint_features(table: pd.DataFrame, features_dir: str | Path) -> tuple[dict[str, nib.Nifti1Image], str]:
    """``table``'s ``mean_weight`` and ``cvr`` per ``feature`` as brain images: voxel features through the
    feature set's mask, regional features painted onto their bundled atlas (GM regions). ({}, note) when the
    features have no image to go to (a user's regional table)."""
    features_dir = Path(features_dir)
    table = table[~table["feature"].map(is_clinical_column).to_numpy(bool)]  # no place in the brain
    if table.empty:
        return {}, "no brain map: the model has clinical predictors only (regions.csv holds their weights)"
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
