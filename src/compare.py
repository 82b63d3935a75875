"""Compare trained experiments pairwise: does one predict better than another beyond resampling noise?

Needs each experiment's training outputs (``python -m src.train``), and its evaluation for the independent
cohorts (``python -m src.evaluate``). The experiments must share the discovery cohort, seed and CV scheme, so
that their outer splits are the same (checked): the tests are paired. For every pair (A, B):

- discovery: the out-of-fold BAC and AUC of each; the corrected repeated-CV t-test of the outer-fold
  differences (Nadeau & Bengio; Bouckaert & Frank) and the Bayesian correlated t-test with a region of
  practical equivalence (``compare.rope``): P(A better), P(equivalent), P(B better);
- each evaluation group scored by both (external, control, ...): DeLong's test of the AUC difference, the BAC
  difference with a stratified paired bootstrap 95 % interval;
- Holm-adjusted p-values over the pairs.

Writes ``${compare.dir}/<A>-<B>[-...]/``: ``comparison.json``, ``comparison.csv``, ``comparison.md``.

Example::

    python -m src.compare compare.experiments=[gm_only,gm_rbf]
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
from omegaconf import DictConfig

from src.config.cli import run, start
from src.config.params import read_params
from src.evaluation.model_comparison import TrainedExperiment, compare_experiments, comparison_table
from src.utils.errors import MissingInputError, UserInputError, user_errors
from src.utils.io import atomic_directory, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@user_errors
def main(cfg: DictConfig) -> dict[str, Any]:
    config = start(cfg)
    names = list(config.compare.experiments or [])
    if not names:
        params = Path(config.params_file)
        if not params.is_file():
            raise MissingInputError(f"{params} not found: set compare.experiments=[a,b,...]")
        names = list(read_params(params).get("experiments") or [])
    if len(names) < 2:
        raise UserInputError(f"compare.experiments lists {names}: a comparison needs at least two")
    experiments = [TrainedExperiment.load(name, Path(config.paths.output) / name) for name in names]
    rope = {"bac": config.compare.rope.bac, "auc": config.compare.rope.auc}
    document = compare_experiments(experiments, rope, config.compare.n_bootstrap, config.seed)
    table = comparison_table(document)
    out = Path(config.compare.dir) / "-".join(names)
    with atomic_directory(out) as tmp:
        write_json_atomic(tmp / "comparison.json", document)
        table.to_csv(tmp / "comparison.csv", index=False)
        shown = table.round(3).to_markdown(index=False, tablefmt="github")
        write_text_atomic(tmp / "comparison.md", shown + "\n")
    print(f"comparison of {', '.join(names)} (pairs: B - A; p corrected/DeLong, Holm over pairs):")
    print(shown)
    print(f"  written   {out}")
    return document


if __name__ == "__main__":
    run(main, __doc__)
