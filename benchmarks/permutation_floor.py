"""What one permutation of the default test costs, split into the parts no identical engine can avoid.

A permutation (gm_only: 10 outer folds, each an Optuna study of 30 TPE trials over 5 inner splits) must, to
give the same null distribution, (a) let TPE propose the same 300 parameter sets, which depend on the
inner scores of all earlier trials, and (b) make the same 1510 libsvm fits. This script measures, on one
core and in one process, over ``--perms`` permutations of the default discovery table:

- **engine**: ``fit_outer_fold(..., keep_model=False)`` for the 10 folds (what ``src.train`` runs);
- **Optuna alone**: every study replayed with a fresh sampler of the same seed, ``ask``/``tell`` with the
  inner scores recorded from the engine: the proposals must come out identical (checked), and nothing but
  Optuna runs;
- **libsvm alone**: the CPU time inside the solver calls of the engine run (``kernels.fit_svc`` timed).

The floor of an identical permutation is Optuna alone + libsvm alone; the rest (kernel builds, scoring,
bookkeeping) is what an engine could still remove. The 1000-permutation projection is the per-permutation
time × 1000 / 2 cores.

    python benchmarks/permutation_floor.py --perms 5
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import optuna
import yaml
from record import ROOT, run_and_record

import src.validation.kernels as kernels
import src.validation.nested_cv as nested_cv
from src.config.settings import CVConfig
from src.features.tables import read_feature_table
from src.models.search_space import SearchSpace
from src.validation.nested_cv import fit_outer_fold, make_sampler, outer_splits
from src.validation.seeds import Stream, derive_seed

SEED = 2026
CREATE_STUDY = optuna.create_study  # the library's own, for the replays


def _instrument() -> tuple[dict[str, float], list[optuna.Study]]:
    """Time libsvm's calls and keep every study the engine creates (monkeypatched here, not in src)."""
    solver = {"cpu": 0.0}
    studies: list[optuna.Study] = []
    fit_svc = kernels.fit_svc

    def timed_fit_svc(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        start = time.process_time()
        try:
            return fit_svc(*args, **kwargs)
        finally:
            solver["cpu"] += time.process_time() - start

    def kept_study(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        study = CREATE_STUDY(*args, **kwargs)
        studies.append(study)
        return study

    kernels.fit_svc = timed_fit_svc
    nested_cv.optuna.create_study = kept_study
    return solver, studies


def _replay(study: optuna.Study, repeat: int, fold: int, space: SearchSpace, cv: CVConfig) -> float:
    """CPU seconds of Optuna alone: the study's trials proposed again and told the recorded values."""
    recorded = study.get_trials(deepcopy=False)
    start = time.process_time()
    replay = CREATE_STUDY(
        direction="maximize", sampler=make_sampler(cv, space, derive_seed(SEED, Stream.SAMPLER, repeat, fold))
    )
    for old in recorded:
        trial = replay.ask()
        space.suggest(trial)
        replay.tell(trial, old.value)
        if trial.params != old.params:
            raise SystemExit(f"study {repeat}/{fold}: replay {trial.params}, engine {old.params}")
    return time.process_time() - start


def main() -> None:
    """Run the permutations, replay their studies, print the split."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--perms", type=int, default=5)
    args = parser.parse_args()
    table = read_feature_table(ROOT / "data" / "features" / "gm_roi" / "discovery.parquet")
    model = yaml.safe_load((ROOT / "conf" / "model" / "svc_linear.yaml").read_text())
    covariates, categorical = model["covariates"], model["categorical"]
    X = table[covariates + [c for c in table.columns if c.startswith("gm_")]]
    y = table["response"].to_numpy()
    space = SearchSpace.from_config(model)
    cv = CVConfig(**yaml.safe_load((ROOT / "conf" / "cv" / "nested.yaml").read_text()))
    solver, studies = _instrument()
    engine, optuna_alone, fits = [], [], []
    for i in range(args.perms):
        permuted = np.random.default_rng(i).permutation(y)
        solver["cpu"], first = 0.0, len(studies)
        start = time.process_time()
        coordinates = []
        for r, k, train, test in outer_splits(permuted, cv, SEED)[: cv.outer_folds]:
            fit_outer_fold(
                X, permuted, r, k, train, test, space, cv, SEED, covariates, categorical, keep_model=False
            )
            coordinates.append((r, k))
        engine.append(time.process_time() - start)
        fits.append(solver["cpu"])
        optuna_alone.append(
            sum(_replay(s, r, k, space, cv) for s, (r, k) in zip(studies[first:], coordinates, strict=True))
        )
    rows = [("engine", engine), ("Optuna alone (replayed)", optuna_alone), ("libsvm alone", fits)]
    floor = [a + b for a, b in zip(optuna_alone, fits, strict=True)]
    rows += [
        ("floor = Optuna + libsvm", floor),
        ("rest", [e - f for e, f in zip(engine, floor, strict=True)]),
    ]
    print(
        f"gm_only, {args.perms} permutations of {cv.outer_folds} folds x {cv.n_trials} trials x "
        f"{cv.inner_folds} splits, one core"
    )
    print(f"{'part':<26}{'min CPU s':>10}{'median':>10}{'1000 perms on 2 cores, min':>30}")
    for name, values in rows:
        print(f"{name:<26}{min(values):>10.3f}{np.median(values):>10.3f}{min(values) * 500 / 60:>26.1f} min")


if __name__ == "__main__":
    run_and_record("permutation_floor", main)
