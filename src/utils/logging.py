"""Logging set-up shared by the entry points: quiet by default, verbose on request."""

from __future__ import annotations

import logging
import os
import warnings


def configure_logging(verbose: bool = False) -> None:
    """Show warnings only (default) or every INFO line of the pipeline (``verbose=true``).

    Third-party chatter (nilearn's resampling notices, MLflow/alembic set-up) stays at WARNING either way.
    """
    level = logging.INFO if verbose else logging.WARNING
    logging.getLogger("src").setLevel(level)
    for handler in logging.getLogger().handlers:
        handler.setLevel(logging.INFO if verbose else logging.WARNING)
    # MLflow installs its own handler at import, at MLFLOW_LOGGING_LEVEL (INFO by default: database
    # migrations, "registered model ..." lines); it may be imported later, so set both
    os.environ["MLFLOW_LOGGING_LEVEL"] = "INFO" if verbose else "WARNING"
    logging.getLogger("mlflow").setLevel(logging.INFO if verbose else logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.INFO if verbose else logging.WARNING)
    if not verbose:
        warnings.filterwarnings("ignore", category=FutureWarning, module="nilearn")
        # pickle-based MLflow models are the only format that holds the ensemble's own classes (skops needs
        # every type whitelisted); the warning is said once here, in the README, not on every run
        logging.getLogger("mlflow.sklearn").addFilter(lambda record: "pickle" not in record.getMessage())
