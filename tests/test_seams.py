"""Where two features meet: a document about a trained model describes that model, whatever the command
that writes it was given (issue 37)."""

from __future__ import annotations

import pytest
from conftest import ROOT
from test_errors import trained  # noqa: F401  (the module-scoped fixture: 1 x 3 outer x 3 inner folds)
from test_regression import _entry  # an entry point as a subprocess, asserting it succeeded

from src.config.settings import ExperimentConfig, as_trained, settings_from


@pytest.mark.slow
def test_the_model_card_describes_the_trained_design_not_the_evaluating_command(trained, tmp_path):  # noqa: F811
    # trained with cv.repeats=1 outer_folds=3 inner_folds=3 n_trials=3; evaluated without those overrides
    # (the composed default is 10 x 10 outer x 5 inner, 30 trials)
    overrides = [
        "+experiment=gm_only",
        f"paths.features={trained / 'features'}",
        f"paths.output={trained / 'out'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        "evaluation.n_permutations=20",
        "evaluation.n_bootstrap=20",
        "evaluation.weight_permutations=0",
        "tracking.enabled=false",
        "n_jobs=1",
    ]
    done = _entry(ROOT, "src.evaluate", *overrides)
    card = (trained / "out" / "gm_only" / "evaluate" / "model_card.md").read_text()
    assert "1 × 3 outer × 3 inner folds, 3 Optuna trials per outer fold" in card
    assert "the ensemble of the 3 fold models" in card
    assert "10 × 10" not in card and "100 fold models" not in card
    # the difference is said in one line, naming what differs
    notes = [line for line in done.stderr.splitlines() if line.startswith("note: the model in")]
    assert len(notes) == 1, done.stderr
    assert "cv.repeats 1 (this command: 10)" in notes[0] and "cv.outer_folds 3" in notes[0]
    # the report (its Methods and the card it shows), made by yet another invocation, agrees
    _entry(
        ROOT,
        "src.report",
        "report.experiments=[gm_only]",
        f"paths.output={trained / 'out'}",
        f"report.dir={tmp_path / 'report'}",
        f"compare.dir={tmp_path / 'comparisons'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        "tracking.enabled=false",
    )
    markdown = (tmp_path / "report" / "report.md").read_text()
    assert (
        "1 repeats × 3 stratified outer folds" in markdown and "the ensemble of the 3 fold models" in markdown
    )
    assert "10 repeats" not in markdown and "100 fold models" not in markdown


def test_as_trained_takes_what_defines_the_model_from_its_record():
    record = settings_from({"cv": {"repeats": 1, "outer_folds": 3}, "model": {"name": "svc_rbf"}})
    command = ExperimentConfig()
    merged, differences = as_trained(command, record)
    assert (merged.cv.repeats, merged.cv.outer_folds, merged.model.name) == (1, 3, "svc_rbf")
    assert merged.evaluation == command.evaluation  # what the command itself does stays the command's
    assert any(d.startswith("cv.repeats 1") for d in differences)
    assert "model.name svc_rbf (this command: svc_linear)" in differences
    assert as_trained(record, record)[1] == []


@pytest.mark.parametrize(
    ("overrides", "output", "features", "report"),
    [
        ([], "outputs", "data/features", "reports"),  # the pipeline's own data: its folders
        (["data=bids"], "outputs/bids", "data/features/bids", "reports/bids"),  # other data: apart
        (["data=bids", "paths.output=mine"], "mine", "data/features/bids", "reports/bids"),  # given: as given
    ],
)
def test_runs_on_other_data_than_the_pipelines_live_apart(overrides, output, features, report):
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from src.config.cli import namespace_by_data

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=["+experiment=gm_only", *overrides])
    cfg.params_file = str(ROOT / "params.yaml")  # data: simulated
    namespace_by_data(cfg)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    assert resolved["paths"]["output"] == output and resolved["paths"]["run"] == f"{output}/gm_only"
    assert resolved["paths"]["features"] == features and resolved["report"]["dir"] == report
    assert resolved["predict"]["dir"] == f"{output}/gm_only/predict"  # what interpolates them follows


def test_an_error_line_shows_a_huge_cell_cut_with_its_length(tmp_path):
    """A million-digit cell in participants.tsv: the one error line stays readable (it was printed whole,
    1 MB), naming subject and column and the value's length; paths and words are untouched."""
    from conftest import make_cohort, rewrite_participants

    from src.data.loader import CohortError, load_cohort
    from src.utils.errors import readable

    root = make_cohort(tmp_path / "c")
    rewrite_participants(root, lambda df: df.assign(age=["3" + "1" * 1_000_000, "30", "31", "32"]))
    with pytest.raises(CohortError) as err:
        load_cohort(root)
    line = readable(str(err.value))
    assert len(line) < 500 and "(1000003 characters)" in line  # the cell with its quotes
    assert "subject sub-t00" in line and "column 'age'" in line
    path = str(tmp_path / ("long_folder_name_" * 4) / "participants.tsv")
    assert readable(f"error in {path}") == f"error in {path}"
