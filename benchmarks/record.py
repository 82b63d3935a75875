"""Benchmark output into the one generated file the README links: ``docs/benchmarks.md``.

Each benchmark script ends with ``run_and_record(<name>, main)``: its printed output is shown as usual and
also written, with the command, date, commit and machine, into its own section of ``docs/benchmarks.md``
(between ``<!-- bench:<name>:start -->`` and ``<!-- bench:<name>:end -->``; the other sections are kept).
Numbers quoted in the docs come from there, not from a hand-typed copy.
"""

from __future__ import annotations

import contextlib
import io
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "benchmarks.md"
HEADER = (
    "# Benchmarks (generated)\n\nEach section is written by the benchmark script it names (`benchmarks/`), "
    "with the command, date, commit and machine of the run; do not edit.\n"
)


class _Tee(io.TextIOBase):
    def __init__(self, *streams: io.TextIOBase) -> None:
        self.streams = streams

    def write(self, text: str) -> int:
        for stream in self.streams:
            stream.write(text)
        return len(text)

    def flush(self) -> None:
        for stream in self.streams:
            stream.flush()


def machine() -> str:
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout
    return (
        f"{time.strftime('%Y-%m-%d %H:%M %Z')}, commit {commit.strip()[:12]}"
        f"{' (uncommitted changes)' if dirty.strip() else ''}, {platform.node()} ({platform.machine()}, "
        f"{os.cpu_count()} cores, Python {platform.python_version()})"
    )


def section(name: str, command: str, output: str, where: str) -> str:
    return (
        f"<!-- bench:{name}:start -->\n## {name}\n\n`{command}` — {where}\n\n"
        f"```text\n{output.rstrip()}\n```\n<!-- bench:{name}:end -->"
    )


def record(name: str, command: str, output: str, page: Path = PAGE, where: str | None = None) -> None:
    """Replace (or append) the section ``name`` of ``page`` with ``output``; written atomically."""
    text = page.read_text() if page.is_file() else HEADER
    new = section(name, command, output, where or machine())
    pattern = re.compile(
        rf"<!-- bench:{re.escape(name)}:start -->.*?<!-- bench:{re.escape(name)}:end -->", re.S
    )
    text = (
        pattern.sub(lambda _: new, text, count=1) if pattern.search(text) else f"{text.rstrip()}\n\n{new}\n"
    )
    tmp = page.with_suffix(".md.tmp")
    tmp.write_text(text)
    os.replace(tmp, page)


def run_and_record(name: str, main: Callable[[], object]) -> None:
    """Run a benchmark's ``main``, printing as usual, and record what it printed (stdout)."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(_Tee(sys.stdout, buffer)):
        main()
    command = "python " + " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]])
    record(name, command, buffer.getvalue())
    print(f"recorded in {PAGE.relative_to(ROOT)}", file=sys.stderr)
