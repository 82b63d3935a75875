"""The documentation: the site builds offline with no warning, the generated configuration reference is
the config tree's, the README is a door whose links lead somewhere, and the tutorial runner can fail."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, subprocess_env
from tutorials import missing_lines, steps


def _config_reference():
    spec = importlib.util.spec_from_file_location("config_reference", ROOT / "docs" / "config_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# what a page may not load from the network: scripts, stylesheets, fonts (links to read elsewhere are fine)
REMOTE_ASSET = re.compile(
    r"<script[^>]+src=\"https?://|<link[^>]+rel=\"(?:stylesheet|preconnect|preload)\"[^>]+href=\"https?://"
    r"|@import\s+url\(\s*[\"']?https?://|fonts\.(?:googleapis|gstatic)\.com"
)


@pytest.mark.slow
def test_the_site_builds_strict_and_offline(tmp_path):
    """`mkdocs build --strict`: a broken link or anchor, a page outside the nav, a docstring mkdocstrings
    cannot render fails; the pages load nothing from the internet and search works from disk."""
    site = tmp_path / "site"
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(site)],
        cwd=ROOT,
        env=subprocess_env(NO_MKDOCS_2_WARNING="1"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    assert "WARNING" not in built.stderr, built.stderr
    pages = sorted(site.rglob("*.html"))
    assert len(pages) >= 25
    remote = [
        f"{p.relative_to(site)}: {m.group(0)}" for p in pages for m in REMOTE_ASSET.finditer(p.read_text())
    ]
    assert not remote, "pages load assets from the internet:\n" + "\n".join(remote[:10])
    assert (
        site / "search" / "search_index.js"
    ).is_file()  # material's offline plugin: search without a server
    api = (site / "reference" / "api.html").read_text()
    assert "NestedCVClassifier" in api and "permutation_test" in api and "Parameters" in api


def test_remote_assets_are_recognised():
    """The offline check can fail: each way a theme pulls from a CDN is matched, a plain link is not."""
    for html in (
        '<script src="https://cdn.example.org/x.js"></script>',
        '<link rel="stylesheet" href="https://fonts.googleapis.com/css?family=Roboto">',
        "<style>@import url('https://cdn.example.org/a.css');</style>",
    ):
        assert REMOTE_ASSET.search(html), html
    assert not REMOTE_ASSET.search('<a href="https://doi.org/10.1038/x">paper</a>')


def test_the_configuration_reference_is_the_config_tree():
    reference = _config_reference()
    page = (ROOT / "docs" / "reference" / "config-keys.md").read_text()
    assert page == reference.page(), "docs/reference/config-keys.md is stale: python docs/config_reference.py"


def test_the_configuration_reference_reads_keys_and_comments(tmp_path):
    """Nested keys get dotted names, the comment block above a key and the one beside it are its text, a blank
    line ends a comment, list items belong to their key, and a multi-line flow value is joined."""
    path = tmp_path / "c.yaml"
    path.write_text(
        "# file comment\n\n"
        "# the seed\nseed: 2026  # fixes everything\n"
        "cv:\n  # outer folds\n  outer: 10\n\n  inner: 5\n"
        "cohorts:\n  - {name: a, role: discovery}\n"
        "flow: {a: 1,\n        b: 2}\n"
        "url: 'http://x#y'  # not cut at the quoted hash\n"
    )
    rows = _config_reference().keys_of(path)
    assert rows == [
        ("seed", "2026", "the seed fixes everything"),
        ("cv", "", ""),
        ("cv.outer", "10", "outer folds"),
        ("cv.inner", "5", ""),
        ("cohorts", "", ""),
        ("flow", "{a: 1, b: 2}", ""),
        ("url", "'http://x#y'", "not cut at the quoted hash"),
    ]


def test_the_readme_is_a_door():
    """Under ~200 lines, and every relative link in it leads to a file of this repository."""
    text = (ROOT / "README.md").read_text()
    assert text.count("\n") <= 200
    links = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text)
    local = [link for link in links if not re.match(r"[a-z]+://", link)]
    assert len(local) >= 20
    broken = [link for link in local if not (ROOT / link).exists()]
    assert not broken, f"README links to missing files: {broken}"


def test_the_tutorial_runner_reads_commands_and_shown_output(tmp_path):
    page = tmp_path / "t.md"
    page.write_text(
        "# t\n\n```bash\necho a\n```\n\n```text\na\n```\n\nprose\n\n```yaml\nx: 1\n```\n\n"
        "```bash\necho b\necho c\n```\n\nprose between: no shown output\n\n```text\nb\n```\n"
    )
    found = steps(page)
    assert [(s.commands, s.shown) for s in found] == [("echo a\n", ["a"]), ("echo b\necho c\n", [])]
    assert found[0].line == 3


def test_shown_output_must_be_printed_in_order():
    printed = "one\ntwo  \nrun 1234\nthree\n"
    assert missing_lines(["one", "...", "three"], printed) == []
    assert missing_lines(["two", "three"], printed) == []
    assert missing_lines(["three", "one"], printed) == ["one"]  # order matters
    assert missing_lines(["one", "2"], printed) == ["2"]


def test_every_tutorial_page_is_run_by_a_test():
    """Each tutorial that says its commands are tested has a test file running it."""
    for page in sorted((ROOT / "docs" / "tutorials").glob("*.md")):
        if "run by the test suite" not in page.read_text():
            continue
        test = ROOT / "tests" / f"test_tutorial_{page.stem}.py"
        assert test.is_file() and f'"{page.stem}.md"' in test.read_text(), page.name
        assert steps(page), page.name


def test_the_docs_extra_is_installed_by_the_test_command():
    """README command (b) installs '.[test]', which must bring the documentation tools for the site test."""
    pyproject = (ROOT / "pyproject.toml").read_text()
    test_extra = pyproject[pyproject.index("test = [") :]
    assert "ketamine-trd-smri[cluster,docs]" in test_extra[: test_extra.index("]\n")]
    assert Path(ROOT / "mkdocs.yml").is_file()
