"""The freesurfer tutorial (docs/tutorials/freesurfer.md) runs as written: its commands in a fresh project
copy, the output lines it shows printed by them (tests/tutorials.py)."""

from __future__ import annotations

import pytest
from conftest import ROOT
from tutorials import run_page

PAGE = ROOT / "docs" / "tutorials" / "freesurfer.md"


@pytest.mark.slow
def test_the_page_runs_as_written(tmp_path):
    done = run_page(PAGE, tmp_path)
    assert len(done) >= 5 and sum(len(step.shown) for step, _ in done) >= 10
    assert (tmp_path / "project" / "reports" / "report.html").is_file()
