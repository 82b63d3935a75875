"""The cross-experiment report: paper-style tables beside the published numbers, curves, region tables and
weight maps, treatment specificity, provenance and a TRIPOD+AI methods section — as one self-contained HTML
file (figures inlined) and a markdown file (figures beside it)."""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
import markupsafe
import numpy as np
import pandas as pd

from src.config.settings import ExperimentConfig, saved_settings
from src.data.cohorts import is_simulated, trained_on_simulated
from src.evaluation.artefacts import check_experiment
from src.reporting.fusion import INTRO as FUSION_INTRO
from src.reporting.fusion import FusionSection
from src.reporting.methods import tripod_ai_methods
from src.utils.errors import MissingInputError
from src.utils.io import shown_uri
from src.utils.provenance import training_model_uri
from src.utils.tables import html_table, markdown_table
from src.validation.shards import read_permutation

REGION_COLUMNS = [
    "rank",
    "region",
    "hemisphere",
    "lobe",
    "standardised_weight",
    "cvr_corrected",
    "sign_consistency",
    "direction",
]
# with the weights' permutation test: ranked by its p, every top region shown, selected ones marked
TESTED_COLUMNS = [
    "rank",
    "region",
    "hemisphere",
    "lobe",
    "standardised_weight",
    "p_perm",
    "q_perm",
    "selected",
    "planted",
    "direction",
]
FUSION_TITLE = "Does the scan add anything?"
SIMULATED_BANNER = (
    "Simulated data: these results come from simulated cohorts (the embedded default or the example study, "
    "marked as such by the simulator: a planted, known response signature built from MNI templates), not from "
    "patients. Run the pipeline on your own cohorts for real results."
)
DASH_NOTE = (
    "– : no value. In the paper columns, the paper does not report it; in our columns, the experiment was not "
    "evaluated on that cohort group (or has none), or the test was not run (permutation.n=0)."
)
REGIONS_NOTE = (
    "The regions with the largest standardised weight (per SD of the region's volume); no region is called "
    "selected without the weights' permutation test (evaluation.weight_permutations > 0). Beside each: the "
    "CV-ratio (mean / SE of the weight over the R×K fold models) corrected for the overlap of their training "
    "sets (Nadeau & Bengio 2003), a reliability figure, not a test. Positive: larger volume → response."
)
TESTED_NOTE = (
    "The regions with the smallest permutation p of their weight: the first CV repeat's fold models refitted "
    "with their tuned C on permuted labels (label-permutation test of the weights), two-sided p of the mean "
    "standardised weight, Benjamini-Hochberg across all regions; 'selected' = q < 0.05. The weights are "
    "those of a multivariate model: a region may carry weight because it helps others (e.g. by removing "
    "shared variance), not only because it differs between the groups. Positive: larger volume → response."
)
CONTINUOUS_NOTE = (
    "A regression model of the continuous outcome. R² is computed against the mean outcome of the patients "
    "the model was trained on (the discovery cohort; out of fold: each fold's training mean), not against "
    "the evaluated cohort's own mean: predicting the training mean scores 0, and a negative R² means worse "
    "than that. Calibration: the OLS line of observed on predicted (slope 1, intercept 0 when calibrated; a "
    "slope below 1 means predictions too extreme). CIs: bootstrap of the subjects with the predictions "
    "fixed; p (r), p (MAE): the outcome permuted against the fixed predictions; p (nested CV): the "
    "permutation test of the whole procedure. The paper-style table above holds the BAC & co. of the "
    "thresholded predictions (predicted reduction >= the responder threshold)."
)
FIGURES = {
    "continuous/predicted_vs_observed.png": "Predicted vs observed outcome (identity and calibration lines)",
    "curves.png": "ROC, calibration and decision curves",
    "maps/cvr_map.png": "CV-ratio map of the weights",
}


@dataclass
class Section:
    """A report section read from an experiment's files: a note, tables, a figure and preformatted text."""

    title: str
    note: str = ""
    tables: list[pd.DataFrame] = field(default_factory=list)
    figure: Path | None = None
    # a document shown collapsed (the model card's markdown)
    text: str | None = None
    # paragraphs, ``#### `` headings and tables in order (the plan), shown open
    parts: list[Any] = field(default_factory=list)


SUBGROUP_NOTE = (
    "Performance per subgroup (discovery: the out-of-fold ensemble; external, control: the locked model), "
    "with stratified-bootstrap 95 % intervals; 'too small': fewer subjects than evaluation.subgroups.min_n or one "
    "class only. Heterogeneity: likelihood-ratio test of score × subgroup in a logistic model of response. "
    "Many subgroups are tested: read a single small p as a question for the next cohort, not as a finding."
)


def subgroup_section(eval_dir: Path) -> Section | None:
    """The subgroup tables and forest plot of ``evaluate/subgroups/`` (None when absent)."""
    folder = eval_dir / "subgroups"
    if not (folder / "subgroups.csv").is_file():
        return None
    # lazy: the display helpers live with the evaluation's outputs (matplotlib, nilearn)
    from src.evaluation.outputs import heterogeneity_display, subgroup_display

    cells = pd.read_csv(folder / "subgroups.csv", dtype={"level": str})
    tests = pd.read_csv(folder / "heterogeneity.csv")
    tests["p"] = tests["p"].astype(object).where(tests["p"].notna(), None)
    figure = folder / "forest.png"
    return Section(
        "Subgroups",
        SUBGROUP_NOTE,
        [heterogeneity_display(tests), subgroup_display(cells)],
        figure if figure.is_file() else None,
    )


def plan_section(run_dir: Path) -> Section | None:
    """The learning curve and the sample-size statements of ``plan/`` (``python -m src.plan``)."""
    folder = run_dir / "plan"
    if not (folder / "plan.json").is_file():
        return None
    from src.evaluation.planning import plan_parts  # lazy: matplotlib

    figure = folder / "plan.png"
    return Section(
        "Learning curve and sample size",
        "python -m src.plan: " + str(folder),
        figure=figure if figure.is_file() else None,
        parts=plan_parts(json.loads((folder / "plan.json").read_text())),
    )


def model_card_section(eval_dir: Path) -> Section | None:
    """The model card (``evaluate/model_card.md``) as written, also attached to the registered model."""
    path = eval_dir / "model_card.md"
    if not path.is_file():
        return None
    return Section(
        "Model card", f"{path} (also on the registered model version in MLflow)", text=path.read_text()
    )


@dataclass
class ExperimentResults:
    """Everything the train and evaluate stages wrote for one experiment."""

    name: str
    config: ExperimentConfig
    train: dict[str, Any]
    evaluation: dict[str, Any] | None
    paper_table: pd.DataFrame | None
    regions: pd.DataFrame | None
    figures: dict[str, Path] = field(default_factory=dict)
    tracking: dict[str, Any] = field(default_factory=dict)
    # a regressor's continuous results per cohort group (evaluate/continuous.csv)
    continuous: pd.DataFrame | None = None
    # subgroups, learning curve and sample size, model card: as far as their files exist
    extras: list[Section] = field(default_factory=list)

    @property
    def simulated(self) -> bool:
        """Trained on simulated data: the training's own record (``provenance.simulated`` of its metrics,
        read from the cohorts' mark when it trained), else its data config or cohort folders now."""
        return trained_on_simulated(self.train, self.config.data)

    @classmethod
    def load(cls, name: str, run_dir: Path) -> ExperimentResults:
        """An experiment's training and evaluation documents from ``<run_dir>/train`` and
        ``<run_dir>/evaluate``."""
        train_dir, eval_dir = run_dir / "train", run_dir / "evaluate"
        if not (train_dir / "metrics.json").is_file():
            raise MissingInputError(
                f"experiment {name!r}: {train_dir / 'metrics.json'} not found; run "
                f"`python -m src.train +experiment={name}` (or `dvc repro`) first"
            )
        evaluated = check_experiment(name, run_dir)  # tables as written, the evaluation of this model
        return cls(
            name=name,
            config=saved_settings(train_dir / "config.yaml"),
            # the permutation test: merged shards when they belong to this training, else the training's own
            train={
                **json.loads((train_dir / "metrics.json").read_text()),
                "permutation": read_permutation(run_dir),
            },
            evaluation=json.loads((eval_dir / "metrics.json").read_text()) if evaluated else None,
            paper_table=pd.read_csv(eval_dir / "paper_table.csv") if evaluated else None,
            regions=pd.read_csv(eval_dir / "regions.csv") if (eval_dir / "regions.csv").is_file() else None,
            figures={f: eval_dir / f for f in FIGURES if (eval_dir / f).is_file()},
            tracking={
                "train": _json_or_none(train_dir / "tracking.json"),
                "evaluate": _json_or_none(eval_dir / "tracking.json"),
            },
            continuous=pd.read_csv(eval_dir / "continuous" / "continuous.csv")
            if evaluated and (eval_dir / "continuous" / "continuous.csv").is_file()
            else None,
            extras=[
                section
                for section in (
                    subgroup_section(eval_dir) if evaluated else None,
                    plan_section(run_dir),
                    model_card_section(eval_dir) if evaluated else None,
                )
                if section is not None
            ],
        )

    @property
    def training_run_id(self) -> str | None:
        """The MLflow run id of the training, or None when tracking was off."""
        return (self.tracking.get("train") or {}).get("run_id")


def _json_or_none(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


def summary_table(experiments: Sequence[ExperimentResults]) -> pd.DataFrame:
    """One row per experiment: discovery, external and control BAC/AUC, p-values, treatment specificity."""
    rows = []
    for e in experiments:
        row: dict[str, Any] = {"experiment": e.name, "features": e.config.features.name}
        row["model"] = e.config.model.name
        row["discovery BAC"] = 100 * e.train["ensemble"]["bac"]
        row["discovery AUC"] = e.train["ensemble"]["auc"]
        if any(_continuous(x) for x in experiments):  # R² & r of the regressors (none for a classifier)
            row["discovery R²"] = e.train["ensemble"].get("r2")
            row["discovery r"] = e.train["ensemble"].get("pearson_r")
        row["permutation p"] = (e.train.get("permutation") or {}).get("p_value")
        ev = e.evaluation or {}
        for label in ("external", "control"):  # the role groups of the evaluation
            result = ev.get("cohorts", {}).get(label, {})
            row[f"{label} BAC"] = 100 * result["bac"] if result else None
            row[f"{label} AUC"] = result.get("auc")
            row[f"{label} p (BAC)"] = result.get("p_bac")
        specificity = ev.get("treatment_specificity", {}).get("auc_difference", {})
        row["specificity p"] = specificity.get("p_value")
        rows.append(row)
    return pd.DataFrame(rows)


def _continuous(e: ExperimentResults) -> bool:
    return (e.train.get("outcome") or {}).get("kind") == "continuous"


def _continuous_text(e: ExperimentResults) -> str | None:
    """A regressor's continuous results in words: its outcome, and the predicted x treatment interaction."""
    if not _continuous(e):
        return None
    outcome = e.train["outcome"]
    text = (
        f"Outcome {outcome['target']} (discovery mean {outcome['mean']:.1f}, SD {outcome['sd']:.1f}); inner "
        f"objective {outcome['objective']}."
    )
    interaction = ((e.evaluation or {}).get("continuous") or {}).get("treatment_interaction")
    if interaction:
        text += (
            f" Treatment specificity: predicted × treatment interaction in the linear model of the observed "
            f"outcome {interaction['coefficient']:.2f} per SD of the prediction (95 % CI "
            f"{interaction['ci95'][0]:.2f} to {interaction['ci95'][1]:.2f}), p = {interaction['p_value']:.4f}; "
            f"slope {interaction['slope_ketamine']:.2f} under ketamine, {interaction['slope_control']:.2f} "
            "under the control treatment."
        )
    return text


def provenance(e: ExperimentResults, dvc_hashes: Mapping[str, str | None]) -> list[tuple[str, str]]:
    """The report's provenance rows of one experiment: code, data and model hashes, seeds, MLflow run."""
    p = e.train.get("provenance", {})
    git = p.get("git", {})
    tracking = e.tracking.get("train") or {}
    evaluation = e.tracking.get("evaluate") or {}
    packages = ", ".join(f"{k} {v}" for k, v in p.get("packages", {}).items())
    return [
        ("git commit", f"{git.get('commit')}" + (" (uncommitted changes)" if git.get("dirty") else "")),
        ("seed", str(e.config.seed)),
        ("discovery feature table md5", str(p.get("feature_table_md5"))),
        ("feature folder (DVC md5)", str(dvc_hashes.get(e.config.features.name))),
        ("MLflow tracking URI", shown_uri(tracking.get("tracking_uri"))),
        ("MLflow training run", str(tracking.get("run_id"))),
        ("registered model", str(training_model_uri(tracking))),
        (
            "MLflow evaluation runs",
            ", ".join(f"{k}: {v}" for k, v in (evaluation.get("evaluation_runs") or {}).items()) or "None",
        ),
        ("model loaded from", shown_uri(evaluation.get("model_source"))),
        ("packages", packages),
    ]


ALIGNED_NOTE = (
    "The same locked model after label-free alignment of each unseen site to the training cohort (each "
    "site's feature means and SDs, after the covariate model, from its own scans; outcomes never used)."
)


def site_aligned_table(e: ExperimentResults) -> pd.DataFrame | None:
    """Each evaluated cohort group with and without site alignment (BAC, AUC, permutation p), or None."""
    aligned = (e.evaluation or {}).get("cohorts_site_aligned") or {}
    if not aligned:
        return None
    rows = []
    for group, result in aligned.items():
        plain = e.evaluation["cohorts"].get(group, {})
        rows.append(
            {
                "cohort": group,
                "n": plain.get("n"),
                "BAC": 100 * plain["bac"] if "bac" in plain else None,
                "aligned BAC": 100 * result["bac"],
                "AUC": plain.get("auc"),
                "aligned AUC": result["auc"],
                "p (BAC)": plain.get("p_bac"),
                "aligned p (BAC)": result.get("p_bac"),
            }
        )
    return pd.DataFrame(rows)


def _specificity_text(e: ExperimentResults) -> str:
    spec = (e.evaluation or {}).get("treatment_specificity")
    if not spec:
        return "Not evaluated."
    d, lr = spec["auc_difference"], spec["interaction"]
    return (
        f"AUC external {d['auc_a']:.3f} vs control {d['auc_b']:.3f}: difference {d['difference']:.3f}, "
        f"permutation p = {d['p_value']:.4f}; score × treatment likelihood-ratio test p = {lr['p_value']:.4f}."
    )


def top_regions(
    regions: pd.DataFrame | None, n: int = 15, planted: set[str] | None = None
) -> pd.DataFrame | None:
    """The report's region table. With the weights' permutation test: the ``n`` regions of smallest p, each
    marked selected (q < 0.05) or not, and, for simulated data, planted (in the simulator's signature) or
    not. Otherwise the FDR-selected regions ranked by |standardised weight|, or the first rows as they are
    (permutation importance of non-linear models)."""
    if regions is None:
        return None
    if "standardised_weight" not in regions:
        return regions[list(regions.columns[:8])].head(n)
    if "p_perm" in regions:
        order = np.lexsort((-regions["standardised_weight"].abs().to_numpy(), regions["p_perm"].to_numpy()))
        table = regions.iloc[order].head(n)
        table = table.assign(
            rank=np.arange(1, len(table) + 1), selected=np.where(table["selected"], "yes", "")
        )
        if planted is not None:
            table = table.assign(planted=np.where(is_planted(table, planted), "yes", ""))
        return table[[c for c in TESTED_COLUMNS if c in table.columns]].reset_index(drop=True)
    table = regions
    table = table.reindex(table["standardised_weight"].abs().sort_values(ascending=False).index).head(n)
    table = table.assign(rank=np.arange(1, len(table) + 1))
    return table[[c for c in REGION_COLUMNS if c in table.columns]].reset_index(drop=True)


def is_planted(regions: pd.DataFrame, planted: set[str]) -> pd.Series:
    """Rows of a region table in the simulator's signature (a GM shift: WM rows of the same name are not)."""
    names = regions["region"] if "region" in regions else regions["feature"].str.removeprefix("gm_")
    grey = regions["tissue"].fillna("GM").eq("GM") if "tissue" in regions else True
    return names.isin(planted) & grey


def planted_regions(config: ExperimentConfig) -> set[str] | None:
    """The simulator's planted regions (``ground_truth.json`` of the simulated cohorts), or None."""
    if not is_simulated(config.data):
        return None
    path = Path(config.paths.cohorts) / "ground_truth.json"
    if not path.is_file():
        return None
    signature = json.loads(path.read_text()).get("signature") or {}
    return {str(region["name"]) for region in signature.get("regions", [])}


def _sections(e: ExperimentResults) -> dict[str, Any]:
    planted = planted_regions(e.config)
    regions = top_regions(e.regions, planted=planted)
    selected = None if e.regions is None or "selected" not in e.regions else int(e.regions["selected"].sum())
    tested = e.regions is not None and "p_perm" in e.regions
    note = TESTED_NOTE if tested else REGIONS_NOTE
    if selected is not None:
        note = f"{note} {selected} of {len(e.regions)} regions selected."
        if tested and planted is not None:
            hits = int((e.regions["selected"] & is_planted(e.regions, planted)).sum())
            note += f" Simulated data: {hits} of the selected are among the {len(planted)} planted regions."
    return {
        "simulated": e.simulated,
        "not_evaluated": (
            None
            if e.evaluation is not None
            else f"Not evaluated yet: run `python -m src.evaluate +experiment={e.name}` (or `dvc repro`)."
        ),
        "regions_note": None if selected is None else note,
        "name": e.name,
        "summary": (
            f"features {e.config.features.name}, model {e.config.model.name}, "
            f"{e.config.cv.repeats} × {e.config.cv.outer_folds} outer × "
            f"{e.config.cv.inner_folds} inner folds, {e.config.cv.n_trials} Optuna trials, "
            f"seed {e.config.seed}"
        ),
        "paper_table": e.paper_table,
        "aligned": site_aligned_table(e),
        "regions": regions,
        "specificity": _specificity_text(e),
        "methods": tripod_ai_methods(e.config, e.train, e.evaluation),
        "continuous": e.continuous,
        "continuous_text": _continuous_text(e),
    }


def render_markdown(
    experiments: Sequence[ExperimentResults],
    dvc_hashes: Mapping[str, str | None],
    out: Path,
    fusion: FusionSection | None = None,
) -> str:
    """The report as markdown; figures are copied to ``out/figures/``."""
    (out / "figures").mkdir(parents=True, exist_ok=True)
    lines = ["# Ketamine response from structural MRI — report", ""]
    if any(e.simulated for e in experiments):
        lines += [f"> **{SIMULATED_BANNER}**", ""]
    lines += ["## Summary", "", markdown_table(summary_table(experiments)), "", DASH_NOTE, ""]
    if fusion is not None:
        lines += [f"## {FUSION_TITLE}", "", FUSION_INTRO, "", markdown_table(fusion.table), ""]
        if fusion.figure is not None:
            shutil.copyfile(fusion.figure, out / "figures" / "comparison.png")
            lines += ["![comparison](figures/comparison.png)", ""]
        lines += [*(f"{note}\n" for note in fusion.notes)]
    for e in experiments:
        s = _sections(e)
        lines += [f"## Experiment `{e.name}`", "", s["summary"], ""]
        if s["not_evaluated"]:
            lines += [f"**{s['not_evaluated']}**", ""]
        if s["paper_table"] is not None:
            lines += [
                "### Paper-style table (published numbers beside ours)",
                "",
                markdown_table(s["paper_table"]),
                "",
            ]
        if s["continuous_text"] is not None:
            lines += ["### Continuous outcome", "", s["continuous_text"], ""]
            if s["continuous"] is not None:
                lines += [CONTINUOUS_NOTE, "", markdown_table(s["continuous"]), ""]
        if s["aligned"] is not None:
            lines += ["### After site alignment", "", ALIGNED_NOTE, "", markdown_table(s["aligned"]), ""]
        lines += ["### Treatment specificity", "", s["specificity"], ""]
        for filename, title in FIGURES.items():
            if filename in e.figures:
                target = out / "figures" / f"{e.name}_{Path(filename).name}"
                shutil.copyfile(e.figures[filename], target)
                lines += [f"### {title}", "", f"![{title}](figures/{target.name})", ""]
        for section in e.extras:
            lines += [f"### {section.title}", ""]
            lines += [section.note, ""] if section.note else []
            lines += [line for table in section.tables for line in (markdown_table(table), "")]
            for part in section.parts:
                lines += [markdown_table(part) if isinstance(part, pd.DataFrame) else part, ""]
            if section.figure is not None:
                target = out / "figures" / f"{e.name}_{section.figure.parent.name}_{section.figure.name}"
                shutil.copyfile(section.figure, target)
                lines += [f"![{section.title}](figures/{target.name})", ""]
            if section.text:
                lines += [
                    "<details><summary>" + section.title + "</summary>",
                    "",
                    section.text,
                    "</details>",
                    "",
                ]
        if s["regions"] is not None:
            lines += ["### Top regions", ""]
            lines += [s["regions_note"], ""] if s["regions_note"] else []
            lines += [markdown_table(s["regions"]), ""]
        lines += ["### Provenance", ""]
        lines += [f"- **{k}**: {v}" for k, v in provenance(e, dvc_hashes)]
        lines += ["", "### Methods (TRIPOD+AI)", ""]
        lines += [f"- **{item} {heading}.** {text}" for item, heading, text in s["methods"]]
        lines.append("")
    return "\n".join(lines)


_TEMPLATE = jinja2.Template(
    """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>Ketamine response from structural MRI — report</title>
<style>
body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}
table.table{border-collapse:collapse;font-size:0.85em;margin:0.5em 0 1.5em}
table.table th,table.table td{border-bottom:1px solid #ddd;padding:3px 8px;text-align:right}
table.table th{background:#f3f3f3}
img{max-width:100%} h2{border-bottom:2px solid #444;padding-bottom:4px;margin-top:2em}
dl.methods dt{font-weight:600;margin-top:0.6em} code{background:#f3f3f3;padding:0 3px}
nav a{margin-right:1em} p.note{font-size:0.85em;color:#555}
.banner{background:#fff3cd;border:2px solid #e0a800;padding:0.8em 1em;font-weight:600;margin:1em 0}
</style></head><body>
<h1>Ketamine response from structural MRI — report</h1>
{% if simulated %}<div class="banner" role="note">{{ simulated }}</div>{% endif %}
<nav>{% for e in experiments %}<a href="#{{ e.name }}">{{ e.name }}</a>{% endfor %}</nav>
<h2>Summary</h2>
{{ summary }}<p class="note">{{ dash_note }}</p>
{% if fusion %}<h2 id="fusion">{{ fusion_title }}</h2><p class="note">{{ fusion_intro }}</p>{{ fusion.table }}
{% if fusion.figure %}<img alt="comparison" src="data:image/png;base64,{{ fusion.figure }}">{% endif %}
{% for note in fusion.notes %}<p>{{ note }}</p>{% endfor %}{% endif %}
{% for e in experiments %}
<h2 id="{{ e.name }}">Experiment <code>{{ e.name }}</code></h2>
<p>{{ e.summary }}</p>
{% if e.not_evaluated %}<p class="banner">{{ e.not_evaluated }}</p>{% endif %}
{% if e.paper_table %}<h3>Paper-style table (published numbers beside ours)</h3>{{ e.paper_table }}{% endif %}
{% if e.continuous_text %}<h3>Continuous outcome</h3><p>{{ e.continuous_text }}</p>{% if e.continuous %}<p class="note">{{ continuous_note }}</p>{{ e.continuous }}{% endif %}{% endif %}
{% if e.aligned %}<h3>After site alignment</h3><p class="note">{{ aligned_note }}</p>{{ e.aligned }}{% endif %}
<h3>Treatment specificity</h3><p>{{ e.specificity }}</p>
{% for title, data in e.figures %}<h3>{{ title }}</h3><img alt="{{ title }}" src="data:image/png;base64,{{ data }}">{% endfor %}
{% for x in e.extras %}<h3>{{ x.title }}</h3>{% if x.note %}<p class="note">{{ x.note }}</p>{% endif %}{% for t in x.tables %}{{ t }}{% endfor %}
{% for kind, part in x.parts %}{% if kind == "table" %}{{ part }}{% elif kind == "heading" %}<h4>{{ part }}</h4>{% else %}<p>{{ part }}</p>{% endif %}{% endfor %}
{% if x.figure %}<img alt="{{ x.title }}" src="data:image/png;base64,{{ x.figure }}">{% endif %}
{% if x.text %}<details><summary>{{ x.title }}</summary><pre style="white-space:pre-wrap">{{ x.text }}</pre></details>{% endif %}{% endfor %}
{% if e.regions %}<h3>Top regions</h3>{% if e.regions_note %}<p class="note">{{ e.regions_note }}</p>{% endif %}{{ e.regions }}{% endif %}
<h3>Provenance</h3><table class="table">{% for k, v in e.provenance %}<tr><th>{{ k }}</th><td style="text-align:left">{{ v }}</td></tr>{% endfor %}</table>
<h3>Methods (TRIPOD+AI)</h3><dl class="methods">{% for item, heading, text in e.methods %}<dt>{{ item }} {{ heading }}</dt><dd>{{ text }}</dd>{% endfor %}</dl>
{% endfor %}
</body></html>
""",
    autoescape=True,
)


def render_html(
    experiments: Sequence[ExperimentResults],
    dvc_hashes: Mapping[str, str | None],
    fusion: FusionSection | None = None,
) -> str:
    """The report as one self-contained HTML file (figures inlined as base64 PNG, no external resources)."""
    blocks = []
    for e in experiments:
        s = _sections(e)
        blocks.append(
            {
                "name": e.name,
                "summary": s["summary"],
                "paper_table": None if s["paper_table"] is None else _markup(html_table(s["paper_table"])),
                "regions": None if s["regions"] is None else _markup(html_table(s["regions"])),
                "aligned": None if s["aligned"] is None else _markup(html_table(s["aligned"])),
                "continuous": None if s["continuous"] is None else _markup(html_table(s["continuous"])),
                "continuous_text": s["continuous_text"],
                "regions_note": s["regions_note"],
                "not_evaluated": s["not_evaluated"],
                "specificity": s["specificity"],
                "figures": [
                    (title, base64.b64encode(e.figures[f].read_bytes()).decode())
                    for f, title in FIGURES.items()
                    if f in e.figures
                ],
                "provenance": provenance(e, dvc_hashes),
                "methods": s["methods"],
                "extras": [
                    {
                        "title": x.title,
                        "note": x.note,
                        "tables": [_markup(html_table(t)) for t in x.tables],
                        "figure": None
                        if x.figure is None
                        else base64.b64encode(x.figure.read_bytes()).decode(),
                        "text": x.text,
                        "parts": [_html_part(part) for part in x.parts],
                    }
                    for x in e.extras
                ],
            }
        )
    simulated = SIMULATED_BANNER if any(e.simulated for e in experiments) else None
    return _TEMPLATE.render(
        summary=_markup(html_table(summary_table(experiments))),
        experiments=blocks,
        simulated=simulated,
        dash_note=DASH_NOTE,
        aligned_note=ALIGNED_NOTE,
        continuous_note=CONTINUOUS_NOTE,
        fusion_title=FUSION_TITLE,
        fusion_intro=FUSION_INTRO,
        fusion=None
        if fusion is None
        else {
            "table": _markup(html_table(fusion.table)),
            "figure": base64.b64encode(fusion.figure.read_bytes()).decode() if fusion.figure else None,
            "notes": fusion.notes,
        },
    )


def _html_part(part: Any) -> tuple[str, Any]:
    """A plan part for the HTML template: ("table", markup), ("heading", text) or ("text", text without
    the markdown bold marks)."""
    if isinstance(part, pd.DataFrame):
        return "table", _markup(html_table(part))
    if part.startswith("#### "):
        return "heading", part.removeprefix("#### ")
    return "text", part.replace("**", "")


def _markup(fragment: str) -> markupsafe.Markup:
    """HTML produced by pandas (cell text already escaped) passed through Jinja's autoescaping unchanged."""
    return markupsafe.Markup(fragment)
