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
    # data=mystudy is not the pipeline's data (params.yaml): its report lives apart from the pipeline's
    assert (tmp_path / "project" / "reports" / "mystudy" / "report.html").is_file()
    assert not (tmp_path / "project" / "outputs" / "gm_only").exists()
