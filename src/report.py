"""``python -m src.report``: one report across experiments, from what train and evaluate wrote.

Writes ``${report.dir}/report.html`` (self-contained: figures inlined), ``report.md`` with ``figures/``, and
``summary.csv``; attaches the HTML to each experiment's MLflow training run when tracking is on.

Needs at least one trained experiment (those listed in ``params.yaml``, or ``report.experiments``); an
experiment not yet evaluated is reported with its training results and a note.

Example::

    python -m src.report report.experiments=[gm_only,gm_wm]
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from src.config.cli import run, start
from src.config.params import listed_experiments
from src.data.cohorts import is_simulated
from src.reporting.document import ExperimentResults, render_html, render_markdown, summary_table
from src.reporting.fusion import comparison_folder, fusion_section
from src.utils.errors import user_errors
from src.utils.io import atomic_directory, write_text_atomic
from src.utils.provenance import dvc_output_md5

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@user_errors
def main(cfg: DictConfig) -> dict[str, Any]:
    """The report of the listed experiments (``python -m src.report``); returns its summary."""
    config = start(cfg)
    names = listed_experiments(config.report.experiments, config.report.params_file, "report.experiments")
    experiments = [ExperimentResults.load(name, Path(config.paths.output) / name) for name in names]
    feature_sets = {e.config.features.name for e in experiments}
    dvc_hashes = {name: dvc_output_md5(Path(config.paths.features) / name) for name in feature_sets}
    truth = Path(config.data.root) / "ground_truth.json" if is_simulated(config.data) else None
    fusion = fusion_section(
        {e.name: e.config for e in experiments},
        {e.name: float(e.train["ensemble"]["auc"]) for e in experiments},
        comparison_folder(Path(config.compare.dir), names),
        truth,
    )
    out_dir = Path(config.report.dir)
    with atomic_directory(out_dir) as out:
        write_text_atomic(out / "report.md", render_markdown(experiments, dvc_hashes, out, fusion))
        write_text_atomic(out / "report.html", render_html(experiments, dvc_hashes, fusion))
        summary = summary_table(experiments)
        summary.to_csv(out / "summary.csv", index=False)
    settings = config.tracking
    run_ids = [e.training_run_id for e in experiments if e.training_run_id]
    if settings.enabled and run_ids:
        # lazy: the tracking modules load MLflow (0.9 s, benchmarks/import_time.py); not with tracking off
        from src.tracking.report import log_report

        log_report(settings, run_ids, out_dir / "report.html")
    print(f"report of {len(experiments)} experiment(s): {out_dir / 'report.html'}, {out_dir / 'report.md'}")
    print(summary.to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    return {"experiments": names}


if __name__ == "__main__":
    run(main, __doc__)
