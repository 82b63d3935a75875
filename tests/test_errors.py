"""Bad input through the real entry points: one clear line naming the culprit, exit status 2, no traceback,
nothing written."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, make_cohort, rewrite_participants, subprocess_env


def _cohorts(root: Path) -> None:
    make_cohort(root / "a", tissues=("GM",))
    make_cohort(root / "b", tissues=("GM",))
    for name in ("a", "b"):
        rewrite_participants(root / name, lambda df: df.assign(tiv="1500"))


def _unknown_table_format(root: Path) -> list[str]:
    (root / "a" / "roi.tsv").write_text("participant_id\tx\n")
    return [
        "data.source=table",
        "data.cohorts=[{name:a,role:discovery,table:roi.tsv,table_format:spm12}]",
    ]


def _path_escapes(root: Path) -> list[str]:
    rewrite_participants(root / "b", lambda df: df.assign(gm_file="../a/derivatives/cat12/x.nii.gz"))
    return []


def _absolute_path(root: Path) -> list[str]:
    rewrite_participants(root / "b", lambda df: df.assign(gm_file=str(root / "a" / "x.nii")))
    return []


def _shared_image(root: Path) -> list[str]:
    image = "derivatives/cat12/sub-t00/anat/sub-t00_space-MNI152NLin2009cSym_label-GM_probseg.nii.gz"
    rewrite_participants(root / "b", lambda df: df.assign(gm_file=image))
    return []


def _treatment_mismatch(root: Path) -> list[str]:
    rewrite_participants(
        root / "b", lambda df: df.assign(treatment=["ketamine", "saline", "saline", "saline"])
    )
    return ["data.cohorts=[{name:a,role:discovery},{name:b,role:control,treatment:saline}]"]


def _missing_table(root: Path) -> list[str]:
    return ["data.source=table", "data.cohorts=[{name:a,role:discovery,table:nope.tsv}]"]


CASES = {
    # case: (set-up returning extra overrides, what the message must say)
    "no discovery cohort": (
        lambda r: ["data.cohorts=[{name:a,role:external}]"],
        "exactly one cohort with role",
    ),
    "unknown role": (lambda r: ["data.cohorts=[{name:a,role:train}]"], "cohort 'a': role 'train'"),
    "missing participants.tsv": (
        lambda r: ["data.cohorts=[{name:zz,role:discovery}]"],
        "zz/participants.tsv not found",
    ),
    "unknown table format": (_unknown_table_format, "unknown table format 'spm12'"),
    "missing table": (_missing_table, "regional table"),
    "path escapes the cohort": (_path_escapes, "subject sub-t00: column 'gm_file': path '../a/"),
    "absolute image path": (_absolute_path, "subject sub-t00: column 'gm_file': absolute path"),
    "one image for two subjects": (_shared_image, "subjects sub-t00 and sub-t01 use the same GM image"),
    "treatment differs from declared": (_treatment_mismatch, "subject sub-t00 has treatment 'ketamine'"),
    # the fixtures' 6x7x5 random maps pass every structural check but hold a few ml of "GM"
    "implausible GM map": (lambda r: [], "subject sub-t00: GM image"),
}


def refused(module: str, overrides: list[str], expected: str) -> str:
    """Run an entry point that must refuse its input: exit 2, the last line `error: ...` holding
    ``expected``, no traceback. Returns that line."""
    done = subprocess.run(
        [sys.executable, "-m", module, *overrides],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("error: ") and expected in lines[-1], done.stderr
    assert "Traceback" not in done.stderr and "HYDRA_FULL_ERROR" not in done.stderr
    return lines[-1]


@pytest.mark.parametrize("case", sorted(CASES))
def test_prepare_refuses_bad_input_with_one_line(tmp_path, case):
    root = tmp_path / "cohorts"
    _cohorts(root)
    setup, expected = CASES[case]
    extra = setup(root)
    default = ["data.cohorts=[{name:a,role:discovery},{name:b,role:external}]"]
    overrides = [
        "data=bids",
        f"data.root={root}",
        "data.pipeline=cat12",
        f"paths.data={tmp_path / 'derived'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        f"params_file={tmp_path / 'none.yaml'}",
        *(extra if any(o.startswith("data.cohorts=") for o in extra) else [*default, *extra]),
    ]
    message = refused("src.data.prepare", overrides, expected)
    if case == "implausible GM map":
        assert "ml of GM, outside the plausible 200-1500 ml" in message
    assert not (tmp_path / "derived").exists()  # nothing written


def test_full_trace_on_request(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "src.train",
            "+experiment=gm_only",
            f"paths.features={tmp_path}",
            "verbose=true",
        ],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
    )
    assert (
        done.returncode != 0
        and "MissingInputError" in done.stderr
        and "discovery.parquet not found" in done.stderr
    )


TRAIN_CASES = {
    "repeats not a number": (["cv.repeats=abc"], "config key cv.repeats='abc': an integer is needed"),
    "no workers": (["n_jobs=0"], "config key n_jobs=0: must be -1 (all cores) or a positive number"),
    "negative seed": (["seed=-3"], "config key seed=-3: must be >= 0"),
    "too many inner folds": (["cv.inner_folds=60"], "fewer than cv.inner_folds=60"),
    "too many outer folds": (["cv.outer_folds=30"], "fewer than the 30 folds"),
    "corrupt store": (["tracking.enabled=true"], "tracking store sqlite:///"),
    "read-only output": (["tracking.enabled=false"], "is not writable"),
}


@pytest.mark.parametrize("case", sorted(TRAIN_CASES))
def test_train_refuses_before_any_work(tmp_path, case):
    from test_train import contract_table

    features = tmp_path / "features" / "gm_roi"
    features.mkdir(parents=True)
    contract_table(n=40, seed=1).to_parquet(features / "discovery.parquet", index=False)
    extra, expected = TRAIN_CASES[case]
    output = tmp_path / "out"
    if case == "corrupt store":
        (tmp_path / "mlruns").mkdir()
        (tmp_path / "mlruns" / "mlflow.db").write_bytes(b"this is not a database" * 100)
    if case == "read-only output":  # a file where the output folder should go (permissions do not stop root)
        (tmp_path / "taken").write_text("")
        output = tmp_path / "taken" / "out"
    overrides = [
        "+experiment=gm_only",
        f"paths.features={tmp_path / 'features'}",
        f"paths.output={output}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        f"tracking.root={tmp_path / 'mlruns'}",
        "permutation.n=0",
        "tracking.enabled=false",
        *extra,
    ]
    refused("src.train", overrides, expected)
    assert not (output / "gm_only").exists()  # nothing written
