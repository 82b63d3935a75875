"""``--help`` of the commands: what the command does, needs and writes, with an example (the module's
docstring), instead of Hydra's dump of the whole configuration."""

from __future__ import annotations

import difflib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from omegaconf import OmegaConf

from src.config.checks import SECTION_KEYS, check_config
from src.config.settings import ExperimentConfig, as_trained, register, saved_settings, settings_from
from src.utils.errors import EXIT_USER_ERROR, MissingInputError, UserInputError, reject_unknown_keys
from src.utils.logging import configure_logging, status

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


def start(cfg: Any) -> ExperimentConfig:
    """What every command does first: logging (quiet console, full log file), the config checked (types,
    ranges, unknown keys: one line each), the outputs of other data put apart (:func:`namespace_by_data`)
    and built into the typed settings the library code takes."""
    configure_logging(bool(cfg.verbose))
    check_config(cfg)
    namespace_by_data(cfg)
    return settings_from(cfg)


# the pipeline's folders, as they resolve by default (conf/config.yaml): a run on other data than the
# pipeline's never writes into them
SHARED_FOLDERS = {
    "paths.output": "outputs",
    "paths.features": "data/features",  # a feature set's folder is replaced whole when built
    "report.dir": "reports",
    "compare.dir": "comparisons",
}


def pipeline_data(params_file: str | Path) -> str:
    """The data config ``dvc repro`` runs on (``data`` of ``params.yaml``; ``simulated`` without one)."""
    path = Path(params_file)
    params = yaml.safe_load(path.read_text()) if path.is_file() else None
    return str((params or {}).get("data") or "simulated")


def data_choice(cfg: Any) -> str:
    """The data config this command composed (``data=<name>``: the file ``conf/data/<name>.yaml``, what
    ``params.yaml``'s ``data`` names); ``data.name`` outside a Hydra run."""
    # lazy: Hydra's runtime state exists only inside a @hydra.main task
    from hydra.core.hydra_config import HydraConfig

    try:
        return str(HydraConfig.get().runtime.choices["data"])
    except (ValueError, KeyError):  # not in a Hydra run, or no data group chosen
        return str(cfg.data.name)


def namespace_by_data(cfg: Any) -> None:
    """Runs on other data than the pipeline's live apart: with a data config (:func:`data_choice`) other
    than the ``data`` of ``params.yaml``, each of the folders of :data:`SHARED_FOLDERS` still at its default
    (``outputs``, ``data/features``, ``reports``, ``comparisons``) gets the data's name as a subfolder
    (``outputs/<data>/<experiment>/...``, ``data/features/<data>/<feature set>/``), so that no tutorial,
    how-to or own-data run overwrites the committed results of the pipeline; a folder that resolves
    elsewhere (``paths.output=...``, ``paths.data=...``) is used as given. Changes ``cfg`` in place (before
    it is resolved, so that everything interpolating these folders follows)."""
    data = data_choice(cfg)
    if data == pipeline_data(cfg.params_file):
        return
    for key, default in SHARED_FOLDERS.items():
        if OmegaConf.select(cfg, key) == default:  # resolved: paths.data=elsewhere moves the features too
            section, leaf = key.split(".")
            cfg[section][leaf] = f"{default}/{data}"


def trained_settings(config: ExperimentConfig, train_dir: Path) -> ExperimentConfig:
    """The settings of a command that reads the model trained in ``train_dir``: what defines the model
    (features, learner, CV design, outcome) from its own ``config.yaml``
    (:func:`~src.config.settings.as_trained`), so that every document describes the model it describes;
    where this invocation said otherwise, one line says so."""
    saved = train_dir / "config.yaml"
    if not saved.is_file():
        raise MissingInputError(f"{saved} not found: the training's settings are needed (train again)")
    merged, differences = as_trained(config, saved_settings(saved))
    if differences:
        status(
            f"note: the model in {train_dir} was trained with other settings than this command's; its own "
            f"are used: {'; '.join(differences)}"
        )
    return merged


def composed(cfg: Any) -> dict[str, Any]:
    """The composed config as the user gave it, resolved (what is saved beside a model and logged as MLflow
    params): only the entry points hold it; the library takes :class:`ExperimentConfig`."""
    return OmegaConf.to_container(cfg, resolve=True)


CONF = Path(__file__).resolve().parents[2] / "conf"
GROUPS = ("data", "features", "model", "cv", "experiment")


def unknown_group_option(args: list[str], conf: Path = CONF) -> str | None:
    """The message for the first ``group=option`` argument (``+experiment=gm_onyl``, ``features=gm_roii``,
    multirun lists ``a,b`` too) naming no file in ``conf/<group>/``, with the nearest name; None if all are
    known. Hydra's own message for it is several lines with exit status 1; this keeps the one-line rule."""
    for arg in args:
        key, sep, value = arg.partition("=")
        group = key.lstrip("+~")
        if not sep or group not in GROUPS or not value or any(c in value for c in "${}[]()"):
            continue
        known = sorted(path.stem for path in (conf / group).glob("*.yaml"))
        for option in value.split(","):
            if option not in known:
                close = difflib.get_close_matches(option, known, n=1)
                hint = f"did you mean {key}={close[0]}?" if close else f"known: {', '.join(known)}"
                return f"{key}={option}: no config conf/{group}/{option}.yaml ({hint})"
    return None


def unknown_override_key(args: list[str], conf: Path = CONF) -> str | None:
    """The message for the first ``section.key=value`` argument whose key this project does not read
    (``cv.n_trails=5``), with the nearest known key; None if none. Hydra's own message for a key not in
    the config is several lines advising ``+cv.n_trails``, which would then be refused as a typo anyway."""
    top = set(yaml.safe_load((conf / "config.yaml").read_text())) | set(GROUPS) | {"hydra", "input"}
    for arg in args:
        key, sep, _ = arg.partition("=")
        if not sep or key.startswith(("+", "~", "hydra.", "hydra/")) or "/" in key:
            continue
        section, _, leaf = key.rpartition(".")
        if section and section not in SECTION_KEYS:
            continue  # deeper settings (a search space's bounds, the simulation): checked after composing
        try:
            reject_unknown_keys({leaf: None}, SECTION_KEYS[section] if section else top, section)
        except UserInputError as err:
            return str(err)
    return None


def unparsable_override(args: list[str]) -> str | None:
    """The message for the first ``key=value`` argument Hydra's override grammar cannot read (a value with
    a non-ASCII letter such as ``site=Zürich``, a space, a bracket left open), with the quoting that fixes
    it; None if all parse. Hydra's own message is its lexer's (``LexerNoViableAltException``) and a link."""
    # lazy: the grammar is Hydra's, needed only when a command starts
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    for arg in args:
        if arg.startswith("-") or "=" not in arg:
            continue  # Hydra's own flags (--cfg job, -m) and its positional arguments
        try:
            parser.parse_overrides([arg])
        except OverrideParseException:
            key, _, value = arg.partition("=")
            if value.startswith("[") and value.endswith("]"):  # a list: each element quoted
                items = [item.strip().strip("'\"") for item in value[1:-1].split(",") if item.strip()]
                fixed = "[" + ",".join(f'"{item}"' for item in items) + "]"
            else:
                fixed = '"' + value.strip("'\"") + '"'
            return (
                f"cannot read the override {arg!r}: quote the value for Hydra, as {key}='{fixed}' in the "
                "shell (non-ASCII letters, spaces and other special characters need quotes)"
            )
    return None


def run(main: Callable[[], object], doc: str | None) -> None:
    """Run a Hydra ``main``; ``--help``/``-h`` prints ``doc`` and the common settings instead. A config group
    option that does not exist is one ``error:`` line and exit status 2, before Hydra composes anything."""
    if any(arg in ("--help", "-h") for arg in sys.argv[1:]):
        print((doc or "").strip() + "\n" + SETTINGS)
        return
    problem = (
        unparsable_override(sys.argv[1:])
        or unknown_group_option(sys.argv[1:])
        or unknown_override_key(sys.argv[1:])
    )
    if problem is not None:
        print(f"error: {problem}", file=sys.stderr)
        raise SystemExit(EXIT_USER_ERROR)
    register()  # the typed schema in Hydra's ConfigStore (`defaults: [schema]` in a config of your own)
    main()
