"""Merge the shards of a sharded permutation test (``python -m src.train permutation.shard=i/N``).

Reads ``${paths.run}/permutation/shard-*.json`` (written by ``python -m src.train permutation.shard=i/N``,
anywhere), refuses shards of other data, settings or code, overlapping shards and missing permutations, and
compares the null with the training's observed statistic (``train/predictions.csv``; training must have run
with the same data and settings). Writes ``${paths.run}/permutation/metrics.json`` (observed, n, p, null
summary, the shards merged), ``permutation_null.csv`` and ``permutation_null.png``; the evaluation and the
report read the p-value from there when it belongs to the current training.

Example::

    python -m src.merge_permutations +experiment=gm_only permutation.n=1000
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hydra
import numpy as np
import pandas as pd
from omegaconf import DictConfig

from src.config.cli import run, start
from src.reporting.console import p_text
from src.utils.errors import MissingInputError, UserInputError, user_errors
from src.utils.io import write_json_atomic
from src.validation.ensemble import train_metrics
from src.validation.experiment import experiment_inputs, permutation_key
from src.validation.nested_cv import objective_of
from src.validation.permutation import PermutationResult, observed_statistic, permutation_cv
from src.validation.regression import oof_statistic
from src.validation.shards import MERGED, merge_shards


def observed_decisions(train_dir: Path, ids: list[str], column: str = "decision") -> np.ndarray:
    """The real run's out-of-fold ``column`` (decision scores; a regressor's ``prediction`` and
    ``training_mean``), subjects in ``ids`` order x repeats."""
    path = train_dir / "predictions.csv"
    if not path.is_file():
        raise MissingInputError(f"{path} not found: train the experiment before merging its permutations")
    scores = pd.read_csv(path, dtype={"participant_id": str}).pivot(
        index="participant_id", columns="repeat", values=column
    )
    return scores.loc[ids].to_numpy()


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
@user_errors
def main(cfg: DictConfig) -> dict[str, Any]:
    """Merge permutation shards into the experiment's test (``python -m src.merge_permutations``)."""
    config = start(cfg)
    inputs = experiment_inputs(config)
    key = permutation_key(config, inputs)
    run = Path(config.paths.run)
    trained = (train_metrics(run / "train").get("provenance") or {}).get("permutation_key")
    if trained != key:
        raise UserInputError(
            f"{run / 'train'} was trained with other data, settings or code (permutation key {trained}, now "
            f"{key}): train again with the settings of the shards"
        )
    folder = run / "permutation"
    n = config.permutation.n
    repeats = permutation_cv(inputs.cv, config.permutation.repeats).repeats
    ids = inputs.table["participant_id"].astype(str).tolist()
    if inputs.continuous:  # a regressor's statistic: its objective (the shards computed the same)
        objective = objective_of(inputs.space, config.model.objective)
        statistic = f"mean_{objective}"
        null, files = merge_shards(folder, key, n, statistic)
        predicted = observed_decisions(run / "train", ids, "prediction")
        means = observed_decisions(run / "train", ids, "training_mean")
        observed = oof_statistic(inputs.y, predicted, means, objective, repeats)
    else:
        statistic = "mean_bac"
        null, files = merge_shards(folder, key, n, statistic)
        observed = observed_statistic(inputs.y, observed_decisions(run / "train", ids), repeats)
    result = PermutationResult(statistic=statistic, observed=observed, null=null, repeats=repeats)
    document = {**result.to_dict(), "key": key, "shards": files}
    # lazy: matplotlib 0.6 s (benchmarks/import_time.py), only when a merge writes its figure
    from src.tracking.figures import permutation_figure

    permutation_figure(null, result.observed, folder, statistic)
    write_json_atomic(folder / MERGED, document)
    print(
        f"{config.name}: permutation {p_text(result.p_value, n)} (n = {n} from {len(files)} shard(s), "
        f"observed {statistic.replace('_', ' ')} {result.observed:.3f} over {repeats} repeat(s))"
    )
    print(f"  written   {folder / MERGED}")
    return document


if __name__ == "__main__":
    run(main, __doc__)
