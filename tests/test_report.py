"""The report's methods text follows the resolved config, and its tables format values for reading."""

from __future__ import annotations

import dataclasses

import pandas as pd
from conftest import compose_config, train_tiny

from src.config.settings import DataSettings, settings_from
from src.reporting.methods import tripod_ai_methods
from src.utils.tables import markdown_table

TRAIN = {"n": 99, "responders": 52, "n_features": 22764, "permutation": None, "provenance": {}}


def test_methods_cover_tripod_ai_items_and_follow_the_config():
    cfg = compose_config(["+experiment=gm_voxel", "cv.repeats=3", "cv.n_trials=12"])
    items = {item: text for item, _, text in tripod_ai_methods(settings_from(cfg), TRAIN, None)}
    assert {"5a", "6a", "8a", "9a", "10", "11", "12a", "12b", "12c", "12d", "12e", "13", "17", "18"} <= set(
        items
    )
    assert "3 repeats × 10 stratified outer folds" in items["12a"]
    assert (
        "12 trials per outer fold" in items["12c"] and "pca_variance uniform in [0.5, 0.99]" in items["12c"]
    )
    assert "PCA" in items["12b"]
    assert "voxel values (22764 features)" in items["9a"] and "FWHM 8.0 mm" in items["9a"]
    assert "no permutation test run" in items["12e"]
    assert "≥ 0.5" in items["8a"] and "Simulated cohorts" in items["5a"]
    rbf = {
        item: text
        for item, _, text in tripod_ai_methods(
            settings_from(compose_config(["+experiment=gm_rbf"])), TRAIN, None
        )
    }
    assert "kernel rbf" in rbf["12c"] and "gamma log-uniform" in rbf["12c"] and "PCA" not in rbf["12b"]
    own = ["data=bids", "data.on_grid_mismatch=resample", "evaluation.harmonize=false"]
    bids = {
        item: text for item, _, text in tripod_ai_methods(settings_from(compose_config(own)), TRAIN, None)
    }
    assert bids["5a"].startswith("BIDS-style cohorts under data/bids (derivatives pipeline 'cat12'")
    assert "resampled with a warning" in bids["7"] and bids["17"] == "To be stated by the authors."
    assert bids["12d"].endswith("reference site level. ") and "ComBat" not in bids["12d"]


def test_markdown_table_formats_counts_p_values_and_missing():
    table = pd.DataFrame(
        {
            "cohort": ["a"],
            "n": [51.0],
            "BAC": [66.4321],
            "AUC": [0.7734],
            "p (BAC)": [0.0004],
            "paper p": [None],
        }
    )
    cells = [c.strip() for c in markdown_table(table).splitlines()[-1].strip("|").split("|")]
    assert cells == ["a", "51", "66.4", "0.77", "<0.001", "–"]


def test_report_of_a_trained_but_not_evaluated_experiment(tmp_path):
    """Training alone is enough for a report: the experiment's training results, a note saying how to
    evaluate it, '–' for the evaluation columns (explained under the table), and the simulated-data banner
    when the data config is the simulation (not for a user's data config)."""
    from test_train import contract_table

    from src.reporting.document import (
        DASH_NOTE,
        SIMULATED_BANNER,
        ExperimentResults,
        render_html,
        render_markdown,
    )

    train_tiny(tmp_path, contract_table(n=36, seed=3))
    run = tmp_path / "out" / "gm_only"
    experiment = ExperimentResults.load("gm_only", run)
    assert experiment.evaluation is None
    markdown = render_markdown([experiment], {}, tmp_path / "report")
    assert "Not evaluated yet: run `python -m src.evaluate +experiment=gm_only`" in markdown
    assert SIMULATED_BANNER in markdown and DASH_NOTE in markdown
    summary_row = [line for line in markdown.splitlines() if line.startswith("| gm_only")][0]
    assert summary_row.count("–") >= 6  # external and control BAC/AUC/p: not evaluated
    html = render_html([experiment], {})
    assert "Not evaluated yet" in html and 'class="banner"' in html
    # a training recorded as not simulated (a user's cohorts, no simulator's mark): no banner, whatever the
    # data config the report is made with
    user = ExperimentResults.load("gm_only", run)
    user.config = dataclasses.replace(user.config, data=DataSettings(name="bids", cohorts=[]))
    assert SIMULATED_BANNER in render_markdown([user], {}, tmp_path / "report2")  # the record says simulated
    user.train["provenance"]["simulated"] = False
    assert SIMULATED_BANNER not in render_markdown([user], {}, tmp_path / "report3")


def test_console_summary_rounds_and_leaves_out_a_spread_of_one_repeat():
    from src.reporting.console import p_text, training_summary

    metrics = {"bac": 0.6764, "sensitivity": 0.7, "specificity": 0.65, "auc": 0.71234, "ppv": 0.7, "npv": 0.6}
    spread = {"mean": 0.6764, "sd": 0.0, "q025": 0.6764, "q975": 0.6764}
    document = {
        "n": 99,
        "responders": 52,
        "cv": {"repeats": 1, "outer_folds": 10, "inner_folds": 5, "n_trials": 30},
        "ensemble": metrics,
        "repeats": {"bac": spread, "auc": spread},
        "permutation": {"p_value": 1 / 1001, "n": 1000, "repeats": 1},
    }
    lines = training_summary("gm_only", document)
    assert not any("±" in line for line in lines)  # one repeat has no spread to show
    assert "BAC 0.676" in lines[1] and "AUC 0.712" in lines[1]
    assert "p = 0.001, the smallest possible with 1000 permutations" in lines[-1]
    assert p_text(0.0345) == "p = 0.0345" and p_text(0.0004) == "p < 0.001" and p_text(None) == "p = –"
    document["cv"]["repeats"] = 3
    assert any("±" in line for line in training_summary("gm_only", document))


def test_region_table_ranks_by_the_weight_test_and_marks_selected_and_planted():
    """With the weights' permutation test: the regions of smallest p first, each marked selected (q < 0.05)
    or not and planted or not (GM rows of the signature only)."""
    import pandas as pd

    from src.reporting.document import top_regions

    regions = pd.DataFrame(
        {
            "feature": ["gm_A", "gm_B", "gm_C", "wm_A"],
            "region": ["A", "B", "C", "A"],
            "tissue": ["GM", "GM", "GM", "WM"],
            "standardised_weight": [0.1, -0.3, 0.2, 0.5],
            "p_perm": [0.001, 0.2, 0.001, 0.01],
            "q_perm": [0.004, 0.2, 0.004, 0.02],
            "selected": [True, False, True, True],
            "direction": ["response", "non-response", "response", "response"],
        }
    )
    table = top_regions(regions, n=3, planted={"A", "B"})
    assert table["region"].tolist() == ["C", "A", "A"]  # equal p: the larger |weight| first
    assert table["selected"].tolist() == ["yes", "yes", "yes"]
    assert table["planted"].tolist() == ["", "yes", ""]  # the WM row of a planted name is not planted


def test_the_report_shows_the_site_aligned_results():
    from src.reporting.document import ExperimentResults, site_aligned_table

    evaluation = {
        "cohorts": {"external": {"n": 51, "bac": 0.586, "auc": 0.60, "p_bac": 0.17}},
        "cohorts_site_aligned": {"external": {"bac": 0.606, "auc": 0.61, "p_bac": 0.11}},
    }
    e = ExperimentResults("x", {}, {}, evaluation, None, None)
    row = site_aligned_table(e).iloc[0]
    assert row["cohort"] == "external" and round(row["aligned BAC"], 1) == 60.6 and row["p (BAC)"] == 0.17
