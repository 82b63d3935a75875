"""Wall and CPU time and peak memory of the nested-CV engine vs its floor and the naive way.

Variants, all with the same splits, samplers and seeds (one core each, each in its own process so its peak
RSS is its own):

- ``engine``: ``run_nested_cv`` (the inner loop in kernel space, libsvm on precomputed kernels);
- ``former``: the same engine with the former feature-space inner loop (``tests/reference_engine.py``:
  residualiser and scaler once per inner split, ``SVC`` fitted on the arrays through scikit-learn);
- ``floor``: only the inner fits of the engine's own trials, each as ``SVC(kernel="precomputed")`` fit +
  predict on a Gram matrix computed once per inner split (no Optuna, no outer refit): what the solver
  needs through scikit-learn's public API;
- ``naive``: a scikit-learn Pipeline (residualise -> scale -> [PCA] -> SVC) and an Optuna objective
  calling ``cross_val_score`` on it, the whole pipeline refitted for every trial and inner fold.

``engine``, ``former`` and ``naive`` must give the same out-of-fold scores (checked and printed).

Usage::

    python benchmarks/nested_cv.py --experiment gm_only --repeats 1
    python benchmarks/nested_cv.py --experiment gm_voxel --repeats 1 --variants engine former floor
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _setup(experiment: str, features_dir: str, repeats: int | None):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from src.config.settings import settings_from
    from src.models.search_space import SearchSpace
    from src.validation.experiment import experiment_inputs
    from src.validation.nested_cv import CVConfig

    overrides = [f"+experiment={experiment}", f"paths.features={features_dir}"]
    if repeats:
        overrides.append(f"cv.repeats={repeats}")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    inputs = experiment_inputs(settings_from(cfg))
    X, y = inputs.X, inputs.y
    return (
        X,
        y,
        SearchSpace.from_config(model_cfg),
        CVConfig.from_config(OmegaConf.to_container(cfg.cv)),
        int(cfg.seed),
        model_cfg,
    )


def naive_nested_cv(X, y, space, cv, seed, model_cfg):
    """The textbook version: Pipeline + Optuna objective with cross_val_score, all refitted per trial (a
    regressor: the pipeline inside ``TransformedTargetRegressor``, negative MAE, shuffled K-fold)."""
    import numpy as np
    import optuna
    from sklearn.model_selection import cross_val_score

    from src.models.pipeline import build_pipeline, is_regressor
    from src.validation.nested_cv import inner_splitter, make_sampler, outer_splits, select_best
    from src.validation.seeds import Stream, derive_seed

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cov, cat = model_cfg["covariates"], model_cfg["categorical"]
    regression = is_regressor(space.fixed)
    scoring = "neg_mean_absolute_error" if regression else "balanced_accuracy"
    scores = np.full((len(y), cv.repeats), np.nan)
    for r, k, train, test in outer_splits(y, cv, seed, regression):
        x_train, y_train = X.iloc[train], y[train]

        def objective(trial, x_train=x_train, y_train=y_train, r=r):
            pipe = build_pipeline(space.suggest(trial), cov, cat)
            return cross_val_score(
                pipe, x_train, y_train, cv=inner_splitter(cv, seed, r, regression), scoring=scoring
            ).mean()

        study = optuna.create_study(
            direction="maximize", sampler=make_sampler(cv, space, derive_seed(seed, Stream.SAMPLER, r, k))
        )
        study.optimize(objective, n_trials=cv.n_trials)
        best = select_best(study.trials)
        params = {**space.fixed, **{n: best.params[n] for n in space.params}}
        params = {k: None if isinstance(v, str) and v == "none" else v for k, v in params.items()}
        model = build_pipeline(params, cov, cat).fit(x_train, y_train)
        scores[test, r] = model.decision_function(X.iloc[test])
    return scores


def floor_fits(X, y, space, cv, seed, model_cfg, result) -> None:
    """The engine's inner fits alone: per inner split one Gram matrix, then for each of the engine's trials
    ``SVC(kernel="precomputed")`` fit + predict (scikit-learn's public API, no Optuna, no outer refit); a
    regressor's: ``TransformedTargetRegressor(SVR | KernelRidge(kernel="precomputed"), StandardScaler())``."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.kernel_ridge import KernelRidge
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC, SVR

    from src.models.pipeline import SVC_PARAMS, is_regressor
    from src.validation.nested_cv import InnerKernels, _n_components, inner_splitter

    regression = is_regressor(space.fixed)

    def solver(params):
        if not regression:
            return SVC(
                kernel="precomputed",
                **{k: v for k, v in params.items() if k in SVC_PARAMS and k not in ("kernel", "gamma")},
            )
        if params["estimator"] == "kernel_ridge":
            model = KernelRidge(alpha=params.get("alpha", 1.0), kernel="precomputed")
        else:
            model = SVR(kernel="precomputed", C=params.get("C", 1.0), epsilon=params.get("epsilon", 0.1))
        return TransformedTargetRegressor(model, transformer=StandardScaler())

    trials = result.trials()
    names = [c.removeprefix("params_") for c in trials.columns if c.startswith("params_")]
    for fold in result.folds:
        cache = InnerKernels(
            X,
            y,
            fold.train,
            inner_splitter(cv, seed, fold.repeat, regression),
            model_cfg["covariates"],
            model_cfg["categorical"],
            any(n.startswith("pca_") for n in [*names, *space.fixed]),
        )
        rows = trials[(trials["repeat"] == fold.repeat) & (trials["fold"] == fold.fold)]
        for _, row in rows.iterrows():
            params = {**space.fixed, **{n: row[f"params_{n}"] for n in names}}
            params = {k: None if isinstance(v, str) and v == "none" else v for k, v in params.items()}
            for _, split in cache.splits:
                m = None
                if split.cumulative_ratio is not None:
                    m = _n_components(params, split.cumulative_ratio, len(split.cumulative_ratio))
                gram, cross = split.kernels(params, m)
                solver(params).fit(gram, split.y).predict(cross)


def worker(variant: str, experiment: str, features_dir: str, repeats: int | None, out: str) -> None:
    import numpy as np

    from src.validation.nested_cv import run_nested_cv

    X, y, space, cv, seed, model_cfg = _setup(experiment, features_dir, repeats)
    kwargs = {"covariates": model_cfg["covariates"], "categorical": model_cfg["categorical"], "n_jobs": 1}
    engine_result = None
    if variant == "floor":  # the trials whose fits are timed (not timed themselves)
        engine_result = run_nested_cv(X, y, space, cv, seed, **kwargs)
    start, cpu = time.perf_counter(), time.process_time()
    scores = np.zeros(0)
    if variant == "engine":
        scores = run_nested_cv(X, y, space, cv, seed, **kwargs).decision_matrix()
    elif variant == "former":
        sys.path.insert(0, str(ROOT / "tests"))
        from reference_engine import reference_engine

        with reference_engine():
            scores = run_nested_cv(X, y, space, cv, seed, **kwargs).decision_matrix()
    elif variant == "floor":
        floor_fits(X, y, space, cv, seed, model_cfg, engine_result)
    else:
        scores = naive_nested_cv(X, y, space, cv, seed, model_cfg)
    elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
    np.save(out, scores)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        json.dumps(
            {"seconds": elapsed, "cpu": cpu, "peak_mb": peak, "n": len(y), "p": X.shape[1], "cv": cv.__dict__}
        )
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", default="gm_only")
    parser.add_argument("--features-dir", default=str(ROOT / "data" / "features"))
    parser.add_argument("--repeats", type=int, default=None, help="override cv.repeats (both variants)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    parser.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.experiment, args.features_dir, args.repeats, args.out)
        return
    import numpy as np

    rows = {}
    for variant in args.variants:
        out = f"/tmp/bench_{args.experiment}_{variant}.npy"
        cmd = [
            sys.executable,
            __file__,
            "--worker",
            variant,
            "--experiment",
            args.experiment,
            "--features-dir",
            args.features_dir,
            "--out",
            out,
        ]
        if args.repeats:
            cmd += ["--repeats", str(args.repeats)]
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}  # one core per variant
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env)
        rows[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
        rows[variant]["scores"] = np.load(out)
    first = rows[args.variants[0]]
    cv = first["cv"]
    print(
        f"experiment {args.experiment}: n={first['n']}, {first['p']} columns, {cv['repeats']} repeat(s) x "
        f"{cv['outer_folds']} outer x {cv['inner_folds']} inner folds, {cv['n_trials']} trials, 1 core"
    )
    print(f"{'variant':<8}{'wall s':>10}{'CPU s':>10}{'peak RSS MB':>14}{'x engine':>10}")
    base = rows.get("engine", first)["cpu"]
    for name, row in rows.items():
        ratio = row["cpu"] / base
        print(f"{name:<8}{row['seconds']:>10.2f}{row['cpu']:>10.2f}{row['peak_mb']:>14.0f}{ratio:>10.2f}")
    if "engine" in rows:
        for name in ("former", "naive"):
            if name in rows:
                diff = float(np.max(np.abs(rows["engine"]["scores"] - rows[name]["scores"])))
                print(f"engine vs {name}: max |out-of-fold score difference| = {diff:.2e}")


VARIANTS = ("engine", "former", "floor", "naive")

if __name__ == "__main__":
    from record import run_and_record

    # one section of docs/benchmarks.md per experiment (gm_only keeps the section the README quotes)
    chosen = sys.argv[sys.argv.index("--experiment") + 1] if "--experiment" in sys.argv else "gm_only"
    run_and_record("nested_cv" if chosen == "gm_only" else f"nested_cv_{chosen}", main)
