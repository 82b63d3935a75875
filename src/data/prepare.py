"""``python -m src.data.prepare``: the pipeline's first stage, for the embedded default and for a user's data.

- ``data=simulated`` (default): writes the simulated cohorts to ``data.root`` (``data/cohorts``).
- any other data config (e.g. ``data=bids``): validates every listed cohort under ``data.root`` (contract
  columns, outcome, one image per subject and tissue, one grid) and writes ``${paths.cohorts}/validated.json``
  with each cohort's subjects and image hashes, so the feature stage reruns exactly when the data change.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig, OmegaConf

from src.data.loader import OutcomeSpec, load_cohort
from src.data.simulate import simulate_cohorts
from src.utils.io import file_md5, write_json_atomic
from src.utils.logging import configure_logging

log = logging.getLogger(__name__)


def validate_cohorts(data: dict[str, Any]) -> dict[str, Any]:
    """Load every cohort of ``data`` (raising a clear error naming the subject/file) and summarise it."""
    summary: dict[str, Any] = {"root": str(data["root"]), "cohorts": {}}
    tissues = ("GM",) if data.get("source", "images") == "images" else ()
    for name in data["cohorts"]:
        cohort = load_cohort(
            Path(data["root"]) / name,
            name=name,
            pipeline=data.get("pipeline"),
            space=data.get("space", "MNI152NLin2009cSym"),
            tissues=tissues,
            outcome=OutcomeSpec(**data.get("outcome", {})),
            on_grid_mismatch=data.get("on_grid_mismatch", "error"),
            with_images=bool(tissues),
        )
        summary["cohorts"][name] = {
            "n": len(cohort.participants),
            "responders": int(cohort.participants["response"].sum()),
            "excluded_missing_outcome": cohort.excluded,
            "participants_md5": file_md5(cohort.root / "participants.tsv"),
            "images_md5": {
                tissue: [file_md5(p) for p in paths] for tissue, paths in sorted(cohort.images.items())
            },
        }
    return summary


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
def main(cfg: DictConfig) -> None:
    configure_logging(bool(cfg.verbose))
    data = OmegaConf.to_container(cfg.data, resolve=True)
    if "simulation" in data:
        simulate_cohorts(
            data["simulation"],
            data["root"],
            pipeline=data["pipeline"],
            space=data["space"],
            cohorts=list(data["cohorts"]),
            n_jobs=int(cfg.n_jobs),
        )
        return
    summary = validate_cohorts(data)
    write_json_atomic(Path(cfg.paths.cohorts) / "validated.json", summary)
    for name, c in summary["cohorts"].items():
        print(f"{name}: {c['n']} subjects ({c['responders']} responders) valid")


if __name__ == "__main__":
    main()
