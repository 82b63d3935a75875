"""Expected errors: bad input a user can fix, printed as one clear message instead of a traceback.

Every error raised for the user's input (a cohort, a table, a config value, a missing feature table)
derives from :class:`UserInputError`. The entry points wrap their Hydra task in :func:`user_errors`: such an
error prints ``error: <message>`` on stderr and exits with status 2; anything else is a bug and keeps its
traceback. ``verbose=true`` or ``HYDRA_FULL_ERROR=1`` show the full trace of user errors too.
"""

from __future__ import annotations

import difflib
import errno
import functools
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])
EXIT_USER_ERROR = 2
EXIT_INTERRUPTED = 130  # as a shell reports a Ctrl-C


class UserInputError(ValueError):
    """An input the user can fix; the message names the cohort, subject, file, column or config key."""


class MissingInputError(UserInputError, FileNotFoundError):
    """An input file or folder that an earlier stage should have written (or the user should provide)."""


def user_errors(task: F) -> F:
    """Decorate a Hydra task function: :class:`UserInputError` -> one message on stderr, exit status 2; and
    SIGTERM (a scheduler's or ``kill``'s stop) ends the run as Ctrl-C does, so that temporary folders are
    removed and open MLflow runs are marked KILLED instead of staying RUNNING."""

    @functools.wraps(task)
    def wrapper(cfg: Any) -> Any:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, _interrupt)
        try:
            return task(cfg)
        except UserInputError as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or bool(getattr(cfg, "verbose", False)):
                raise
            print(f"error: {readable(str(err))}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
        except OSError as err:
            if err.errno not in DISK_FULL or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            if bool(getattr(cfg, "verbose", False)):
                raise
            print(f"error: {disk_full_message(err)}", file=sys.stderr)
            raise SystemExit(EXIT_USER_ERROR) from None
        except KeyboardInterrupt as stop:
            if os.environ.get("HYDRA_FULL_ERROR") == "1" or bool(getattr(cfg, "verbose", False)):
                raise
            _stop_workers()
            print(f"interrupted ({stop or 'Ctrl-C'}): nothing half-written was kept", file=sys.stderr)
            raise SystemExit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


# a run of non-blank characters longer than this in an error message is a user's value (a cell of a million
# digits once made a 1 MB error line), not a word or a path: shown cut, with its length
LONGEST_SHOWN = 200


def readable(message: str, longest: int = LONGEST_SHOWN) -> str:
    """``message`` with every run of non-blank characters longer than ``longest`` cut to its first and last
    characters and its length: one readable line, whatever value a user's file held."""
    return re.sub(
        rf"\S{{{longest + 1},}}",
        lambda m: f"{m.group()[:60]}…{m.group()[-10:]} ({len(m.group())} characters)",
        message,
    )


# a full disk, a quota or a file-size limit: the user can fix them, and a rerun resumes
DISK_FULL = frozenset({errno.ENOSPC, errno.EFBIG, errno.EDQUOT})


def disk_full_message(err: OSError, path: str | os.PathLike | None = None) -> str:
    """One line for a write that failed for lack of space: the path, the reason, and that a rerun resumes
    (finished folds and permutations are checkpointed; outputs are written whole or not at all)."""
    where = path if path is not None else (err.filename or "an output file")
    return (
        f"cannot write {where}: {err.strerror or os.strerror(err.errno or 0)} "
        f"({errno.errorcode.get(err.errno or 0, err.errno)}); nothing half-written was kept. Free space (or "
        "set paths.output elsewhere) and run the same command again: finished folds and permutations are "
        "resumed from their checkpoints"
    )


class DiskFullError(UserInputError, OSError):
    """A write that failed for lack of space (ENOSPC, EDQUOT) or past the file-size limit (EFBIG)."""


def _stop_workers() -> None:
    """End joblib's worker processes before exiting on an interruption: left to the interpreter's exit, they
    die mid-task and the resource tracker prints a "leaked semaphore objects" warning after our one line."""
    if "joblib" not in sys.modules:
        return
    try:
        # lazy: only on an interruption
        from joblib.externals.loky import get_reusable_executor

        get_reusable_executor().shutdown(wait=True, kill_workers=True)
    except Exception:  # the interruption is what the user needs to see, not a failed clean-up
        pass


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"stopped by signal {signum}")


def reject_unknown_keys(node: Mapping[str, Any] | None, known: Iterable[str], where: str) -> None:
    """Refuse a config section holding a key its reader does not know (a typo such as ``cv.n_trails`` is an
    error naming the closest known key, not a setting silently ignored). ``where``: the section's dotted
    path, empty for the top level."""
    if not isinstance(node, Mapping):
        return
    known = sorted(known)
    prefix = f"{where}." if where else ""
    for key in node:
        if key not in known:
            close = difflib.get_close_matches(str(key), known, n=1)
            hint = f"did you mean {prefix}{close[0]}?" if close else f"known: {', '.join(known)}"
            raise UserInputError(f"config key {prefix}{key} is not a setting this project reads ({hint})")
