"""Wall time and peak memory of the nested-CV engine vs the same analysis written the naive way.

Naive = a scikit-learn Pipeline (residualise -> scale -> [PCA] -> SVC) and an Optuna objective calling
``cross_val_score`` on it: the whole pipeline is refitted for every trial and inner fold. Both use the same
splits, samplers and seeds, so they must also give the same out-of-fold scores (checked and printed).
Each variant runs in its own process so its peak RSS is its own.

Usage::

    python benchmarks/nested_cv.py --experiment gm_only            # default CV: 10 x 10 x 5, 30 trials
    python benchmarks/nested_cv.py --experiment gm_voxel --repeats 1
"""

from __future__ import annotations

import argparse
import json
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

    from src.models.search_space import SearchSpace
    from src.train import discovery, load_training_data
    from src.validation.nested_cv import CVConfig

    overrides = [f"+experiment={experiment}", f"paths.features={features_dir}"]
    if repeats:
        overrides.append(f"cv.repeats={repeats}")
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    path = Path(cfg.paths.features) / cfg.features.name / f"{discovery(cfg)}.parquet"
    _, X, y = load_training_data(path, list(model_cfg["covariates"]))
    return (
        X,
        y,
        SearchSpace.from_config(model_cfg),
        CVConfig.from_config(OmegaConf.to_container(cfg.cv)),
        int(cfg.seed),
        model_cfg,
    )


def naive_nested_cv(X, y, space, cv, seed, model_cfg):
    """The textbook version: Pipeline + Optuna objective with cross_val_score, all refitted per trial."""
    import numpy as np
    import optuna
    from sklearn.model_selection import cross_val_score

    from src.models.pipeline import build_pipeline
    from src.validation.nested_cv import inner_splitter, make_sampler, outer_splits, select_best
    from src.validation.seeds import Stream, derive_seed

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cov, cat = model_cfg["covariates"], model_cfg["categorical"]
    scores = np.full((len(y), cv.repeats), np.nan)
    for r, k, train, test in outer_splits(y, cv, seed):
        x_train, y_train = X.iloc[train], y[train]

        def objective(trial, x_train=x_train, y_train=y_train, r=r):
            pipe = build_pipeline(space.suggest(trial), cov, cat)
            return cross_val_score(
                pipe, x_train, y_train, cv=inner_splitter(cv, seed, r), scoring="balanced_accuracy"
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


def worker(variant: str, experiment: str, features_dir: str, repeats: int | None, out: str) -> None:
    import numpy as np

    from src.validation.nested_cv import run_nested_cv

    X, y, space, cv, seed, model_cfg = _setup(experiment, features_dir, repeats)
    start = time.perf_counter()
    if variant == "engine":
        result = run_nested_cv(
            X,
            y,
            space,
            cv,
            seed,
            covariates=model_cfg["covariates"],
            categorical=model_cfg["categorical"],
            n_jobs=1,
        )
        scores = result.decision_matrix()
    else:
        scores = naive_nested_cv(X, y, space, cv, seed, model_cfg)
    elapsed = time.perf_counter() - start
    np.save(out, scores)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": elapsed, "peak_mb": peak, "n": len(y), "p": X.shape[1], "cv": cv.__dict__}))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", default="gm_only")
    parser.add_argument("--features-dir", default=str(ROOT / "data" / "features"))
    parser.add_argument("--repeats", type=int, default=None, help="override cv.repeats (both variants)")
    parser.add_argument("--worker", choices=["engine", "naive"], help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.experiment, args.features_dir, args.repeats, args.out)
        return
    import numpy as np

    rows = {}
    for variant in ("engine", "naive"):
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
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
        rows[variant] = json.loads(proc.stdout.strip().splitlines()[-1])
        rows[variant]["scores"] = np.load(out)
    e, n = rows["engine"], rows["naive"]
    same = np.allclose(e["scores"], n["scores"], rtol=0, atol=1e-9)
    cv = e["cv"]
    print(
        f"experiment {args.experiment}: n={e['n']}, {e['p']} columns, {cv['repeats']} repeats x "
        f"{cv['outer_folds']} outer x {cv['inner_folds']} inner folds, {cv['n_trials']} trials, 1 core"
    )
    print(f"{'variant':<8}{'wall s':>10}{'peak RSS MB':>14}")
    for name in ("engine", "naive"):
        print(f"{name:<8}{rows[name]['seconds']:>10.1f}{rows[name]['peak_mb']:>14.0f}")
    print(f"speed-up naive/engine: {n['seconds'] / e['seconds']:.2f}x; identical out-of-fold scores: {same}")


if __name__ == "__main__":
    main()
