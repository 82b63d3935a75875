"""How many Optuna trials per inner study are enough? Re-runs one experiment's nested CV with several
``cv.n_trials`` values (everything else fixed) and prints the mean best inner BAC, the outer (out-of-fold)
BAC and AUC, and the wall time. Usage::

    python benchmarks/trials_convergence.py --experiment gm_only --trials 10 20 30 60
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from src.config.settings import settings_from
    from src.models.search_space import SearchSpace
    from src.validation.experiment import experiment_inputs
    from src.validation.nested_cv import CVConfig, run_nested_cv

    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--experiment", default="gm_only")
    parser.add_argument("--features-dir", default=str(ROOT / "data" / "features"))
    parser.add_argument("--trials", type=int, nargs="+", default=[10, 20, 30, 60])
    parser.add_argument("--n-jobs", type=int, default=2)
    args = parser.parse_args()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[f"+experiment={args.experiment}", f"paths.features={args.features_dir}"],
        )
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    inputs = experiment_inputs(settings_from(cfg))
    X, y = inputs.X, inputs.y
    space = SearchSpace.from_config(model_cfg)
    base = OmegaConf.to_container(cfg.cv)
    scheme = f"{base['repeats']} x {base['outer_folds']} outer x {base['inner_folds']} inner folds"
    print(f"{args.experiment}: {scheme}")
    header = ["n_trials", "inner best BAC", "repeat BAC", "ensemble BAC", "ensemble AUC", "wall s"]
    print("".join(f"{h:>{w}}" for h, w in zip(header, (8, 16, 12, 14, 14, 8), strict=True)))
    for n_trials in args.trials:
        cv = CVConfig.from_config({**base, "n_trials": n_trials})
        start = time.perf_counter()
        result = run_nested_cv(
            X,
            y,
            space,
            cv,
            int(cfg.seed),
            covariates=model_cfg["covariates"],
            categorical=model_cfg["categorical"],
            n_jobs=args.n_jobs,
        )
        elapsed = time.perf_counter() - start
        inner = result.fold_table()["inner_best_bac"].mean()
        ens = result.ensemble_metrics()
        print(
            f"{n_trials:>8}{inner:>16.3f}{result.per_repeat()['bac'].mean():>12.3f}{ens['bac']:>14.3f}"
            f"{ens['auc']:>14.3f}{elapsed:>8.1f}"
        )


if __name__ == "__main__":
    from record import run_and_record

    run_and_record("trials_convergence", main)
