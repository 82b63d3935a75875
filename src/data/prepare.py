"""``python -m src.data.prepare``: the pipeline's first stage, for the embedded default and for a user's data.

- ``data=simulated`` (default): writes the simulated cohorts to ``data.root`` (``data/cohorts``).
- any other data config (e.g. ``data=bids``): validates every cohort of ``data.cohorts`` (roles, contract
  columns, outcome, the images or regional tables, one grid) **and** checks that the data hold what the
  pipeline will ask of them: every feature set that ``params.yaml`` builds or trains (``feature_sets``,
  ``experiments``) finds its tissues (and GM + WM + CSF where there is no TIV) in every cohort. All problems
  are reported at once, naming the experiment, the feature set, the cohort and the missing tissue, before
  any feature is extracted. Writes ``${paths.cohorts}/validated.json`` with each cohort's role, subjects and
  input hashes, so the feature stage reruns exactly when the data change.

Example::

    python -m src.data.prepare data=bids data.root=/data/ketamine
"""

from __future__ import annotations

from pathlib import Path

import hydra
from omegaconf import DictConfig

from src.config.cli import run, start
from src.data.cohorts import cohort_specs
from src.data.plausibility import PlausibilityBounds
from src.data.simulate import simulate_cohorts
from src.data.validation import pipeline_feature_sets, validate_cohorts
from src.utils.errors import user_errors
from src.utils.io import write_json_atomic


@hydra.main(version_base="1.3", config_path="../../conf", config_name="config")
@user_errors
def main(cfg: DictConfig) -> None:
    """Validate the cohorts of the data config (or simulate the default ones) and what ``params.yaml`` asks of
    them."""
    config = start(cfg)
    data = config.data
    specs = cohort_specs(data)  # roles are checked before anything is simulated or read
    if data.simulation is not None:
        simulate_cohorts(
            data.simulation,
            data.root,
            pipeline=data.pipeline,
            space=data.space,
            cohorts=[s.name for s in specs],
            n_jobs=config.n_jobs,
        )
        return
    plan = pipeline_feature_sets(config.params_file, config.features)
    summary = validate_cohorts(data, plan, data.plausibility or PlausibilityBounds())
    write_json_atomic(Path(config.paths.cohorts) / "validated.json", summary)
    for name, c in summary["cohorts"].items():
        print(f"{name} ({c['role']}): {c['n']} subjects ({c['responders']} responders) valid")
    print(f"feature sets supported by every cohort: {', '.join(plan)}")


if __name__ == "__main__":
    run(main, __doc__)
