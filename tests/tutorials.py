"""Run a tutorial page as a reader would: its commands in order, compared with the output the page shows.

A page's ```` ```bash ```` blocks are its commands; a ```` ```text ```` block that directly follows one (only
blank lines between) is what that block prints on stdout. Each shown line must appear in the printed lines,
in that order (a line ``...`` stands for lines the page leaves out); lines the page does not show may
appear between them (run ids, paths that differ per machine). Each block runs as one ``bash -euo pipefail``
script in the project copy, so a heredoc writes a config file and a failing command fails the page.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from conftest import ROOT, subprocess_env

FENCE = re.compile(r"^```(?P<lang>[\w-]*)[^\n]*\n(?P<body>.*?)^```[ \t]*$", re.M | re.S)


@dataclass
class Step:
    """One bash block of a page and the output lines the page shows for it (possibly none)."""

    line: int
    commands: str
    shown: list[str]


def steps(page: Path) -> list[Step]:
    """The page's bash blocks, each with the text block right after it."""
    text = page.read_text()
    blocks = list(FENCE.finditer(text))
    out = []
    for i, block in enumerate(blocks):
        if block["lang"] != "bash":
            continue
        shown: list[str] = []
        if i + 1 < len(blocks) and blocks[i + 1]["lang"] == "text":
            between = text[block.end() : blocks[i + 1].start()]
            if not between.strip():
                shown = blocks[i + 1]["body"].rstrip("\n").split("\n")
        out.append(Step(text[: block.start()].count("\n") + 1, block["body"], shown))
    return out


def missing_lines(shown: list[str], printed: str) -> list[str]:
    """Shown lines not found, in order, among the printed lines (``...`` skips; trailing spaces ignored)."""
    lines = [line.rstrip() for line in printed.splitlines()]
    position, missing = 0, []
    for want in (line.rstrip() for line in shown):
        if want == "...":
            continue
        try:
            position = lines.index(want, position) + 1
        except ValueError:
            missing.append(want)
    return missing


def project_copy(target: Path) -> Path:
    """What a user has after cloning: the code, the configs, params.yaml and an empty MLflow store."""
    target.mkdir()
    for folder in ("src", "conf"):
        shutil.copytree(ROOT / folder, target / folder, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("params.yaml", "dvc.yaml", ".gitignore"):
        shutil.copy(ROOT / name, target / name)
    (target / "mlruns").mkdir()
    shutil.copy(ROOT / "mlruns" / ".gitignore", target / "mlruns" / ".gitignore")
    return target


def run_page(page: Path, workdir: Path) -> list[tuple[Step, str]]:
    """Run every step of ``page`` in a fresh project copy under ``workdir``; fail on the first step whose
    command fails or whose shown output is not printed. Returns each step with its stdout."""
    project = project_copy(workdir / "project")
    # `python` and `mlflow` are this interpreter's, as in the reader's activated venv
    env = subprocess_env(PATH=os.pathsep.join([str(Path(sys.executable).parent), os.environ["PATH"]]))
    env["PYTHONPATH"] = str(project)
    done = []
    for step in steps(page):
        result = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", step.commands],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        where = f"{page.relative_to(ROOT)}:{step.line}"
        assert result.returncode == 0, (
            f"{where}: the commands failed\n{step.commands}\n{result.stderr[-3000:]}"
        )
        missing = missing_lines(step.shown, result.stdout)
        assert not missing, (
            f"{where}: the page shows lines the commands did not print:\n"
            + "\n".join(missing)
            + f"\n--- printed:\n{result.stdout}"
        )
        done.append((step, result.stdout))
    return done
