"""Compare trained experiments pairwise: does one predict better than another beyond resampling noise?

Needs each experiment's training outputs (``python -m src.train``), and its evaluation for the independent
cohorts (``python -m src.evaluate``). The experiments must share the discovery cohort, seed and CV scheme, so
that their outer splits are the same (checked): the tests are paired. For every pair (A, B):

- discovery: the out-of-fold BAC and AUC of each; the corrected repeated-CV t-test of the outer-fold
  differences (Nadeau & Bengio; Bouckaert & Frank) and the Bayesian correlated t-test with a region of
  practical equivalence (``compare.rope``): P(A better), P(equivalent), P(B better);
- each evaluation group scored by both (external, control, ...): DeLong's test of the AUC difference, the BAC
  and net-benefit differences with stratified paired bootstrap 95 % intervals;
- Holm-adjusted p-values over the pairs.

Writes ``${compare.dir}/<A>-<B>[-...]/``: ``comparison.json``, ``comparison.csv``, ``comparison.md`` and
``comparison.png`` (every difference with its interval; each evaluation group's decision curves).

Example::

    python -m src.compare compare.experiments=[gm_only,gm_rbf]
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from src.config.cli import run, start
from src.config.params import listed_experiments
from src.config.settings import ExperimentConfig
from src.evaluation.model_comparison import (
    TrainedExperiment,
    compare_experiments,
    comparison_figure,
    comparison_table,
    is_continuous,
)
from src.tracking.store import check_store
from src.utils.errors import UserInputError, user_errors
from src.utils.io import atomic_directory, write_json_atomic, write_text_atomic
from src.utils.logging import status

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@user_errors
def main(cfg: DictConfig) -> dict[str, Any]:
    """Paired comparison of the listed experiments (``python -m src.compare``); returns the comparison
    document."""
    config = start(cfg)
    names = listed_experiments(config.compare.experiments, config.params_file, "compare.experiments")
    if config.compare.experiments is None:  # the DVC stage: the classifiers listed (regressors not yet)
        continuous = [name for name in names if _continuous(Path(config.paths.output) / name)]
        if continuous:
            print(
                f"not compared (a continuous outcome; src.compare compares classifiers): "
                f"{', '.join(continuous)}"
            )
        names = [name for name in names if name not in continuous]
    if len(names) < 2 and config.compare.experiments is None:  # the DVC stage with one experiment listed
        folder = Path(config.compare.dir)  # the DVC stage's output must exist; earlier comparisons stay
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / "README.txt", f"nothing to compare: {config.params_file} lists {names}\n")
        print(f"nothing to compare: {config.params_file} lists {names} (a comparison needs two)")
        return {}
    if len(names) < 2:
        raise UserInputError(f"compare.experiments lists {names}: a comparison needs at least two")
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise UserInputError(
            f"compare.experiments lists {', '.join(twice)} more than once: an experiment compared with "
            "itself differs by nothing (list two different experiments)"
        )
    experiments = [TrainedExperiment.load(name, Path(config.paths.output) / name) for name in names]
    unevaluated = [e.name for e in experiments if e.evaluated is None]
    if unevaluated:
        status(
            f"note: not evaluated: {', '.join(unevaluated)}; compared on the discovery CV only (run "
            "`python -m src.evaluate +experiment=<name>` for the evaluation cohorts)"
        )
    if config.tracking.enabled:
        check_store(config.tracking)  # before the work: a store that cannot be opened is one error
    rope = {"bac": config.compare.rope.bac, "auc": config.compare.rope.auc}
    document = compare_experiments(experiments, rope, config.compare.n_bootstrap, config.seed)
    table = comparison_table(document)
    out = Path(config.compare.dir) / "-".join(names)
    with atomic_directory(out) as tmp:
        write_json_atomic(tmp / "comparison.json", document)
        table.to_csv(tmp / "comparison.csv", index=False)
        comparison_figure(document, table, tmp / "comparison.png")
        shown = table.round(3).to_markdown(index=False, tablefmt="github")
        write_text_atomic(tmp / "comparison.md", shown + "\n")
    print(
        f"comparison of {', '.join(names)}: B - A is the mean outer-fold difference (discovery) or the AUC "
        "difference (DeLong); p: corrected repeated-CV t-test or DeLong, Holm over pairs"
    )
    print(shown)
    print(f"  written   {out}")
    if config.tracking.enabled:
        _track(config, names, document, out)
    return document


def _continuous(run: Path) -> bool:
    metrics = run / "train" / "metrics.json"
    return metrics.is_file() and is_continuous(json.loads(metrics.read_text()))


def _track(config: ExperimentConfig, names: list[str], document: dict[str, Any], out: Path) -> None:
    """One MLflow run per pair in the ``comparisons`` experiment; a failure is one warning (the files are
    written)."""
    # lazy: the tracking modules load MLflow (0.9 s, benchmarks/import_time.py); not with tracking off
    from src.tracking.comparison import log_comparison

    runs = {}
    for name in names:
        record = Path(config.paths.output) / name / "train" / "tracking.json"
        runs[name] = (json.loads(record.read_text()) or {}).get("run_id") if record.is_file() else None
    try:
        logged = log_comparison(config.tracking, document, out, runs)
    except Exception as err:  # MLflow, SQLAlchemy and network errors have no common base
        log.warning(
            "MLflow logging failed (%s: %s); the comparison is complete in %s", type(err).__name__, err, out
        )
        return
    for pair, run_id in logged.items():
        print(f"  MLflow    {pair}: run {run_id} (experiment 'comparisons')")


if __name__ == "__main__":
    run(main, __doc__)
