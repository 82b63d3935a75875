"""Do two trainings started together into one store both land whole? Repeated tries on SQLite and PostgreSQL.

Each try starts two ``python -m src.train`` processes at the same instant (the tests' helper
``_concurrent_trainings``: 1 x 3 outer x 3 inner folds, 3 trials, tracking on) into one experiment of a
fresh SQLite store, or of one PostgreSQL server behind ``mlflow server`` (a new experiment per try), and
counts the tries in which both parent runs finished with all 3 of their outer-fold runs.

Usage::

    python benchmarks/concurrent_trainings.py --tries 20
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from test_tracking import _concurrent_trainings  # noqa: E402  (the tests' helper, not a copy of it)


def whole(uri: str, experiment: str) -> bool:
    """Both trainings' parent runs FINISHED, each with its 3 outer-fold runs FINISHED."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri, uri)
    found = client.search_runs([client.get_experiment_by_name(experiment).experiment_id], max_results=1000)
    parents = [r for r in found if r.data.tags.get("run_role") == "training"]
    if len(parents) != 2 or any(p.info.status != "FINISHED" for p in parents):
        return False
    for parent in parents:
        children = [r for r in found if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
        if len(children) != 3 or {c.info.status for c in children} != {"FINISHED"}:
            return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tries", type=int, default=20)
    args = parser.parse_args()
    from src.tracking.server import mlflow_server, postgres_server

    results = {}
    started = time.perf_counter()
    ok = 0
    for _ in range(args.tries):
        with tempfile.TemporaryDirectory() as tmp:
            _concurrent_trainings(Path(tmp), (1, 2), [])
            ok += whole(f"sqlite:///{Path(tmp) / 'mlruns' / 'mlflow.db'}", "gm_only")
    results["SQLite (a new store each try)"] = (ok, time.perf_counter() - started)
    started = time.perf_counter()
    ok = 0
    with tempfile.TemporaryDirectory() as server_dir:
        with (
            postgres_server(Path(server_dir) / "pgdata") as database,
            mlflow_server(database, Path(server_dir) / "artifacts") as url,
        ):
            for i in range(args.tries):
                with tempfile.TemporaryDirectory() as tmp:
                    name = f"race-{i}"
                    _concurrent_trainings(
                        Path(tmp), (1, 2), [f"tracking.uri={url}", f"tracking.experiment={name}"]
                    )
                    ok += whole(url, name)
    results["PostgreSQL behind mlflow server (a new experiment each try)"] = (
        ok,
        time.perf_counter() - started,
    )
    print(f"two trainings started together, {args.tries} tries per store; tries with both runs whole:")
    for store, (count, seconds) in results.items():
        print(f"  {store:<60} {count} of {args.tries}  ({seconds:.0f} s)")


if __name__ == "__main__":
    from record import run_and_record

    run_and_record("concurrent_trainings", main)
