"""Imports run one way: each layer imports only the layers below it (docs: README, "Architecture").

entry points (``src/*.py``) > reporting > tracking > prediction, evaluation > interpretation > validation >
features > data, models > config > utils. The science code (everything below tracking) never imports
tracking: MLflow is a layer on top. Every import counts, the ones inside functions too.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

# rank: a module may import modules of its own package or of a strictly lower rank
LAYERS: dict[str, int] = {
    "<entry>": 9,
    "reporting": 8,
    "tracking": 7,
    "prediction": 6,
    "evaluation": 6,
    "interpretation": 5,
    "validation": 4,
    "features": 3,
    "data": 2,
    "models": 2,
    "config": 1,
    "utils": 0,
}


def layer(module: str) -> str:
    """The layer of ``src.<package>.<...>``; modules directly under ``src`` are entry points."""
    parts = module.split(".")
    if len(parts) > 2 or (len(parts) == 2 and parts[1] in LAYERS):
        return parts[1]
    return "<entry>"


def imported_modules(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, module) of every ``src`` import in a file, relative imports resolved."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # from . import x / from ..a import b
                base = module.split(".")[: -node.level]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            out.append((node.lineno, name))
    return [(line, name) for line, name in out if name == "src" or name.startswith("src.")]


def back_imports(root: Path) -> list[str]:
    """Every import in ``root/src`` that runs against the layers, as ``file:line: a -> b``."""
    problems = []
    for path in sorted((root / "src").rglob("*.py")):
        module = ".".join(path.relative_to(root).with_suffix("").parts).removesuffix(".__init__")
        here = layer(module)
        for line, name in imported_modules(path, module):
            there = layer(name) if name != "src" else "<entry>"
            if there != here and LAYERS[there] >= LAYERS[here]:
                problems.append(f"{path.relative_to(root)}:{line}: {here} -> {there} ({name})")
    return problems


def test_imports_run_one_way():
    problems = back_imports(ROOT)
    assert not problems, "imports against the layers:\n" + "\n".join(problems)


def test_every_package_has_a_layer():
    packages = {p.name for p in (ROOT / "src").iterdir() if (p / "__init__.py").exists()}
    assert packages <= set(LAYERS), f"packages without a layer: {sorted(packages - set(LAYERS))}"


def test_a_back_import_is_caught(tmp_path):
    """The rule fails when a science module imports tracking (inside a function too), when prediction
    reaches into evaluation, and when a utility imports a model."""
    for package, body in {
        "validation": "def f():\n    from src.tracking.training import log_training\n",
        "prediction": "from src.evaluation import locked\n",
        "utils": "import src.models.pipeline\n",
        "models": "from . import x\nfrom ..data import cohorts\n",
    }.items():
        folder = tmp_path / "src" / package
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("")
        (folder / "bad.py").write_text(body)
    problems = back_imports(tmp_path)
    assert [p.split(": ", 1)[1] for p in problems] == [
        "models -> data (src.data)",
        "prediction -> evaluation (src.evaluation)",
        "utils -> models (src.models.pipeline)",
        "validation -> tracking (src.tracking.training)",
    ]


def documented_layers(page: Path) -> dict[str, tuple[int, set[str]]]:
    """The architecture page's layer table: layer -> (rank, the layers it says may be imported)."""
    text = page.read_text()
    section = text[text.index("## Layers") :]
    rows = {}
    for line in section.splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].isdigit():
            if rows:
                break
            continue
        name = "<entry>" if cells[1] == "entry points" else cells[1]
        imports = set() if cells[3] == "—" else {c.strip() for c in cells[3].split(",")}
        rows[name] = (int(cells[0]), imports)
    return rows


def page_mismatches(page: Path) -> list[str]:
    """Where the architecture page's table differs from the enforced ``LAYERS`` (rank, may-import set)."""
    enforced = {
        name: (rank, {other for other, r in LAYERS.items() if r < rank and other != "<entry>"})
        for name, rank in LAYERS.items()
    }
    documented = documented_layers(page)
    return [
        f"{name}: page {documented.get(name)}, enforced {enforced.get(name)}"
        for name in sorted(set(enforced) | set(documented))
        if documented.get(name) != enforced.get(name)
    ]


def test_the_architecture_page_states_the_enforced_rule():
    """docs/architecture.md's table: every layer, its rank, and what it may import = what is enforced."""
    problems = page_mismatches(ROOT / "docs" / "architecture.md")
    assert not problems, "docs/architecture.md and tests/test_architecture.py disagree:\n" + "\n".join(
        problems
    )


def test_a_page_that_misstates_the_rule_is_caught(tmp_path):
    """A wrong rank, a layer said to import one above it, a missing layer: each is a mismatch."""
    page = (ROOT / "docs" / "architecture.md").read_text()
    for wrong in (
        page.replace("| 4 | validation |", "| 5 | validation |", 1),
        page.replace(
            "| 0 | utils | atomic writes, hashing, errors, logging, parallel backends, table formatting | — |",  # noqa: E501
            "| 0 | utils | atomic writes | models |",
            1,
        ),
        "\n".join(line for line in page.splitlines() if not line.startswith("| 3 | features |")),
    ):
        assert wrong != page
        (tmp_path / "a.md").write_text(wrong)
        assert len(page_mismatches(tmp_path / "a.md")) == 1
