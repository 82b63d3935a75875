"""One permutation's CPU time, before and after a change: the engine at a git ref against this working tree.

A permutation of the default test is one repeat of the nested CV on permuted labels: 10 outer folds, each an
Optuna study of 30 trials over 5 inner splits (``fit_outer_fold(..., keep_model=False)``). Each variant runs
in its own process on one core with the project at its own path (the ref checked out with ``git worktree``),
the two alternating ``--rounds`` times, so the machine's drifts hit both alike; the minimum over rounds is the
figure (this VM's CPU time varies ±15 % between identical runs). The variants must choose the same parameters
in every fold and give the same outer-test decisions (max |difference| printed); a difference stops the run.

Usage::

    python benchmarks/permutation_step.py --ref HEAD~3 --rounds 5 --perms 2
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

WORKER = r"""
import json, sys, time
import numpy as np, pandas as pd, yaml
root, features, perms = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.path.insert(0, root)
from src.config.settings import CVConfig
from src.models.search_space import SearchSpace
from src.validation.nested_cv import fit_outer_fold, outer_splits
import src.validation.kernels as kernels
solver = {"cpu": 0.0}
_fit_svc = kernels.fit_svc
def timed_fit_svc(*args, **kwargs):  # libsvm's share: the floor of any engine making the same fits
    start = time.process_time()
    try:
        return _fit_svc(*args, **kwargs)
    finally:
        solver["cpu"] += time.process_time() - start
kernels.fit_svc = timed_fit_svc
table = pd.read_parquet(features)
model = yaml.safe_load(open(f"{root}/conf/model/svc_linear.yaml"))
covariates, categorical = model["covariates"], model["categorical"]
X = table[covariates + [c for c in table.columns if c.startswith("gm_")]]
y = table["response"].to_numpy()
space = SearchSpace.from_config(model)
cv = CVConfig(**yaml.safe_load(open(f"{root}/conf/cv/nested.yaml")))
def permutation(i):
    permuted = np.random.default_rng(i).permutation(y)
    out = []
    for r, k, train, test in outer_splits(permuted, cv, 2026)[: cv.outer_folds]:
        fold = fit_outer_fold(X, permuted, r, k, train, test, space, cv, 2026, covariates, categorical,
                              keep_model=False)
        out.append({"params": fold.best_params, "decision": fold.decision.tolist()})
    return out
permutation(10_000)  # warm-up: imports, first-call costs
solver["cpu"] = 0.0
start = time.process_time()
folds = [f for i in range(perms) for f in permutation(i)]
cpu = (time.process_time() - start) / perms
print(json.dumps({"cpu": cpu, "libsvm": solver["cpu"] / perms, "folds": folds}))
"""


def run(root: Path, features: Path, perms: int) -> dict:
    """One worker process (one BLAS thread) on the project at ``root``."""
    env = {
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "PATH": "/usr/bin:/bin",
    }
    done = subprocess.run(
        [sys.executable, "-c", WORKER, str(root), str(features), str(perms)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    """Alternate the two variants, check they agree, print CPU seconds per permutation."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--ref", required=True, help="the git ref of the 'before' engine")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--perms", type=int, default=2, help="permutations per process")
    parser.add_argument(
        "--features", default=str(ROOT / "data" / "features" / "gm_roi" / "discovery.parquet")
    )
    args = parser.parse_args()
    commit = subprocess.run(
        ["git", "rev-parse", "--short", args.ref], cwd=ROOT, capture_output=True, text=True
    )
    before = Path(tempfile.mkdtemp(prefix="bench-before-")) / "tree"
    subprocess.run(["git", "worktree", "add", "-q", "--detach", str(before), args.ref], cwd=ROOT, check=True)
    try:
        times: dict[str, list[float]] = {"before": [], "after": []}
        libsvm: list[float] = []
        reference = None
        start = time.perf_counter()
        for _ in range(args.rounds):
            for name, root in (("before", before), ("after", ROOT)):
                result = run(root, Path(args.features), args.perms)
                times[name].append(result["cpu"])
                if name == "after":
                    libsvm.append(result["libsvm"])
                if reference is None:
                    reference = result["folds"]
                    continue
                same = all(
                    a["params"] == b["params"] for a, b in zip(reference, result["folds"], strict=True)
                )
                diff = max(
                    max(abs(u - v) for u, v in zip(a["decision"], b["decision"], strict=True))
                    for a, b in zip(reference, result["folds"], strict=True)
                )
                if not same or diff > 1e-8:
                    raise SystemExit(
                        f"{name} differs from before: parameters identical {same}, max |diff| {diff}"
                    )
        digest = hashlib.sha256(json.dumps([f["params"] for f in reference]).encode()).hexdigest()[:12]
        print(
            f"before = {commit.stdout.strip()}, after = working tree; {args.rounds} rounds x {args.perms} "
            f"permutations per process, one core each ({time.perf_counter() - start:.0f} s in all)"
        )
        print(
            f"identical: the chosen parameters of all {len(reference)} folds (sha {digest}) and the "
            "outer-test decisions (max |difference| <= 1e-8)"
        )
        for name, values in times.items():
            median = sorted(values)[len(values) // 2]
            print(
                f"{name:6s} CPU s per permutation: min {min(values):.3f}, median {median:.3f}"
                f"  ({' '.join(f'{v:.3f}' for v in values)})"
            )
        medians = {name: sorted(values)[len(values) // 2] for name, values in times.items()}
        print(
            f"after / before: min {min(times['after']) / min(times['before']):.2f}, "
            f"median {medians['after'] / medians['before']:.2f}"
        )
        floor = min(libsvm)
        print(
            f"libsvm's own fits (after, min over rounds): {floor:.3f} CPU s per permutation, "
            f"{100 * floor / min(times['after']):.0f} % of it: 1000 permutations on 2 cores cannot take less "
            f"than {floor * 1000 / 2 / 60:.1f} min with these fits"
        )
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(before)], cwd=ROOT, check=False)


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from record import run_and_record

    run_and_record("permutation_step", main)
