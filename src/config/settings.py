"""The typed settings: one dataclass per config group, the single schema of ``conf/``.

Each group of ``conf/config.yaml`` (and of the groups it composes) is a frozen dataclass here; together they
are :class:`ExperimentConfig`, registered as Hydra structured configs (:func:`register`). The entry points
build it once at the door (:func:`src.config.cli.start`): :func:`src.config.checks.check_config` reads the
field names, types and the bounds in each field's metadata to refuse unknown keys, wrong types and values out
of range with one line each, then OmegaConf fills the dataclasses. Library code takes these objects and never
indexes a config dict by string.

Field metadata: ``min`` (an integer's lower bound), ``interval`` (``(low, high, low inclusive, high
inclusive)`` of a real number), ``choices`` (the allowed strings), ``open`` (a mapping whose keys are the
user's, e.g. the simulation's parameters or the search space: not checked against a schema here).
"""

from __future__ import annotations

import dataclasses
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from src.utils.errors import UserInputError, reject_unknown_keys
from src.utils.parallel import ParallelSettings

OPEN = {"open": True}


def _min(value: int) -> dict[str, Any]:
    return {"min": value}


def _interval(low: float, high: float, low_in: bool, high_in: bool) -> dict[str, Any]:
    return {"interval": (low, high, low_in, high_in)}


@dataclass(frozen=True)
class CVConfig:
    """The nested CV scheme (``conf/cv/*.yaml``).

    Attributes
    ----------
    repeats, outer_folds : int
        Outer CV: repeats x stratified folds (CV2).
    inner_folds : int
        Inner stratified folds of every outer-training part (CV1).
    n_trials : int
        Optuna trials per (repeat, outer fold) study.
    sampler : {"tpe", "random", "grid"}
    n_startup_trials : int
        TPE's random start-up trials.
    """

    repeats: int = field(default=10, metadata=_min(1))
    outer_folds: int = field(default=10, metadata=_min(2))
    inner_folds: int = field(default=5, metadata=_min(2))
    n_trials: int = field(default=30, metadata=_min(1))
    sampler: str = "tpe"  # checked by __post_init__ (its own message)
    n_startup_trials: int = 10

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> CVConfig:
        """The settings from the ``cv`` config group; an unknown key is an error."""
        reject_unknown_keys(cfg, cls.__dataclass_fields__, "cv")
        return cls(**cfg)

    def __post_init__(self) -> None:
        if self.repeats < 1 or self.outer_folds < 2 or self.inner_folds < 2 or self.n_trials < 1:
            raise UserInputError(f"invalid CV scheme {self}")
        if self.sampler not in ("tpe", "random", "grid"):
            raise UserInputError(f"cv.sampler must be tpe, random or grid, got {self.sampler!r}")


@dataclass(frozen=True)
class PermutationSettings:
    """The label-permutation test of the whole nested CV (``permutation``)."""

    n: int = field(default=1000, metadata=_min(0))
    repeats: int | None = field(default=1, metadata=_min(1))
    shard: str | None = None
    inline: bool = True


@dataclass(frozen=True)
class ChampionSettings:
    """The registry alias set when the pooled external BAC's permutation p is below ``max_p``."""

    alias: str = "champion"
    max_p: float = field(default=0.05, metadata=_interval(0.0, 1.0, False, True))
    # a model trained on simulated data (the simulator's or the example's cohorts) never gets the alias
    # unless this says so: src.predict loads the alias by default
    allow_simulated: bool = False


@dataclass(frozen=True)
class SubgroupSettings:
    """Performance per subgroup (``evaluation.subgroups``): sex, site, age band, baseline-severity tertile and
    the listed participants.tsv ``columns``."""

    columns: list[str] = field(default_factory=list)
    age_bands: list[float] = field(default_factory=lambda: [30.0, 45.0])
    min_n: int = field(default=10, metadata=_min(2))
    max_levels: int = field(default=5, metadata=_min(2))
    severity: bool = True


@dataclass(frozen=True)
class EvaluationSettings:
    """The evaluation of the locked model on independent cohorts (``evaluation``)."""

    n_permutations: int = field(default=10000, metadata=_min(1))
    n_bootstrap: int = field(default=2000, metadata=_min(1))
    weight_permutations: int | None = field(default=5000, metadata=_min(0))
    harmonize: bool = True
    alignment_method: str = field(default="location_scale", metadata={"choices": ("location_scale", "eb")})
    champion: ChampionSettings = field(default_factory=ChampionSettings)
    subgroups: SubgroupSettings = field(default_factory=SubgroupSettings)
    reference: dict[str, Any] = field(default_factory=dict, metadata=OPEN)


@dataclass(frozen=True)
class LearningCurveSettings:
    """The nested CV rerun on stratified subsamples of the discovery cohort (``plan.learning_curve``)."""

    fractions: list[float] = field(default_factory=lambda: [0.4, 0.6, 0.8, 1.0])
    draws: int = field(default=5, metadata=_min(1))
    repeats: int = field(default=1, metadata=_min(1))


@dataclass(frozen=True)
class SampleSizeSettings:
    """Development (Riley et al.) and external-validation sample sizes (``plan.sample_size``)."""

    anticipated_auc: float | None = field(default=None, metadata=_interval(0.5, 1.0, False, False))
    prevalence: float | None = field(default=None, metadata=_interval(0.0, 1.0, False, False))
    shrinkage: float = field(default=0.9, metadata=_interval(0.0, 1.0, False, False))
    powers: list[float] = field(default_factory=lambda: [0.8, 0.9])
    precision: float = field(default=0.1, metadata=_interval(0.0, 0.5, False, True))
    alpha: float = field(default=0.05, metadata=_interval(0.0, 1.0, False, False))
    n_sim: int = field(default=2000, metadata=_min(100))


@dataclass(frozen=True)
class PlanSettings:
    """``python -m src.plan``: learning curve and sample size (``plan``)."""

    learning_curve: LearningCurveSettings = field(default_factory=LearningCurveSettings)
    sample_size: SampleSizeSettings = field(default_factory=SampleSizeSettings)


@dataclass(frozen=True)
class PredictSettings:
    """Scoring new patients (``predict``)."""

    model: str | None = "champion"
    align_unseen_sites: int | None = field(default=8, metadata=_min(2))
    card: bool = True
    threshold: float = field(default=0.5, metadata=_interval(0.0, 1.0, False, False))
    coverage: float = field(default=0.95, metadata=_interval(0.0, 1.0, False, False))
    distance_percentile: float = field(default=99.0, metadata=_interval(0.0, 100.0, False, True))
    dir: str = "outputs/predict"


@dataclass(frozen=True)
class PatientSettings:
    """The covariates of a single-image input to ``src.predict`` (``patient``)."""

    participant_id: str | None = None
    age: float | None = None
    sex: str | None = None
    site: str | None = None
    tiv: float | None = None
    # the patient's clinical predictors (data.clinical), e.g. patient.clinical={bmi: 31, anxious: 1}; one
    # left out is imputed by each fold model with its training mean
    clinical: dict[str, Any] = field(default_factory=dict, metadata=OPEN)


@dataclass(frozen=True)
class TrackingSettings:
    """The ``tracking`` config group.

    Attributes
    ----------
    enabled : bool
        False: nothing is logged (quick runs, or no MLflow wanted); entry points still write their files.
    uri : str or None
        Tracking URI. None: ``$MLFLOW_TRACKING_URI`` if set, else a SQLite store ``<root>/mlflow.db``.
    root : str
        The local store folder (default the top-level ``mlruns/``): the SQLite database and every
        experiment's artifacts live inside it, whatever the current directory.
    experiment : str
        MLflow experiment (default: the Hydra experiment's name).
    register_model : bool
        Register the locked ensemble in the model registry as ``model_name``.
    model_name : str
        Registered model name.
    wide_table_columns : int
        Above this many input columns (voxel tables), MLflow's per-column machinery is not used: the model
        is logged without a column signature and input example, and evaluation logs a compact tensor
        dataset (shape and digest) instead of ``mlflow.models.evaluate``'s column schema, which MLflow
        caps at 1 MB and builds one column at a time. This project's own metrics are logged either way.
    """

    enabled: bool = True
    uri: str | None = None
    root: str = "mlruns"
    experiment: str = "default"
    register_model: bool = True
    model_name: str = "ketamine-trd"
    wide_table_columns: int = 2000

    @classmethod
    def from_config(cls, cfg: dict[str, Any]) -> TrackingSettings:
        """The settings from the ``tracking`` config group; an unknown key is an error."""
        reject_unknown_keys(cfg, cls.__dataclass_fields__, "tracking")
        return cls(**cfg)

    @property
    def root_path(self) -> Path:
        """The local store's folder (``root``), absolute."""
        return Path(self.root).expanduser().resolve()

    @property
    def tracking_uri(self) -> str:
        """``uri``, else ``$MLFLOW_TRACKING_URI``, else the SQLite store ``<root>/mlflow.db``."""
        if self.uri:
            return str(self.uri)
        if os.environ.get("MLFLOW_TRACKING_URI"):
            return os.environ["MLFLOW_TRACKING_URI"]
        return f"sqlite:///{self.root_path / 'mlflow.db'}"

    @property
    def is_local(self) -> bool:
        """True for a store on this machine (SQLite or files), False for a tracking server."""
        return self.tracking_uri.startswith(("sqlite:", "file:")) or "://" not in self.tracking_uri


@dataclass(frozen=True)
class ReportSettings:
    """The cross-experiment report (``report``)."""

    experiments: list[str] | None = None
    params_file: str = "params.yaml"
    dir: str = "reports"


@dataclass(frozen=True)
class RopeSettings:
    """Half-widths of the region of practical equivalence, in each metric's units (0.01 = 1 BAC point)."""

    bac: float = field(default=0.01, metadata=_interval(0.0, 1.0, True, False))
    auc: float = field(default=0.01, metadata=_interval(0.0, 1.0, True, False))


@dataclass(frozen=True)
class CompareSettings:
    """Paired comparison of trained experiments (``compare``; ``python -m src.compare``)."""

    experiments: list[str] | None = None
    rope: RopeSettings = field(default_factory=RopeSettings)
    n_bootstrap: int = field(default=2000, metadata=_min(1))
    dir: str = "comparisons"


@dataclass(frozen=True)
class PathsSettings:
    """Where data and results live (``paths``)."""

    data: str = "data"
    cohorts: str = "data/cohorts"
    features: str = "data/features"
    output: str = "outputs"
    run: str = "outputs/default"


@dataclass(frozen=True)
class StackSettings:
    """Late fusion (``model.stack``): one model per modality, stacked by a logistic meta-learner inside every
    outer fold (:class:`src.validation.stacking.StackedNestedCV`).

    Attributes
    ----------
    meta_cs : list of float
        Inverse regularisation strengths of the L2 logistic meta-learner, chosen by inner CV (log loss).
    clinical_covariates : list of str
        Covariates regressed out of the clinical block: none (default) or the model's covariates.
    """

    meta_cs: list[float] = field(default_factory=lambda: [0.01, 0.1, 1.0, 10.0, 100.0])
    clinical_covariates: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ModelSettings:
    """A model and its Optuna search space (``conf/model/*.yaml``; the search space's entries are checked
    by :func:`src.config.checks.check_config` against the known hyperparameters and spec keys)."""

    name: str = "svc_linear"
    covariates: list[str] = field(default_factory=lambda: ["age", "sex", "tiv", "site"])
    categorical: list[str] = field(default_factory=lambda: ["sex", "site"])
    search_space: dict[str, Any] = field(default_factory=dict, metadata=OPEN)
    fixed: dict[str, Any] = field(default_factory=dict, metadata=OPEN)
    # late fusion of the imaging and clinical blocks (null: one model on all feature columns)
    stack: StackSettings | None = None
    # the inner loop's objective: "auto" = balanced accuracy for a binary outcome, negative MAE for a
    # continuous one (src.validation.regression.OBJECTIVES lists the regression ones)
    objective: str = field(
        default="auto",
        metadata={"choices": ("auto", "balanced_accuracy", "neg_mae", "neg_rmse", "r2", "pearson")},
    )


@dataclass(frozen=True)
class OutcomeSettings:
    """The outcome: the binary response label and the continuous target (``data.outcome``).

    Attributes
    ----------
    baseline, followup : str
        Columns holding the pre-treatment and 24-h MADRS scores.
    threshold : float
        Minimum relative reduction, (baseline - followup) / baseline, that counts as response.
    positive : {"responder", "non-responder"}
        Which group is labelled 1.
    kind : {"binary", "continuous"}
        What the models predict: the response label (classification) or :attr:`target` (regression).
    target : str
        The continuous outcome, kept in every feature table as the column ``outcome``:
        ``percent_reduction`` = 100 (baseline - followup) / baseline (the default; response is
        ``>= 100 * threshold``), ``followup`` (the follow-up score itself), or the name of any numeric
        participants.tsv column (e.g. days to relapse).
    """

    baseline: str = "madrs_baseline"
    followup: str = "madrs_24h"
    threshold: float = field(default=0.5, metadata=_interval(0.0, 1.0, False, True))
    positive: str = field(default="responder", metadata={"choices": ("responder", "non-responder")})
    kind: str = field(default="binary", metadata={"choices": ("binary", "continuous")})
    target: str = "percent_reduction"

    def __post_init__(self) -> None:  # also when built in code, not from a checked config
        if not 0 < self.threshold <= 1:
            raise ValueError(f"outcome threshold must be in (0, 1], got {self.threshold}")
        if self.positive not in ("responder", "non-responder"):
            raise ValueError(
                f"outcome positive must be 'responder' or 'non-responder', got {self.positive!r}"
            )
        if self.kind not in ("binary", "continuous"):
            raise ValueError(f"outcome kind must be 'binary' or 'continuous', got {self.kind!r}")

    @property
    def responder_cut(self) -> float | None:
        """The value of :attr:`target` at and above which a patient responds (None: the target has no
        responder threshold, e.g. a user's own column)."""
        return 100.0 * self.threshold if self.target == "percent_reduction" else None


@dataclass(frozen=True)
class PlausibilitySettings:
    """Bounds of the GM-map plausibility checks (``data.plausibility``; src/data/plausibility.py)."""

    min_value: float = field(default=-0.01, metadata=_interval(-float("inf"), float("inf"), False, False))
    max_value: float = field(default=3.0, metadata=_interval(0.0, float("inf"), False, False))
    total_gm_ml: list[float] = field(default_factory=lambda: [200.0, 1500.0])
    min_inside_brain: float = field(default=0.8, metadata=_interval(0.0, 1.0, True, True))


@dataclass(frozen=True)
class DataSettings:
    """The cohorts and their contract (``conf/data/*.yaml``)."""

    name: str = "unnamed"  # "simulated" (or a simulation section) marks the embedded simulated data
    root: str = "data/cohorts"
    layout: str = "bids"
    pipeline: str | None = None
    space: str = "MNI152NLin2009cSym"
    # the user's list (names or mappings), parsed and checked with one-line errors by src.data.cohorts
    cohorts: Any = field(default=None, metadata=OPEN)
    source: str = field(default="images", metadata={"choices": ("images", "table")})
    table_format: str = "plain"
    outcome: OutcomeSettings = field(default_factory=OutcomeSettings)
    on_grid_mismatch: str = field(default="error", metadata={"choices": ("error", "resample")})
    plausibility: PlausibilitySettings | None = None
    # participants.tsv columns that are clinical predictors, with their kind and allowed values: column ->
    # {kind: numeric|binary|ordinal|categorical, range: [low, high], codes: [...]} (src.data.clinical)
    clinical: dict[str, Any] = field(default_factory=dict, metadata=OPEN)
    simulation: dict[str, Any] | None = field(default=None, metadata=OPEN)


@dataclass(frozen=True)
class FeaturesSettings:
    """A feature set (``conf/features/*.yaml``; :class:`src.features.extract.FeatureSet` is its reader)."""

    name: str = "gm_roi"
    # roi/voxel: from the images; table: the user's regional tables; clinical: the data config's clinical
    # predictors alone (no image is read)
    kind: str = field(default="roi", metadata={"choices": ("roi", "voxel", "table", "clinical")})
    atlas: str = "aal"
    tissues: list[str] = field(default_factory=lambda: ["GM"])
    resolution: float = 4.0
    smoothing_fwhm: float | None = 8.0
    mask_threshold: float = 0.2
    # also the data config's clinical predictors as columns (early fusion: one model on both blocks)
    clinical: bool = False


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole configuration of one command (``conf/config.yaml`` composed with its groups)."""

    name: str = "default"
    seed: int = field(default=2026, metadata=_min(0))
    params_file: str = "params.yaml"
    n_jobs: int = field(default=-1, metadata=_min(-1))  # and not 0 (check_config)
    verbose: bool = False
    input: str | None = None
    parallel: ParallelSettings = field(default_factory=ParallelSettings)
    permutation: PermutationSettings = field(default_factory=PermutationSettings)
    evaluation: EvaluationSettings = field(default_factory=EvaluationSettings)
    patient: PatientSettings = field(default_factory=PatientSettings)
    predict: PredictSettings = field(default_factory=PredictSettings)
    plan: PlanSettings = field(default_factory=PlanSettings)
    tracking: TrackingSettings = field(default_factory=TrackingSettings)
    report: ReportSettings = field(default_factory=ReportSettings)
    compare: CompareSettings = field(default_factory=CompareSettings)
    paths: PathsSettings = field(default_factory=PathsSettings)
    data: DataSettings = field(default_factory=DataSettings)
    features: FeaturesSettings = field(default_factory=FeaturesSettings)
    model: ModelSettings = field(default_factory=ModelSettings)
    cv: CVConfig = field(default_factory=CVConfig)


def register() -> None:
    """Register the schema with Hydra's ConfigStore: ``schema`` (the whole config) and one node per group
    (``schema/cv``, ...), for tools that compose against it (``defaults: [schema, ...]``)."""
    # lazy: only tools that compose against the schema need Hydra's store
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    store.store(name="schema", node=_structured(ExperimentConfig))
    for name, kind in typing.get_type_hints(ExperimentConfig).items():
        if dataclasses.is_dataclass(kind):
            store.store(group="schema", name=name, node=_structured(kind))


def _structured(schema: type) -> Any:
    """The dataclass as an OmegaConf node Hydra can merge into (a frozen dataclass makes read-only nodes)."""
    node = OmegaConf.structured(schema)
    _writable(node)
    return node


def settings_from(config: Any) -> ExperimentConfig:
    """The typed settings of a composed config (a Hydra ``DictConfig`` or a plain mapping, e.g. a run's saved
    ``config.yaml``): keys absent from it take the dataclasses' defaults. A value of the wrong type or a key
    the schema does not know is one :class:`UserInputError` naming the key (OmegaConf's own message is
    several lines)."""
    schema = _structured(ExperimentConfig)  # writable: the merge below fills it
    try:
        if isinstance(config, DictConfig):
            config = OmegaConf.to_container(config, resolve=True)
        return OmegaConf.to_object(OmegaConf.merge(schema, config))
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None) or "?"
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserInputError(f"config key {key}: {first}") from None


def saved_settings(path: Path) -> ExperimentConfig:
    """The settings a training ran with (its ``config.yaml``), typed; one error naming the file if they do
    not fit this version's settings."""
    try:
        return settings_from(yaml.safe_load(path.read_text()))
    except UserInputError as err:
        raise UserInputError(f"{path}: {err} (written by another version: train again)") from None


# what makes a trained model what it is: the sections a document about the model takes from its own record
TRAINED_SECTIONS = ("features", "model", "cv")


def as_trained(config: ExperimentConfig, trained: ExperimentConfig) -> tuple[ExperimentConfig, list[str]]:
    """This command's settings with what defines the model taken from the training's own record.

    A command that reads a trained model (evaluate, predict, plan) describes *that* model: its feature set,
    learner and CV design (:data:`TRAINED_SECTIONS`) and its outcome definition come from ``trained`` (the
    run's saved ``config.yaml``, :func:`saved_settings`), whatever this invocation was given. Returns the
    merged settings and one short phrase per difference in what matters (the sections above, the data
    config's name, the outcome), for the one-line note the entry point prints; empty when they agree."""
    changes = {name: getattr(trained, name) for name in TRAINED_SECTIONS}
    merged = dataclasses.replace(
        config, **changes, data=dataclasses.replace(config.data, outcome=trained.data.outcome)
    )
    differences = []
    for name in TRAINED_SECTIONS:
        ours, theirs = dataclasses.asdict(getattr(config, name)), dataclasses.asdict(getattr(trained, name))
        keys = [k for k in theirs if ours.get(k) != theirs[k]]
        differences += [f"{name}.{k} {_short(theirs[k])} (this command: {_short(ours.get(k))})" for k in keys]
    if config.data.outcome != trained.data.outcome:
        differences.append("data.outcome (the model's definition is used)")
    if config.data.name != trained.data.name:
        differences.append(f"data {trained.data.name!r} (this command: {config.data.name!r})")
    return merged, differences


def _short(value: Any, limit: int = 40) -> str:
    text = str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _writable(node: Any) -> None:
    OmegaConf.set_readonly(node, None)
    if isinstance(node, DictConfig):
        for key in node.keys():
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                _writable(child)
