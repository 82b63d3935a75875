"""Interruption: SIGTERM ends a run cleanly (no traceback, no worker left, no temporary folder), and a
killed writer's temporary folders are removed at the next start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import psutil
import pytest
from conftest import ROOT, subprocess_env
from test_train import contract_table

from src.utils.io import atomic_directory


def test_stale_temporaries_of_dead_writers_are_removed(tmp_path):
    target = tmp_path / "train"
    dead = tmp_path / ".train.999999999.abc.tmp"  # no such pid
    live = tmp_path / f".train.{os.getpid()}.xyz.tmp"  # a writer that is still running
    other = tmp_path / ".evaluate.999999999.abc.tmp"  # another target's
    for folder in (dead, live, other):
        folder.mkdir()
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("x")
    assert not dead.exists() and live.exists() and other.exists()
    assert (target / "a.txt").read_text() == "x"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, other.name, "train"])


@pytest.mark.slow
def test_sigterm_stops_a_training_run_cleanly(tmp_path):
    features = tmp_path / "features" / "gm_roi"
    features.mkdir(parents=True)
    contract_table(n=40, seed=3, signal=1.0).to_parquet(features / "discovery.parquet", index=False)
    run = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "src.train",
            "+experiment=gm_only",
            f"paths.features={tmp_path / 'features'}",
            f"paths.output={tmp_path / 'out'}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
            "cv.repeats=1",
            "cv.outer_folds=3",
            "cv.inner_folds=3",
            "cv.n_trials=3",
            "permutation.n=100000",  # still running when stopped
            "n_jobs=2",
            "tracking.enabled=false",
        ],
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    parent = psutil.Process(run.pid)
    deadline = time.time() + 120
    while not parent.children(recursive=True) and time.time() < deadline:  # the permutation workers
        time.sleep(0.5)
    workers = parent.children(recursive=True)
    assert workers, "the run never started its workers"
    time.sleep(2)
    run.send_signal(signal.SIGTERM)
    _, stderr = run.communicate(timeout=120)
    assert run.returncode == 130, stderr
    assert "interrupted (stopped by signal 15)" in stderr and "Traceback" not in stderr
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"workers left running: {alive}"
    out = tmp_path / "out"
    assert not out.exists() or not list(out.rglob("*.tmp"))
