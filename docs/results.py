"""Write the published numbers from the committed pipeline outputs, never by hand.

Reads ``params.yaml`` (the experiments ``dvc repro`` runs), each experiment's committed
``outputs/<name>/train/metrics.json`` and ``outputs/<name>/evaluate/metrics.json`` (DVC metrics, committed
with ``dvc.lock``), and writes

- ``docs/results.md``: every cohort group of every experiment, with the commit and the feature-table md5
  the run recorded, the seed paper's numbers beside them, and when and where this file was generated;
- the block between ``<!-- results:start -->`` and ``<!-- results:end -->`` in ``README.md``: the default
  experiment's headline table.

``tests/test_docs.py`` regenerates both from the committed outputs and fails when either differs, or when
the README quotes one of our numbers outside the block. Run after ``dvc repro``::

    python docs/results.py
"""

from __future__ import annotations

import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start", "<!-- results:end -->"
GROUPS = ("discovery", "external", "control")
PAPER = {  # the seed paper's published numbers (Transl Psychiatry 2026)
    "discovery": {"n": 99, "bac": 72.2, "auc": 0.72, "p": None},
    "external": {"n": 51, "bac": 60.0, "auc": 0.65, "p": 0.01},
    "control": {"n": 49, "bac": 41.1, "auc": 0.45, "p": None},
}


def experiments(root: Path = ROOT) -> list[str]:
    params = yaml.safe_load((root / "params.yaml").read_text()) or {}
    return list(params.get("experiments") or {})


def read_metrics(name: str, root: Path = ROOT) -> tuple[dict[str, Any], dict[str, Any]]:
    """(train metrics, evaluate metrics) of one experiment, as committed."""
    run = root / "outputs" / name
    return tuple(json.loads((run / stage / "metrics.json").read_text()) for stage in ("train", "evaluate"))


def publishable(name: str, train: dict[str, Any], evaluation: dict[str, Any], data: str) -> list[str]:
    """Why the metrics of experiment ``name`` cannot be published as the pipeline's results (empty: they
    can): they must come from the pipeline's data config (``data`` of ``params.yaml``), from a clean commit
    (a number must trace to code someone can check out), and the evaluation must be of the trained model."""
    problems = []
    for stage, document in (("train", train), ("evaluate", evaluation)):
        provenance = document.get("provenance") or {}
        recorded = provenance.get("data")
        if recorded != data:
            problems.append(f"{name}/{stage}: data {recorded!r}, not params.yaml's {data!r}")
        if (provenance.get("git") or {}).get("dirty") is not False:
            problems.append(f"{name}/{stage}: produced from an uncommitted tree (commit, then dvc repro)")
    trained = (train.get("provenance") or {}).get("model_sha256")
    if (evaluation.get("provenance") or {}).get("model_sha256") != trained:
        problems.append(f"{name}: the evaluation is of another model than the one trained")
    return problems


def _p(value: Any) -> str:
    return "–" if value is None else f"{value:.3f}"


def headline_rows(evaluation: dict[str, Any]) -> list[str]:
    """Markdown rows of the discovery, external and control groups beside the paper's numbers."""
    rows = [
        "| cohort | n | BAC % | sens % | spec % | AUC | p (BAC) | paper BAC % | paper AUC | paper p |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for group in GROUPS:
        r = evaluation["cohorts"].get(group)
        if r is None:
            continue
        paper = PAPER[group]
        rows.append(
            f"| {group} | {r['n']} | {100 * r['bac']:.1f} | {100 * r['sensitivity']:.1f} | "
            f"{100 * r['specificity']:.1f} | {r['auc']:.2f} | {_p(r.get('p_bac'))} | {paper['bac']:.1f} | "
            f"{paper['auc']:.2f} | {_p(paper['p'])} |"
        )
    return rows


def provenance_line(train: dict[str, Any], evaluation: dict[str, Any]) -> str:
    git = train["provenance"].get("git") or {}
    dirty = " (uncommitted changes)" if git.get("dirty") else ""
    spec = evaluation.get("treatment_specificity") or {}
    difference = (spec.get("auc_difference") or {}).get("p_value")
    specificity = (
        "" if difference is None else f"; treatment specificity (AUC external − control) p = {difference:.3f}"
    )
    perm = train.get("permutation") or {}
    return (
        f"Code {str(git.get('commit'))[:12]}{dirty}, feature table md5 "
        f"{train['provenance']['feature_table_md5']}, "
        f"model sha256 {train['provenance']['model_sha256'][:12]}; discovery p from {perm.get('n')} label "
        f"permutations of the whole nested CV{specificity}."
    )


def readme_block(name: str, root: Path = ROOT) -> str:
    """The README's generated block: the default experiment's headline table and its provenance."""
    train, evaluation = read_metrics(name, root)
    lines = [
        f"{START} generated by `python docs/results.py` from outputs/{name}/*/metrics.json; do not edit -->",
        f"Experiment `{name}` on the `{train['provenance'].get('data')}` data config (`dvc repro`, "
        "`params.yaml`):",
        "",
        *headline_rows(evaluation),
        "",
        provenance_line(train, evaluation),
        END,
    ]
    return "\n".join(lines)


def results_page(root: Path = ROOT, generated: str | None = None) -> str:
    """``docs/results.md``: every experiment of ``params.yaml``; ``generated`` is the date/machine line."""
    parts = [
        "# Results of `dvc repro` (generated)",
        "",
        "Written by `python docs/results.py` from the committed",
        "`outputs/<experiment>/{train,evaluate}/metrics.json`; do not edit. Discovery: the out-of-fold",
        "ensemble of the repeated nested CV; external and control: the locked model on cohorts it never saw.",
        "",
    ]
    for name in experiments(root):
        train, evaluation = read_metrics(name, root)
        parts += [f"## {name}", "", *headline_rows(evaluation), ""]
        others = [g for g in evaluation["cohorts"] if g not in GROUPS]
        if others:
            parts += ["Each cohort alone:", ""]
            parts += [
                f"- {g}: n = {r['n']}, BAC {100 * r['bac']:.1f} %, AUC {r['auc']:.2f}, "
                f"p = {_p(r.get('p_bac'))}"
                for g, r in ((g, evaluation["cohorts"][g]) for g in others)
            ]
            parts.append("")
        parts += [provenance_line(train, evaluation), ""]
    if generated:
        parts += [generated, ""]
    return "\n".join(parts)


def replace_block(readme: str, block: str) -> str:
    pattern = re.compile(re.escape(START) + r".*?" + re.escape(END), re.S)
    if not pattern.search(readme):
        raise SystemExit(f"README.md has no {START} ... {END} block")
    return pattern.sub(lambda _: block, readme, count=1)


def main() -> None:
    names = experiments()
    if not names:
        raise SystemExit("params.yaml lists no experiments")
    data = str((yaml.safe_load((ROOT / "params.yaml").read_text()) or {}).get("data") or "simulated")
    problems = [p for name in names for p in publishable(name, *read_metrics(name), data)]
    if problems:
        raise SystemExit("refused, nothing written: " + "; ".join(problems))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout
    generated = (
        f"Generated {time.strftime('%Y-%m-%d %H:%M %Z')} at commit {commit.strip()[:12]} on "
        f"{platform.node()} ({platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()})."
    )
    (ROOT / "docs" / "results.md").write_text(results_page(ROOT, generated))
    readme = ROOT / "README.md"
    readme.write_text(replace_block(readme.read_text(), readme_block(names[0])))
    print(f"wrote docs/results.md and the README block ({names[0]})", file=sys.stderr)


if __name__ == "__main__":
    main()
