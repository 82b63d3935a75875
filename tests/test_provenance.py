"""Provenance: the code's commit and whether the code (not DVC's own bookkeeping) has changed."""

from __future__ import annotations

import subprocess
from pathlib import Path

from src.utils.provenance import git_state


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


def test_git_state_ignores_what_dvc_writes_but_not_code_changes(tmp_path):
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.email", "t@example.org")
    git(tmp_path, "config", "user.name", "t")
    (tmp_path / "train.py").write_text("x = 1\n")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    run = tmp_path / "outputs" / "gm_only" / "train"
    run.mkdir(parents=True)
    for name in ("metrics.json", "summary.json"):  # the committed DVC metrics of a stage
        (run / name).write_text("{}\n")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "init")
    state = git_state(tmp_path)
    assert len(str(state["commit"])) == 40 and state["dirty"] is False
    # dvc repro removes a stage's outputs before it runs, then writes them anew: not a change of the code
    (run / "summary.json").unlink()
    (run / "metrics.json").write_text('{"bac": 0.7}\n')
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / ".gitignore").write_text("/features\n")
    git(tmp_path, "add", "-A")  # DVC's autostage does this while the pipeline runs
    assert git_state(tmp_path)["dirty"] is False
    (tmp_path / "train.py").write_text("x = 2\n")
    assert git_state(tmp_path)["dirty"] is True
    assert git_state(tmp_path / "data").get("commit") is not None
    assert git_state("/") == {"commit": None, "dirty": None}
