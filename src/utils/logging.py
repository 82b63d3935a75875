"""Logging set-up shared by the entry points: a quiet console, a full log file, status lines.

The console shows warnings (every INFO line with ``verbose=true``), progress bars when it is a terminal
and one status line per long phase (:func:`status`); Hydra's log file (``<hydra.run.dir>/<command>.log``)
receives everything at INFO, so a run can be read afterwards.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings

log = logging.getLogger("src.status")


def configure_logging(verbose: bool = False) -> None:
    """Console handlers at WARNING (INFO with ``verbose``), file handlers (Hydra's job log) at INFO.

    Third-party chatter (nilearn's resampling notices, MLflow/alembic set-up) stays at WARNING either way.
    """
    console = logging.INFO if verbose else logging.WARNING
    logging.getLogger("src").setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.INFO if isinstance(handler, logging.FileHandler) else console)
    # MLflow installs its own handler at import, at MLFLOW_LOGGING_LEVEL (INFO by default: database
    # migrations, "registered model ..." lines); it may be imported later, so set both
    os.environ["MLFLOW_LOGGING_LEVEL"] = "INFO" if verbose else "WARNING"
    logging.getLogger("mlflow").setLevel(console)
    logging.getLogger("alembic").setLevel(console)
    if not verbose:
        warnings.filterwarnings("ignore", category=FutureWarning, module="nilearn")
        # pickle-based MLflow models are the only format that holds the ensemble's own classes (skops needs
        # every type whitelisted); the warning is said once here, in the README, not on every run
        logging.getLogger("mlflow.sklearn").addFilter(lambda record: "pickle" not in record.getMessage())


def progress_wanted() -> bool:
    """Progress bars only on a terminal (a log file or CI gets the status lines instead)."""
    return sys.stderr.isatty()


def status(message: str) -> None:
    """One line saying what a command is doing or has done (phases of more than a few seconds): on stderr
    always, in the log file too."""
    print(message, file=sys.stderr, flush=True)
    log.info(message)


class RateLines:
    """Status lines for a long loop when no progress bar is shown (a log file, ``dvc repro``, CI): after the
    first ``first`` units the rate and an estimated finish, then at every further tenth of the work.

    Written by hand: tqdm's bar needs a terminal, and its ``mininterval`` lines would flood a log.
    """

    def __init__(self, total: int, done: int, label: str, first: int = 5, enabled: bool = True) -> None:
        self.total, self.start_done, self.done, self.label = total, done, done, label
        self.enabled = enabled and total > done
        self.started = time.monotonic()
        self.next = done + min(first, total - done)

    def update(self, n: int = 1) -> None:
        """Count ``n`` more items done; print a status line (rate, time left) at the next checkpoint."""
        self.done += n
        if not self.enabled or self.done < self.next or self.done >= self.total:
            return
        computed = self.done - self.start_done
        each = (time.monotonic() - self.started) / computed
        left = each * (self.total - self.done)
        finish = time.strftime("%H:%M", time.localtime(time.time() + left))
        status(
            f"{self.label}: {self.done}/{self.total}, {each:.2f} s each, about {_minutes(left)} left "
            f"(finishing ~{finish})"
        )
        step = max(1, self.total // 10)
        self.next = (self.done // step + 1) * step


def _minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"
