"""What a trained (and evaluated) experiment's folders claim to be, checked before anything reads them.

``src.compare``, ``src.report`` and ``src.plan`` combine files that different stages wrote at different
times: the training's out-of-fold predictions and folds, the evaluation's scores. Each stage records the
sha256 of the tables it wrote in its ``metrics.json`` (``provenance.files``) and the evaluation the sha256 of
the model it scored (``provenance.model_sha256``); :func:`check_experiment` refuses, in one line, a table
that is not the one written, and an evaluation of another model than the one trained (retrained since, or
copied from another run).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from src.utils.errors import MissingInputError, UserInputError
from src.utils.io import check_file_record


def _document(path: Path) -> dict[str, Any]:
    try:
        document = json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingInputError(f"{path} not found") from None
    except ValueError as err:
        raise UserInputError(f"{path} is not a results document ({err}); rerun the stage") from None
    if not isinstance(document, dict):
        raise UserInputError(f"{path} is not a results document; rerun the stage")
    return document


def check_experiment(name: str, run: Path) -> bool:
    """Check the experiment ``name``'s ``run/train`` (and ``run/evaluate``, when it exists) against their
    records; return whether it was evaluated. Raises :class:`UserInputError` naming the file."""
    train, evaluate = run / "train", run / "evaluate"
    trained = _document(train / "metrics.json")
    provenance = trained.get("provenance") or {}
    check_file_record(train, provenance.get("files"), f"experiment {name!r}'s training")
    if not (evaluate / "metrics.json").is_file():
        return False
    evaluated = _document(evaluate / "metrics.json")
    used = (evaluated.get("provenance") or {}).get("model_sha256")
    if provenance.get("model_sha256") and used != provenance["model_sha256"]:
        raise UserInputError(
            f"experiment {name!r}: {evaluate} was made with model sha256 {used}, but {train} now holds "
            f"{provenance['model_sha256']} (retrained since, or copied from another run?); run "
            f"`python -m src.evaluate +experiment={name}` (or `dvc repro`)"
        )
    check_file_record(
        evaluate, (evaluated.get("provenance") or {}).get("files"), f"experiment {name!r}'s evaluation"
    )
    return True
