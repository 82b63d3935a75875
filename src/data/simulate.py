"""Realistic simulated cohorts with a planted, known response signature.

``python -m src.data.simulate`` (Hydra; settings in ``conf/data/simulated.yaml``) writes the four default
cohorts — discovery (99, 52 responders, ketamine), external_a and external_b (51 in total, ketamine, one
scanner site each) and saline (49) — in the cohort data contract, plus ``ground_truth.json`` beside them.

Each subject's modulated GM, WM and CSF maps are nilearn's MNI152 tissue templates, scaled to the subject's
intracranial volume (sex effect: men ~12 % larger) and multiplied, in log space, by
age-related decline, correlated regional biological variation (a global, a lobar/structural and a
left-right homologue component on the AAL atlas regions), a regionally varying multiplicative scanner
effect per site (< 10 %), smooth spatial noise and — in ketamine cohorts only — the planted signature:
a shift of ``effect_size`` regional SDs between responders and non-responders in the named regions.
CSF takes up whatever GM and WM leave of the intracranial volume, so GM + WM + CSF sums to the subject's
TIV. In the saline cohort the response label is drawn independently of anatomy.
"""

from __future__ import annotations

import logging
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from joblib import Parallel, delayed
from scipy.ndimage import gaussian_filter
from tqdm.auto import tqdm

from src.data.contract import DEFAULT_SPACE, SIMULATOR_MARK, image_relpath
from src.data.simulate_clinical import fusion_truth, signature_direction, signature_scores, simulate_clinical
from src.data.templates import atlas_on_grid, load_tissue_templates
from src.utils.io import atomic_directory, write_json_atomic, write_text_atomic
from src.utils.logging import status

log = logging.getLogger(__name__)
FWHM_TO_SIGMA = 1.0 / np.sqrt(8.0 * np.log(2.0))


def _stable_seed(*parts: object) -> list[int]:
    """Seed sequence from the run seed and names: independent of cohort order and worker count."""
    out = []
    for part in parts:
        out.append(int(part) if isinstance(part, (int, np.integer)) else zlib.crc32(str(part).encode()))
    return out


@dataclass(frozen=True)
class Anatomy:
    """Everything shared by all subjects of a simulation: templates, atlas and correlation structure."""

    resolution: float
    affine: np.ndarray
    templates: dict[str, np.ndarray]  # GM, WM, CSF probability on the grid
    region_index: np.ndarray  # voxel -> region position (n_regions = background)
    regions: pd.DataFrame  # index, name, n_voxels
    cholesky: np.ndarray  # of the regional correlation matrix
    template_tiv_ml: float


def build_anatomy(resolution: float, atlas: str, anatomy_cfg: dict[str, Any]) -> Anatomy:
    """Load the bundled templates and atlas on the ``resolution`` grid and the regional correlation."""
    templates = load_tissue_templates(float(resolution))
    gm_img = templates["GM"]
    atlas_img, labels = atlas_on_grid(atlas, gm_img)
    labels = labels[labels["n_voxels"] > 0].reset_index(drop=True)
    lookup = np.full(int(np.asarray(atlas_img.dataobj).max()) + 1, len(labels), dtype=np.int32)
    lookup[labels["index"].to_numpy()] = np.arange(len(labels), dtype=np.int32)
    region_index = lookup[np.asarray(atlas_img.dataobj)]
    data = {k: np.asarray(v.dataobj, dtype=np.float32) for k, v in templates.items()}
    voxel_ml = float(resolution) ** 3 / 1000.0
    template_tiv = float(sum(d.sum() for d in data.values()) * voxel_ml)
    corr = regional_correlation(labels["name"].tolist(), anatomy_cfg)
    return Anatomy(
        resolution=float(resolution),
        affine=gm_img.affine,
        templates=data,
        region_index=region_index,
        regions=labels,
        cholesky=np.linalg.cholesky(corr),
        template_tiv_ml=template_tiv,
    )


def _structure(name: str) -> str:
    """Coarse structure of an atlas label: its first name token (Frontal, Cerebelum, Temporal, ...)."""
    return name.replace("Left_", "").replace("Right_", "").split("_")[0]


def _homolog(name: str) -> str:
    for left, right in (("_L", "_R"), ("Left_", "Right_")):
        name = name.replace(right, left)
    return name


def regional_correlation(names: list[str], anatomy_cfg: dict[str, Any]) -> np.ndarray:
    """Correlation of regional GM variation: global + same structure + left/right homologue."""
    structure = np.array([_structure(n) for n in names])
    homolog = np.array([_homolog(n) for n in names])
    g = float(anatomy_cfg["global_correlation"])
    s = float(anatomy_cfg["group_correlation"])
    h = float(anatomy_cfg["homolog_correlation"])
    if g + s + h >= 1:
        raise ValueError("global + group + homolog correlation must be < 1")
    corr = g + s * (structure[:, None] == structure[None, :]) + h * (homolog[:, None] == homolog[None, :])
    np.fill_diagonal(corr, 1.0)
    return corr


def resolve_signature(regions: pd.DataFrame, signature_cfg: dict[str, Any]) -> pd.DataFrame:
    """Planted regions (atlas index, name, sign, effect size); an unknown region name is an error."""
    rows = []
    names = regions["name"].tolist()
    for spec in signature_cfg.get("regions", []):
        name, sign = str(spec["name"]), int(spec["sign"])
        if name not in names:
            raise ValueError(
                f"planted region {name!r} is not an atlas region (or vanished at this resolution)"
            )
        if sign not in (-1, 1):
            raise ValueError(f"planted region {name!r}: sign must be 1 or -1, got {sign}")
        effect = float(spec.get("effect_size", signature_cfg["effect_size"]))
        rows.append(
            {
                "position": names.index(name),
                "index": int(regions["index"].iloc[names.index(name)]),
                "name": name,
                "sign": sign,
                "effect_size": effect,
            }
        )
    return pd.DataFrame(rows, columns=["position", "index", "name", "sign", "effect_size"])


def site_effects(site: str, seed: int, n_regions: int, anatomy_cfg: dict[str, Any]) -> dict[str, np.ndarray]:
    """Log-scale multiplicative scanner effect of ``site`` per region, for GM and WM (|effect| < site_max)."""
    rng = np.random.default_rng(_stable_seed(seed, "site", site))
    sd, bound = float(anatomy_cfg["site_sd"]), float(anatomy_cfg["site_max"])
    out = {}
    for tissue in ("GM", "WM"):
        overall = rng.normal(0.0, sd)
        regional = rng.normal(0.0, sd / 2.0, n_regions)
        out[tissue] = np.clip(overall + regional, -bound, bound)
    return out


def simulate_participants(name: str, spec: dict[str, Any], sim: dict[str, Any]) -> pd.DataFrame:
    """Demographics, exact responder count and MADRS scores consistent with each subject's response."""
    demo = sim["demographics"]
    anat = sim["anatomy"]
    n, n_resp = int(spec["n"]), int(spec["responders"])
    if not 0 <= n_resp <= n or n < 1:
        raise ValueError(
            f"cohort {name}: need 0 <= responders <= n and n >= 1, got n={n}, responders={n_resp}"
        )
    rng = np.random.default_rng(_stable_seed(sim["seed"], "participants", name))
    response = rng.permutation(np.r_[np.ones(n_resp, int), np.zeros(n - n_resp, int)])
    sex = np.where(rng.random(n) < float(demo["female_fraction"]), "F", "M")
    age = rng.normal(demo["age_mean"], demo["age_sd"], n)
    age = np.round(np.clip(age, demo["age_min"], demo["age_max"]), 1)
    sites = list(spec["sites"])
    site = np.array(sites)[rng.integers(0, len(sites), n)] if len(sites) > 1 else np.full(n, sites[0])
    tiv_mean = np.where(sex == "M", anat["tiv_female_ml"] * anat["tiv_male_ratio"], anat["tiv_female_ml"])
    tiv = tiv_mean * np.exp(rng.normal(0.0, anat["tiv_sd_ml"] / anat["tiv_female_ml"], n))
    baseline = np.clip(
        np.rint(rng.normal(demo["madrs_baseline_mean"], demo["madrs_baseline_sd"], n)),
        demo["madrs_baseline_min"],
        60,
    ).astype(int)
    reduction = relative_reduction(response, rng)
    followup = np.clip(np.rint(baseline * (1.0 - reduction)), 0, 60).astype(int)
    # rounding must not flip the label: responders need 2 (b - f) >= b, i.e. f <= floor(b / 2)
    half = baseline // 2
    followup = np.where(response == 1, np.minimum(followup, half), np.maximum(followup, half + 1))
    ids = [f"sub-{spec.get('id_prefix', name[:2])}{i + 1:03d}" for i in range(n)]
    return pd.DataFrame(
        {
            "participant_id": ids,
            "age": age,
            "sex": sex,
            "site": site,
            "treatment": spec["treatment"],
            "madrs_baseline": baseline,
            "madrs_24h": followup,
            "response": response,
            "tiv_true": np.round(tiv, 2),
        }
    )


def relative_reduction(response: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The relative MADRS reduction drawn per class: responders 50-100 % (0.5 + 0.5 Beta(2, 3)),
    non-responders -20 to 49 % (-0.2 + 0.69 Beta(2.5, 2))."""
    n = len(response)
    return np.where(response == 1, 0.5 + 0.5 * rng.beta(2.0, 3.0, n), -0.2 + 0.69 * rng.beta(2.5, 2.0, n))


def change_truth(
    distance: float, responder_fraction: float, seed: int, size: int = 400_000
) -> dict[str, Any]:
    """The ground truth of the continuous outcome in the discovery cohort: the planted signature shifts the
    GM of responders against non-responders (it depends on the label, not on the size of the change), so
    the population-optimal imaging score (``N(0, 1) + D (response - 1/2)``, ``D`` its Mahalanobis distance)
    relates to the percentage reduction only through the label. Its Pearson r with the reduction, from a
    draw of ``size`` subjects of the generative model, is the ceiling of a learned model's r (and r² of its
    R²)."""
    rng = np.random.default_rng([seed, 20261201])
    response = (rng.random(size) < responder_fraction).astype(int)
    score = rng.standard_normal(size) + distance * (response - 0.5)
    reduction = 100.0 * relative_reduction(response, rng)
    r = float(np.corrcoef(score, reduction)[0, 1])
    return {
        "description": "Pearson r (and r^2) of the population-optimal imaging score with the percentage "
        "MADRS "
        "reduction in the discovery cohort (no learning noise: a ceiling for a model learned on it)",
        "target": "percent_reduction",
        "pearson_r_imaging": round(r, 4),
        "r2_imaging": round(r * r, 4),
        "reduction_mean": round(float(reduction.mean()), 2),
        "reduction_sd": round(float(reduction.std()), 2),
    }


def regional_log_effects(
    participants: pd.DataFrame,
    spec: dict[str, Any],
    sim: dict[str, Any],
    anatomy: Anatomy,
    signature: pd.DataFrame,
    cohort: str,
) -> dict[str, np.ndarray]:
    """Per-subject, per-region log-scale GM and WM effects (biology, age, site, planted signature)."""
    anat = sim["anatomy"]
    n, n_regions = len(participants), len(anatomy.regions)
    rng = np.random.default_rng(_stable_seed(sim["seed"], "regions", cohort))
    sd = float(anat["regional_sd"])
    biology = sd * rng.standard_normal((n, n_regions)) @ anatomy.cholesky.T
    gm = biology.copy()
    wm = 0.5 * sd * rng.standard_normal((n, n_regions)) @ anatomy.cholesky.T
    age_c = (participants["age"].to_numpy() - float(sim["demographics"]["age_mean"]))[:, None]
    gm -= float(anat["gm_age_decline"]) * age_c
    wm -= float(anat["wm_age_decline"]) * age_c
    for site in participants["site"].unique():
        rows = (participants["site"] == site).to_numpy()
        effect = site_effects(site, int(sim["seed"]), n_regions, anat)
        gm[rows] += effect["GM"]
        wm[rows] += effect["WM"]
    scale = float(spec.get("signature_scale", 1.0)) if spec["treatment"] == "ketamine" else 0.0
    if scale and len(signature):
        centred = participants["response"].to_numpy()[:, None] - 0.5
        sexes = sim["signature"].get("sexes")  # planted in these sexes only (a subgroup); default: everyone
        if sexes:
            centred = centred * participants["sex"].isin(list(sexes)).to_numpy()[:, None]
        shift = (signature["sign"] * signature["effect_size"]).to_numpy()[None, :] * sd * scale
        gm[:, signature["position"].to_numpy()] += centred * shift
    return {"GM": gm, "WM": wm, "biology": biology}


def subject_maps(
    anatomy: Anatomy,
    gm_regions: np.ndarray,
    wm_regions: np.ndarray,
    tiv_ml: float,
    seed: list[int],
    noise_sd: float,
    noise_fwhm_mm: float,
) -> dict[str, np.ndarray]:
    """Modulated GM, WM and CSF maps (float32) of one subject from its regional effects."""
    rng = np.random.default_rng(seed)
    sigma_noise = noise_fwhm_mm * FWHM_TO_SIGMA / anatomy.resolution
    sigma_edges = 6.0 * FWHM_TO_SIGMA / anatomy.resolution  # soften region boundaries (6 mm FWHM)
    t = anatomy.templates
    scale = tiv_ml / anatomy.template_tiv_ml
    out = {}
    for tissue, regional in (("GM", gm_regions), ("WM", wm_regions)):
        field = np.append(regional, 0.0)[anatomy.region_index]
        field = gaussian_filter(field, sigma_edges, mode="nearest")
        noise = gaussian_filter(rng.standard_normal(field.shape), sigma_noise, mode="nearest")
        noise *= noise_sd / max(float(noise.std()), 1e-12)
        out[tissue] = (t[tissue] * scale * np.exp(field + noise)).astype(np.float32)
    total = (t["GM"] + t["WM"] + t["CSF"]) * scale
    out["CSF"] = np.clip(total - out["GM"] - out["WM"], 0.0, None).astype(np.float32)
    return out


def _nifti(data: np.ndarray, affine: np.ndarray, description: str) -> nib.Nifti1Image:
    img = nib.Nifti1Image(data, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=4)  # 4 = MNI152
    img.set_sform(affine, code=4)
    img.header["descrip"] = description.encode()[:79]
    return img


def _write_subject(
    folder: Path,
    pid: str,
    anatomy: Anatomy,
    gm: np.ndarray,
    wm: np.ndarray,
    tiv: float,
    seed: list[int],
    noise_sd: float,
    noise_fwhm: float,
    pipeline: str,
    space: str,
) -> None:
    maps = subject_maps(anatomy, gm, wm, tiv, seed, noise_sd, noise_fwhm)
    for tissue, data in maps.items():
        path = folder / image_relpath(pid, tissue, pipeline, space)
        path.parent.mkdir(parents=True, exist_ok=True)
        nib.save(_nifti(data, anatomy.affine, f"simulated modulated {tissue}"), path)


def simulate_cohorts(
    sim: dict[str, Any],
    root: str | Path,
    *,
    pipeline: str = "simvbm",
    space: str = DEFAULT_SPACE,
    cohorts: list[str] | None = None,
    n_jobs: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Write the simulated cohorts under ``root`` and return the ground truth (also written to disk).

    Parameters
    ----------
    sim : dict
        The ``data.simulation`` config (seed, resolution, atlas, cohorts, demographics, anatomy,
        signature).
    root : path
        Folder that receives one sub-folder per cohort and ``ground_truth.json``.
    pipeline, space : str
        Derivatives folder name and ``space-`` entity of the written maps.
    cohorts : list of str, optional
        Subset of ``sim["cohorts"]`` to write (default: all).
    n_jobs : int
        Parallel workers over subjects; the files are identical for any value.
    progress : bool
        Show a progress bar per cohort (stderr).
    """
    root = Path(root)
    anatomy = build_anatomy(float(sim["resolution"]), str(sim["atlas"]), sim["anatomy"])
    signature = resolve_signature(anatomy.regions, sim["signature"])
    names = cohorts or list(sim["cohorts"])
    truth: dict[str, Any] = {
        "seed": int(sim["seed"]),
        "resolution_mm": anatomy.resolution,
        "atlas": sim["atlas"],
        "signature": {
            "description": "log-scale GM shift of effect_size x regional_sd between responders and "
            "non-responders (sign +1: larger in responders), ketamine cohorts only",
            "regional_sd": float(sim["anatomy"]["regional_sd"]),
            "regions": signature.drop(columns="position").to_dict(orient="records"),
        },
        "cohorts": {},
        "config": sim,
    }
    for name in names:
        spec = sim["cohorts"][name]
        status(f"simulate {name}: {int(spec['n'])} subjects ...")
        participants = simulate_participants(name, spec, sim)
        effects = regional_log_effects(participants, spec, sim, anatomy, signature, name)
        if sim.get("clinical"):  # own random stream: the images are the same with or without it
            scores = signature_scores(
                effects["biology"], anatomy.cholesky, signature, float(sim["anatomy"]["regional_sd"])
            )
            clinical = simulate_clinical(
                participants, scores, spec, sim["clinical"], _stable_seed(sim["seed"], "clinical", name)
            )
            participants = pd.concat([participants, clinical], axis=1)
        with atomic_directory(root / name) as folder:
            jobs = (
                delayed(_write_subject)(
                    folder,
                    pid,
                    anatomy,
                    effects["GM"][i],
                    effects["WM"][i],
                    float(participants["tiv_true"].iloc[i]),
                    _stable_seed(sim["seed"], "voxels", name, i),
                    float(sim["anatomy"]["noise_sd"]),
                    float(sim["anatomy"]["noise_fwhm_mm"]),
                    pipeline,
                    space,
                )
                for i, pid in enumerate(participants["participant_id"])
            )
            bar = tqdm(total=len(participants), desc=f"simulate {name}", disable=not progress, leave=True)
            for _ in Parallel(n_jobs=n_jobs, return_as="generator")(jobs):
                bar.update()
            bar.close()
            _write_cohort_metadata(folder, name, participants, pipeline, sim.get("clinical"))
        truth["cohorts"][name] = {
            "n": len(participants),
            "responders": int(participants["response"].sum()),
            "treatment": spec["treatment"],
            "sites": sorted(participants["site"].unique().tolist()),
            "signature_scale": float(spec.get("signature_scale", 1.0))
            if spec["treatment"] == "ketamine"
            else 0.0,
        }
        log.info(
            "simulated cohort %s: n=%d, responders=%d",
            name,
            len(participants),
            int(participants["response"].sum()),
        )
    if sim.get("clinical"):
        truth["fusion"] = fusion_truth(anatomy.cholesky, signature, sim["clinical"], int(sim["seed"]))
    discovery = [c for c in names if sim["cohorts"][c]["treatment"] == "ketamine"][:1]
    if discovery and len(signature):
        spec = sim["cohorts"][discovery[0]]
        _, distance = signature_direction(anatomy.cholesky, signature)
        truth["continuous"] = change_truth(
            distance * float(spec.get("signature_scale", 1.0)),
            int(spec["responders"]) / int(spec["n"]),
            int(sim["seed"]),
        )
    write_json_atomic(root / "ground_truth.json", truth)
    return truth


def _write_cohort_metadata(
    folder: Path, name: str, participants: pd.DataFrame, pipeline: str, clinical: dict[str, Any] | None
) -> None:
    write_json_atomic(
        folder / "dataset_description.json",
        {
            "Name": f"Simulated ketamine TRD cohort: {name}",
            "BIDSVersion": "1.9.0",
            "DatasetType": "raw",
            "License": "CC0",
            # the machine-readable mark every downstream document reads (src.data.cohorts.is_simulated)
            "GeneratedBy": [SIMULATOR_MARK],
        },
    )
    write_json_atomic(
        folder / "derivatives" / pipeline / "dataset_description.json",
        {
            "Name": f"Simulated modulated tissue maps: {name}",
            "BIDSVersion": "1.9.0",
            "DatasetType": "derivative",
            "GeneratedBy": [{"Name": "src.data.simulate", "Description": "ketamine-trd-smri simulator"}],
        },
    )
    table = participants.drop(columns=["response", "tiv_true"])
    write_text_atomic(folder / "participants.tsv", table.to_csv(sep="\t", index=False, lineterminator="\n"))
    write_json_atomic(
        folder / "participants.json",
        {
            "age": {"Description": "age at baseline", "Units": "years"},
            "sex": {"Description": "sex", "Levels": {"F": "female", "M": "male"}},
            "site": {"Description": "scanner site"},
            "treatment": {
                "Description": "single IV infusion",
                "Levels": {"ketamine": "ketamine 0.5 mg/kg", "saline": "saline placebo"},
            },
            "madrs_baseline": {"Description": "MADRS before infusion", "Units": "points (0-60)"},
            "madrs_24h": {"Description": "MADRS 24 h after infusion", "Units": "points (0-60)"},
            **{
                column: {"Description": str(variable.get("description", "simulated clinical variable"))}
                for column, variable in (clinical or {}).get("variables", {}).items()
            },
        },
    )


def main() -> None:
    """Hydra entry point: ``python -m src.data.simulate [overrides]``."""
    # lazy: `--help` answers before Hydra loads
    import hydra
    from omegaconf import DictConfig

    from src.config.cli import run, start
    from src.data.cohorts import cohort_names
    from src.utils.errors import user_errors

    @hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
    @user_errors
    def _run(cfg: DictConfig) -> None:
        data = start(cfg).data
        if data.simulation is None:
            raise SystemExit(f"data={data.name} has no 'simulation' section: nothing to simulate")
        simulate_cohorts(
            data.simulation,
            data.root,
            pipeline=data.pipeline,
            space=data.space,
            cohorts=cohort_names(data),
            n_jobs=int(cfg.n_jobs),
        )

    run(_run, __doc__)


if __name__ == "__main__":
    main()
