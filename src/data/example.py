"""A small example study written the way CAT12, fMRIPrep or FreeSurfer write theirs: the tutorials' data.

``python -m src.data.example --tool cat12 --out example`` writes three cohorts — ``hospitalA`` (discovery,
ketamine, two scanner sites), ``hospitalB`` (external, ketamine, a site of its own) and ``placebo`` (control,
saline) — each with ``participants.tsv``, ``dataset_description.json`` and the tool's own outputs:

- ``cat12``: ``derivatives/CAT12.8/mri/mwp1<name>.nii`` (modulated GM, uncompressed, LAS as SPM writes) and
  ``report/cat_<name>.xml`` holding ``vol_TIV``, with ``<name> = sub-<label>_T1w``; participants.tsv has no
  ``tiv`` column (CAT12 users read it from the reports).
- ``fmriprep``: ``derivatives/fmriprep/sub-<label>/anat/sub-<label>_space-MNI152NLin2009cSym_label-GM_probseg
  .nii.gz`` and a ``tiv`` column (fMRIPrep does not estimate TIV; FreeSurfer's eTIV is the usual source).
- ``freesurfer``: a ``SUBJECTS_DIR`` per cohort, ``derivatives/freesurfer/<label>/stats/aseg.stats`` (the
  regional GM volumes in mm³ as ``Volume_mm3`` per ``StructName``, and the ``eTIV`` measure): no images.

The anatomy, the sites and a planted response signature (frontal GM larger, cerebellar GM smaller in ketamine
responders) come from the project's simulator (:func:`src.data.simulate.simulate_cohorts`, at 3 mm), so the
example is small (60 + 30 + 30 subjects, GM maps only: ~155 MB as CAT12's .nii, ~70 MB as fMRIPrep's .nii.gz)
and quick (~25 s), and the tutorials have a signal to find. The files are identical for identical arguments.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
import yaml

from src.data.contract import DEFAULT_SPACE, image_relpath
from src.data.simulate import simulate_cohorts
from src.data.templates import atlas_on_grid

TOOLS: tuple[str, ...] = ("cat12", "fmriprep", "freesurfer")
PIPELINES: dict[str, str] = {"cat12": "CAT12.8", "fmriprep": "fmriprep", "freesurfer": "freesurfer"}
# name: (role, treatment, n, responders, sites, id prefix, share of the discovery signature)
STUDY: dict[str, tuple[str, str, int, int, list[str], str, float]] = {
    "hospitalA": ("discovery", "ketamine", 60, 30, ["siteA1", "siteA2"], "a", 1.0),
    "hospitalB": ("external", "ketamine", 30, 15, ["siteB"], "b", 0.5),
    "placebo": ("control", "saline", 30, 10, ["siteC"], "c", 0.0),
}
EFFECT_SIZE = 1.2
SIMULATED_CONFIG = Path(__file__).resolve().parents[2] / "conf" / "data" / "simulated.yaml"


def study_roles() -> dict[str, str]:
    """Cohort name -> role of the example study."""
    return {name: spec[0] for name, spec in STUDY.items()}


def simulation_settings(seed: int) -> dict[str, Any]:
    """The default simulation (``conf/data/simulated.yaml``) with the example's three cohorts at 3 mm."""
    sim = yaml.safe_load(SIMULATED_CONFIG.read_text())["simulation"]
    sim["seed"] = int(seed)
    sim["resolution"] = 3.0
    sim.pop("clinical", None)  # the tutorials are about images and tables
    # 60 patients instead of 99: a stronger signature than the default's (d = 0.6) keeps it findable
    sim["signature"]["effect_size"] = EFFECT_SIZE
    sim["cohorts"] = {
        name: {
            "n": n,
            "responders": responders,
            "treatment": treatment,
            "sites": sites,
            "id_prefix": prefix,
            "signature_scale": scale,
        }
        for name, (_, treatment, n, responders, sites, prefix, scale) in STUDY.items()
    }
    return sim


def _tissue_paths(folder: Path, pid: str) -> dict[str, Path]:
    return {t: folder / image_relpath(pid, t, "simvbm", DEFAULT_SPACE) for t in ("GM", "WM", "CSF")}


def _as_cat12(simulated: Path, cohort: Path, participants: pd.DataFrame) -> None:
    deriv = cohort / "derivatives" / PIPELINES["cat12"]
    (deriv / "mri").mkdir(parents=True)
    (deriv / "report").mkdir()
    for pid in participants["participant_id"]:
        img = nib.load(_tissue_paths(simulated, pid)["GM"])
        data = np.asarray(img.dataobj, dtype=np.float32)
        # CAT12 writes uncompressed NIfTI in SPM's LAS orientation; the pipeline reads any orientation
        flipped = nib.Nifti1Image(np.ascontiguousarray(data[::-1]), img.affine @ _flip_x(data.shape[0]))
        nib.save(flipped, deriv / "mri" / f"mwp1{pid}_T1w.nii")
        tiv = _tiv(simulated, pid)
        (deriv / "report" / f"cat_{pid}_T1w.xml").write_text(
            '<?xml version="1.0" encoding="utf-8"?>\n<S>\n  <subjectmeasures>\n'
            f"    <vol_TIV>{tiv:.4f}</vol_TIV>\n  </subjectmeasures>\n</S>\n"
        )


def _flip_x(nx: int) -> np.ndarray:
    """The affine change that keeps world coordinates when the first voxel axis is reversed."""
    flip = np.eye(4)
    flip[0, 0], flip[0, 3] = -1.0, nx - 1.0
    return flip


def _as_fmriprep(simulated: Path, cohort: Path, participants: pd.DataFrame) -> None:
    for pid in participants["participant_id"]:
        target = cohort / image_relpath(pid, "GM", PIPELINES["fmriprep"], DEFAULT_SPACE)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(_tissue_paths(simulated, pid)["GM"], target)


def _as_freesurfer(simulated: Path, cohort: Path, participants: pd.DataFrame, atlas: str) -> None:
    # Regional volumes as an atlas-based segmentation reports them: the sum of the modulated GM map per region
    # (what the pipeline's NiftiLabelsMasker computes for images); aseg.stats lists them in mm³ with the eTIV.
    first = nib.load(_tissue_paths(simulated, participants["participant_id"].iloc[0])["GM"])
    labels_img, labels = atlas_on_grid(atlas, first)
    labels = labels[labels["n_voxels"] > 0]
    label_data = np.asarray(labels_img.dataobj)
    voxel_mm3 = float(np.prod(first.header.get_zooms()[:3]))
    for pid in participants["participant_id"]:
        gm = np.asarray(nib.load(_tissue_paths(simulated, pid)["GM"]).dataobj, dtype=np.float64)
        sums = np.bincount(label_data.ravel(), weights=gm.ravel(), minlength=int(labels["index"].max()) + 1)
        rows = [
            f"{k + 1:3d} {int(index):5d} {int(n):7d} {sums[int(index)] * voxel_mm3:12.1f}  {name:<30s} "
            "80.0 10.0 40.0 110.0 70.0"
            for k, (index, name, n) in enumerate(
                labels[["index", "name", "n_voxels"]].itertuples(index=False)
            )
        ]
        stats = cohort / "derivatives" / PIPELINES["freesurfer"] / pid.removeprefix("sub-") / "stats"
        stats.mkdir(parents=True)
        (stats / "aseg.stats").write_text(
            "\n".join(
                [
                    "# Title Segmentation Statistics",
                    "# generating_program mri_segstats",
                    f"# subjectname {pid.removeprefix('sub-')}",
                    "# Measure EstimatedTotalIntraCranialVol, eTIV, Estimated Total Intracranial Volume, "
                    f"{_tiv(simulated, pid) * 1000.0:.6f}, mm^3",
                    f"# NRows {len(rows)}",
                    "# NTableCols 10",
                    "# ColHeaders  Index SegId NVoxels Volume_mm3 StructName normMean normStdDev normMin "
                    "normMax normRange",
                    *rows,
                ]
            )
            + "\n"
        )


def write_example(out: str | Path, tool: str, *, seed: int = 2026, n_jobs: int = 1) -> Path:
    """Write the example study under ``out`` as ``tool`` writes its outputs and return ``out``.

    Parameters
    ----------
    out : path
        A folder that does not exist yet; it receives one folder per cohort.
    tool : {"cat12", "fmriprep", "freesurfer"}
        Whose output layout to write.
    seed : int
        Fixes every random choice of the simulation.
    n_jobs : int
        Parallel workers of the simulation; the files are identical for any value.
    """
    if tool not in TOOLS:
        raise SystemExit(f"--tool must be one of {', '.join(TOOLS)}, got {tool!r}")
    out = Path(out)
    if out.exists():
        raise SystemExit(f"{out} exists: the example is written into a new folder")
    sim = simulation_settings(seed)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent if out.parent.exists() else None))
    try:
        simulated = partial / "_simulated"
        simulate_cohorts(sim, simulated, cohorts=list(STUDY), n_jobs=n_jobs, progress=False)
        for name in STUDY:
            source, cohort = simulated / name, partial / name
            cohort.mkdir()
            shutil.copyfile(source / "dataset_description.json", cohort / "dataset_description.json")
            participants = pd.read_csv(source / "participants.tsv", sep="\t", dtype={"participant_id": str})
            if tool == "cat12":
                _as_cat12(source, cohort, participants)
            elif tool == "fmriprep":
                _as_fmriprep(source, cohort, participants)
                participants["tiv"] = [round(_tiv(source, pid), 1) for pid in participants["participant_id"]]
            else:
                _as_freesurfer(source, cohort, participants, str(sim["atlas"]))
            participants.to_csv(cohort / "participants.tsv", sep="\t", index=False, lineterminator="\n")
        shutil.rmtree(simulated)
        out.parent.mkdir(parents=True, exist_ok=True)
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out


def _tiv(simulated: Path, pid: str) -> float:
    """GM + WM + CSF in ml: the simulated subject's intracranial volume."""
    total = 0.0
    for path in _tissue_paths(simulated, pid).values():
        img = nib.load(path)
        voxel_ml = float(np.prod(img.header.get_zooms()[:3])) / 1000.0
        total += float(np.asarray(img.dataobj, dtype=np.float64).sum()) * voxel_ml
    return total


def main() -> None:
    """``python -m src.data.example --tool {cat12,fmriprep,freesurfer} --out DIR``."""
    parser = argparse.ArgumentParser(prog="python -m src.data.example", description=__doc__.split("\n\n")[0])
    parser.add_argument("--tool", required=True, choices=TOOLS, help="whose output layout to write")
    parser.add_argument("--out", required=True, help="a new folder for the study")
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--n-jobs", type=int, default=1)
    args = parser.parse_args()
    out = write_example(args.out, args.tool, seed=args.seed, n_jobs=args.n_jobs)
    for name, role in study_roles().items():
        table = pd.read_csv(out / name / "participants.tsv", sep="\t")
        print(f"{out / name}: {role}, {len(table)} subjects ({', '.join(sorted(table['site'].unique()))})")


if __name__ == "__main__":
    main()
