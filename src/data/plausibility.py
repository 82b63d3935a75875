"""Is an image a plausible modulated GM map in MNI space? Checked on the data, before it becomes features.

Header checks (readable, 3-D, one grid) cannot see a truncated or NaN-filled file, a map scaled x1000, an
all-zero map, or a whole cohort whose affine puts the brain somewhere else (wrong origin, flipped axis):
those become features silently. :func:`check_gm_maps` reads every GM map and checks, with bounds from
``data.plausibility``:

- every value finite, none below ``min_value`` (a density is >= 0);
- the largest value at most ``max_value`` (a modulated density rarely exceeds ~1.5);
- total GM volume (sum x voxel volume) within ``total_gm_ml`` (adult GM is ~450-900 ml);
- at least ``min_inside_brain`` of the GM mass inside the bundled MNI152 brain mask put on the image's grid
  through both affines (a shifted or flipped cohort puts its mass outside).
"""

from __future__ import annotations

import functools
from typing import Any

import nibabel as nib
import numpy as np
from nilearn import image
from nilearn.image.resampling import BoundingBoxError

from src.config.settings import PlausibilitySettings
from src.data.loader import Cohort, CohortError
from src.data.templates import mni152_brain_mask_2mm

# the bounds of check_gm_maps (``data.plausibility``; the defaults when the data config sets none)
PlausibilityBounds = PlausibilitySettings


@functools.lru_cache(maxsize=8)
def _brain_mask_on(shape: tuple[int, ...], affine_key: tuple[float, ...]) -> np.ndarray:
    affine = np.asarray(affine_key).reshape(4, 4)
    target = nib.Nifti1Image(np.zeros(shape, np.int8), affine)
    try:
        mask = image.resample_to_img(
            mni152_brain_mask_2mm(),
            target,
            interpolation="nearest",
            force_resample=True,
            copy_header=True,
        )
    except BoundingBoxError:  # the grid lies wholly outside the template's field of view
        return np.zeros(shape, bool)
    return np.asarray(mask.dataobj) > 0


def check_gm_maps(cohort: Cohort, bounds: PlausibilityBounds) -> dict[str, Any]:
    """Read every GM map of ``cohort`` and check it (see the module docstring).

    Returns a summary (checks run, per-subject total GM ml and fraction inside the brain mask).

    Raises
    ------
    CohortError
        Naming the cohort, the subject, the file and the check that failed; when most subjects fail the
        brain-mask check, the message says the cohort's grid is not in MNI space.
    """
    totals, inside = [], []
    outside: list[tuple[str, float]] = []
    for pid, path in zip(cohort.participant_ids, cohort.images.get("GM", []), strict=False):
        where = f"cohort {cohort.name!r}: subject {pid}: GM image {path}"
        try:
            img = nib.load(path)
            data = np.asarray(img.get_fdata(dtype=np.float32))
        except Exception as err:  # nibabel raises many types for truncated data
            raise CohortError(f"{where} cannot be read (truncated or corrupt: {err})") from err
        data = data[..., 0] if data.ndim == 4 else data
        if not np.isfinite(data).all():
            raise CohortError(f"{where} contains {int((~np.isfinite(data)).sum())} NaN/inf voxel(s)")
        low, high = float(data.min()), float(data.max())
        if low < bounds.min_value:
            raise CohortError(f"{where} has negative values (min {low:.3g}); a GM density is >= 0")
        if high > bounds.max_value:
            raise CohortError(
                f"{where} has values up to {high:.3g} (> {bounds.max_value}); is it scaled (x100, x1000) or "
                "not a modulated GM map?"
            )
        voxel_ml = float(abs(np.linalg.det(img.affine[:3, :3]))) / 1000.0
        total = float(data.sum(dtype=np.float64)) * voxel_ml
        lo, hi = bounds.total_gm_ml
        if not lo <= total <= hi:
            raise CohortError(
                f"{where} holds {total:.0f} ml of GM, outside the plausible {lo:.0f}-{hi:.0f} ml "
                "(all zero, wrong map, or wrong voxel size in the header?)"
            )
        mask = _brain_mask_on(data.shape, tuple(np.round(img.affine, 6).ravel()))
        fraction = float(data[mask].sum(dtype=np.float64)) * voxel_ml / total
        totals.append(total)
        inside.append(fraction)
        if fraction < bounds.min_inside_brain:
            outside.append((pid, fraction))
    if outside:
        pid, fraction = outside[0]
        scope = (
            f"{len(outside)} of {len(inside)} subjects, so the cohort's grid is not in MNI space (wrong "
            "origin or a flipped axis in the headers?)"
            if len(outside) > len(inside) / 2
            else f"{len(outside)} subject(s)"
        )
        raise CohortError(
            f"cohort {cohort.name!r}: subject {pid}: only {100 * fraction:.0f} % of the GM map lies inside "
            f"the MNI152 brain mask (at least {100 * bounds.min_inside_brain:.0f} % expected); {scope}"
        )
    return {
        "checked": ["finite", "non-negative", "max value", "total GM ml", "inside MNI brain mask"],
        "total_gm_ml": [round(t, 1) for t in totals],
        "inside_brain": [round(f, 3) for f in inside],
    }
