"""Published numbers are generated: the README's results block and docs/results.md equal what
``docs/results.py`` makes of the committed pipeline metrics, and the README quotes none of our numbers
outside that block."""

from __future__ import annotations

import importlib.util
import re

from conftest import ROOT


def _results_module():
    spec = importlib.util.spec_from_file_location("results", ROOT / "docs" / "results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_readme_results_block_is_the_committed_metrics():
    results = _results_module()
    readme = (ROOT / "README.md").read_text()
    name = results.experiments()[0]
    expected = results.readme_block(name)
    start = readme.index(results.START)
    end = readme.index(results.END) + len(results.END)
    assert readme[start:end] == expected, (
        "README numbers differ from the committed metrics: python docs/results.py"
    )


def test_results_page_is_the_committed_metrics():
    results = _results_module()
    page = (ROOT / "docs" / "results.md").read_text()
    body, _, generated = page.rstrip("\n").rpartition("\n\n")
    assert generated.startswith("Generated ") and " at commit " in generated
    assert body + "\n" == results.results_page(), "docs/results.md differs: python docs/results.py"


def test_the_readme_quotes_no_result_outside_the_generated_block():
    """Outside the block, a BAC, AUC or p-value of discovery/external/control is the paper's or absent."""
    results = _results_module()
    readme = (ROOT / "README.md").read_text()
    outside = readme[: readme.index(results.START)] + readme[readme.index(results.END) :]
    paper = {f"{v['bac']:.1f}" for v in results.PAPER.values()} | {
        f"{v['auc']:.2f}" for v in results.PAPER.values()
    }
    quoted = re.findall(
        r"(?:discovery|external|control|saline) BAC (\d{2}\.\d)|permutation p = (0\.\d{3})", outside
    )
    ours = sorted({a or b for a, b in quoted} - paper - {"0.010"})
    assert not ours, f"README quotes numbers that no script wrote: {ours}"


def test_a_benchmark_records_its_section_with_command_and_machine(tmp_path):
    """record() writes the benchmark's output under its own markers, replaces it on the next run and keeps
    the other benchmarks' sections."""
    import sys

    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from record import record
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    page = tmp_path / "benchmarks.md"
    record("a", "python benchmarks/a.py", "engine 1.0 s", page)
    record("b", "python benchmarks/b.py --n 3", "p = 0.25", page)
    record("a", "python benchmarks/a.py", "engine 2.0 s", page, where="2026-11-30, commit abc, host")
    text = page.read_text()
    assert text.startswith("# Benchmarks (generated)")
    assert text.count("<!-- bench:a:start -->") == 1 and "engine 2.0 s" in text and "engine 1.0 s" not in text
    assert "`python benchmarks/a.py` — 2026-11-30, commit abc, host" in text
    assert "`python benchmarks/b.py --n 3` — " in text and " cores, Python " in text and "p = 0.25" in text


def test_the_published_results_come_from_the_pipelines_data_and_a_clean_commit():
    """What the README and docs/results.md publish passes the writer's own refusal (issue 37: a tutorial's
    60-subject run and a run from an uncommitted tree were once published as the default's)."""
    import yaml

    results = _results_module()
    data = yaml.safe_load((ROOT / "params.yaml").read_text())["data"]
    for name in results.experiments():
        assert results.publishable(name, *results.read_metrics(name), data) == []


def test_the_results_writer_refuses_other_data_a_dirty_tree_and_a_foreign_evaluation():
    results = _results_module()
    clean = {"data": "simulated", "git": {"commit": "abc", "dirty": False}, "model_sha256": "m1"}
    train, evaluation = {"provenance": dict(clean)}, {"provenance": dict(clean)}
    assert results.publishable("gm_only", train, evaluation, "simulated") == []
    mystudy = {"provenance": {**clean, "data": "mystudy"}}
    assert results.publishable("gm_only", mystudy, evaluation, "simulated") == [
        "gm_only/train: data 'mystudy', not params.yaml's 'simulated'"
    ]
    dirty = {"provenance": {**clean, "git": {"commit": "abc", "dirty": True}}}
    assert "uncommitted tree" in results.publishable("gm_only", train, dirty, "simulated")[0]
    other = {"provenance": {**clean, "model_sha256": "m2"}}
    assert results.publishable("gm_only", train, other, "simulated") == [
        "gm_only: the evaluation is of another model than the one trained"
    ]
