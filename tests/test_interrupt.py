"""Interruption: SIGTERM ends a run cleanly (no traceback, no worker left, no temporary folder), and a
killed writer's temporary folders are removed at the next start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pandas as pd
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


def _train(tmp_path, output: str, n: int) -> subprocess.Popen:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "src.train",
            "+experiment=gm_only",
            f"paths.features={tmp_path / 'features'}",
            f"paths.output={tmp_path / output}",
            f"hydra.run.dir={tmp_path / 'hydra' / output}",
            "cv.repeats=1",
            "cv.outer_folds=3",
            "cv.inner_folds=3",
            "cv.n_trials=3",
            f"permutation.n={n}",
            "n_jobs=2",
            "tracking.enabled=false",
        ],
        cwd=ROOT,
        env=subprocess_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own process group: the "crash" below kills the workers too
    )


@pytest.mark.slow
def test_sigterm_stops_a_training_run_cleanly(tmp_path):
    features = tmp_path / "features" / "gm_roi"
    features.mkdir(parents=True)
    contract_table(n=40, seed=3, signal=1.0).to_parquet(features / "discovery.parquet", index=False)
    run = _train(tmp_path, "out", 100000)  # permutations still running when stopped
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
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("interrupted (stopped by signal 15)"), stderr  # the last word is ours
    assert "leaked semaphore" not in stderr and "failed" not in stderr, stderr
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive, f"workers left running: {alive}"
    out = tmp_path / "out"
    assert not out.exists() or not list(out.rglob("*.tmp"))


@pytest.mark.slow
def test_a_killed_permutation_test_resumes_with_identical_results(tmp_path):
    features = tmp_path / "features" / "gm_roi"
    features.mkdir(parents=True)
    contract_table(n=40, seed=4, signal=1.0).to_parquet(features / "discovery.parquet", index=False)
    n = 40
    killed = _train(tmp_path, "resumed", n)
    deadline = time.time() + 180
    checkpoints: list = []
    while time.time() < deadline:  # wait for some finished permutations, then kill without warning
        checkpoints = list((tmp_path / "resumed").rglob("permutations-*.jsonl"))
        if checkpoints and len(checkpoints[0].read_text().splitlines()) >= 6:
            break
        time.sleep(0.2)
    os.killpg(killed.pid, signal.SIGKILL)  # a crash, an OOM kill or a cancelled job: no cleanup at all
    killed.communicate(timeout=60)
    finished_before = len(checkpoints[0].read_text().splitlines())
    assert 6 <= finished_before < n and not (tmp_path / "resumed" / "gm_only" / "train").exists()
    resumed = _train(tmp_path, "resumed", n)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "3 fold(s) resumed from a checkpoint" in out  # the outer folds had all finished before the kill
    reported = int(out.split(" resumed from a checkpoint)")[0].rsplit(", ", 1)[1])
    assert finished_before <= reported < n  # only the missing permutations were computed
    fresh = _train(tmp_path, "fresh", n)
    _, err = fresh.communicate(timeout=600)
    assert fresh.returncode == 0, err
    for name in (
        "permutation_null.csv",
        "metrics.json",
        "predictions.csv",
        "model/model.npz",
        "folds.csv",
        "trials.csv",
    ):
        a = (tmp_path / "resumed" / "gm_only" / "train" / name).read_bytes()
        b = (tmp_path / "fresh" / "gm_only" / "train" / name).read_bytes()
        assert a == b, name  # byte-identical: the same null distribution, p-value, refitted model (hash)
    timings = pd.read_csv(tmp_path / "fresh" / "gm_only" / "train" / "timings.csv")  # the one file apart
    assert list(timings.columns) == ["repeat", "fold", "number", "trial_seconds", "fold_seconds"]


@pytest.mark.slow
def test_a_file_size_limit_is_one_line_and_a_rerun_resumes(tmp_path):
    """Past a file-size limit (EFBIG, as a full disk's ENOSPC): one `error:` line naming the file and saying
    that a rerun resumes, exit 2, no traceback, no output folder; the rerun without the limit resumes the
    checkpointed folds and finishes."""
    import resource

    from test_train import contract_table

    features = tmp_path / "features" / "gm_roi"
    features.mkdir(parents=True)
    contract_table(n=40, seed=1).to_parquet(features / "discovery.parquet", index=False)
    command = [
        sys.executable,
        "-m",
        "src.train",
        "+experiment=gm_only",
        f"paths.features={tmp_path / 'features'}",
        f"paths.output={tmp_path / 'out'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        "hydra.output_subdir=null",
        "hydra/job_logging=none",
        "hydra/hydra_logging=none",
        "cv.repeats=1",
        "cv.outer_folds=3",
        "cv.inner_folds=3",
        "cv.n_trials=3",
        "permutation.n=0",
        "tracking.enabled=false",
        "n_jobs=1",
    ]

    def limit() -> None:  # checkpoints fit, the model file does not
        resource.setrlimit(resource.RLIMIT_FSIZE, (3000, 3000))

    done = subprocess.run(
        command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True, preexec_fn=limit
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert "Traceback" not in done.stderr and "HYDRA_FULL_ERROR" not in done.stderr, done.stderr
    assert lines[-1].startswith(f"error: cannot write {tmp_path / 'out' / 'gm_only' / 'train'}")
    assert "(EFBIG)" in lines[-1] and "run the same command again" in lines[-1]
    assert not (tmp_path / "out" / "gm_only" / "train").exists()
    again = subprocess.run(command, cwd=ROOT, env=subprocess_env(), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert "3 of 3 outer folds resumed" in again.stdout or "resumed" in again.stdout, again.stdout


def test_long_loops_say_their_rate_and_finish_without_a_terminal(capsys):
    """RateLines (permutations under `dvc repro` or in a log): a line after the first 5 units, then one per
    tenth of the work, each with the rate and the estimated finish; nothing after the last unit."""
    from src.utils.logging import RateLines

    lines = RateLines(total=100, done=20, label="permutations")
    for _ in range(80):
        lines.update()
    printed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("permutations:")]
    assert [line.split(",")[0] for line in printed] == [
        "permutations: 25/100",
        *[f"permutations: {k}/100" for k in range(30, 100, 10)],
    ]
    assert all(" s each, about " in line and "(finishing ~" in line for line in printed)
    quiet = RateLines(total=10, done=0, label="x", enabled=False)
    quiet.update()
    assert capsys.readouterr().err == ""
