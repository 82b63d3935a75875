"""Logging set-up shared by the entry points: a quiet console, a full log file, status lines.

The console shows warnings (every INFO line with ``verbose=true``), progress bars when it is a terminal
and one status line per long phase (:func:`status`); Hydra's log file (``<hydra.run.dir>/<command>.log``)
receives everything at INFO, so a run can be read afterwards.
"""

from __future__ import annotations

import logging
import os
import sys
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
