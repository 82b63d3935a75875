"""``--help`` of the commands: what the command does, needs and writes, with an example (the module's
docstring), instead of Hydra's dump of the whole configuration."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

SETTINGS = """
Settings are Hydra overrides, key=value, e.g.:
  +experiment=gm_only      an experiment of conf/experiment/ (features, model, CV)
  data=bids                your cohorts (conf/data/bids.yaml; default: the simulated cohorts)
  seed=2026 n_jobs=2       the one seed of every random choice; parallel workers
  paths.output=outputs     where ${paths.run} = <output>/<experiment> lives
  tracking.enabled=false   no MLflow logging
  verbose=true             every INFO line on the console (the full log is always in Hydra's log file)
Print the composed configuration with --cfg job; Hydra's own options with --hydra-help.
"""


def start(cfg: Any) -> dict[str, Any]:
    """What every command does first: logging (quiet console, full log file), the config checked (types,
    ranges, unknown keys), and the config resolved into a plain dict for the library code."""
    from omegaconf import OmegaConf

    from src.utils.checks import check_config
    from src.utils.logging import configure_logging

    configure_logging(bool(cfg.verbose))
    check_config(cfg)
    return OmegaConf.to_container(cfg, resolve=True)


def run(main: Callable[[], object], doc: str | None) -> None:
    """Run a Hydra ``main``; ``--help``/``-h`` prints ``doc`` and the common settings instead."""
    if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
        print((doc or "").strip() + "\n" + SETTINGS)
        return
    main()
