"""Checks run before any expensive work: config values, writable outputs. Each failure is one message
naming the key or the path (:class:`~src.utils.errors.UserInputError`)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from src.utils.errors import UserInputError

# key -> (minimum, None allowed): integer settings that scripts and users override on the command line
INTEGER_KEYS: dict[str, tuple[int, bool]] = {
    "seed": (0, False),
    "n_jobs": (-1, False),
    "cv.repeats": (1, False),
    "cv.outer_folds": (2, False),
    "cv.inner_folds": (2, False),
    "cv.n_trials": (1, False),
    "permutation.n": (0, False),
    "permutation.repeats": (1, True),
}


def check_config(cfg: Any) -> None:
    """Every integer setting is an integer in range (``cv.repeats=abc``, ``n_jobs=0`` are refused by name)."""
    for key, (minimum, nullable) in INTEGER_KEYS.items():
        value = _select(cfg, key)
        if value is None and nullable:
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise UserInputError(f"config key {key}={value!r}: an integer is needed")
        if value < minimum or (key == "n_jobs" and value == 0):
            allowed = "-1 (all cores) or a positive number" if key == "n_jobs" else f">= {minimum}"
            raise UserInputError(f"config key {key}={value}: must be {allowed}")


def _select(cfg: Mapping[str, Any], key: str) -> Any:  # a DictConfig is a Mapping too
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node


def check_writable(folder: str | os.PathLike) -> None:
    """``folder`` could be created and written: its nearest existing ancestor accepts a new file. Checked
    before the work, not after it, and without creating anything."""
    folder = Path(folder).absolute()
    existing = folder
    while not existing.exists():
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(20, "a file stands where a folder is needed", str(existing))
        with tempfile.NamedTemporaryFile(dir=existing, prefix=".write-check."):
            pass
    except OSError as err:
        raise UserInputError(
            f"output folder {folder} is not writable ({err.strerror}: {existing}); set paths.output"
        ) from err
