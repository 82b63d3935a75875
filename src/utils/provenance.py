"""Provenance of a run: git commit, package versions, data hashes — so every number can be traced."""

from __future__ import annotations

import hashlib
import platform
import subprocess
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

PACKAGES = (
    "numpy",
    "scipy",
    "pandas",
    "scikit-learn",
    "nilearn",
    "nibabel",
    "optuna",
    "mlflow",
    "hydra-core",
    "dvc",
)


DVC_WRITES = (
    ":(exclude)dvc.lock",
    ":(exclude,glob)**/.gitignore",
    ":(exclude,glob)**/metrics.json",
    # the DVC metrics beside metrics.json: removed and rewritten while `dvc repro` runs (counting them made
    # every result of a clean checkout's repro say "uncommitted changes")
    ":(exclude,glob)**/summary.json",
)

# the checkout this code runs from (not the current directory: runs may start anywhere)
CODE_ROOT = Path(__file__).resolve().parents[2]


def git_state(cwd: str | Path = CODE_ROOT) -> dict[str, object]:
    """Commit of the code's checkout and whether it has uncommitted changes (None outside a git checkout)."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        status = subprocess.run(
            # what DVC itself stages while the pipeline runs (lock file, .gitignore entries, metrics) is
            # not a change of the code
            ["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *DVC_WRITES],
            cwd=cwd,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": bool(status.strip())}


def code_fingerprint(packages: tuple[str, ...] = ("src/models", "src/validation")) -> dict[str, str]:
    """sha256 of the computation's own source files and the versions of the numerical libraries: what a
    checkpoint's results depend on besides data and settings (a git commit misses uncommitted edits)."""
    digest = hashlib.sha256()
    for folder in packages:
        for path in sorted((CODE_ROOT / folder).glob("*.py")):
            digest.update(path.name.encode())
            digest.update(path.read_bytes())
    versions = package_versions(("numpy", "scipy", "pandas", "scikit-learn", "optuna"))
    return {"source_sha256": digest.hexdigest(), **versions}


def package_versions(packages: tuple[str, ...] = PACKAGES) -> dict[str, str]:
    """Python's and the key packages' installed versions (``not installed`` when absent)."""
    out = {"python": platform.python_version()}
    for name in packages:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "not installed"
    return out


def dvc_output_md5(path: str | Path, lock: str | Path = "dvc.lock") -> str | None:
    """The md5 DVC recorded for an output (file or directory) in ``dvc.lock``; None if DVC does not track it.

    Read from the lock file rather than recomputed: it is the hash ``dvc status``/``dvc diff`` compare.
    """
    lock = Path(lock)
    if not lock.is_file():
        return None

    target = Path(path).resolve()
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for stage in stages.values():
        for out in stage.get("outs", []):
            if (lock.parent / out["path"]).resolve() == target:
                return out.get("md5")
    return None


def training_model_uri(training: Mapping[str, Any]) -> str | None:
    """The model a tracked training run produced: its registered version, else the run's logged model."""
    return training.get("registry_uri") or training.get("model_uri")
