"""Bad input through the real entry points: one clear line naming the culprit, exit status 2, no traceback,
nothing written."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from conftest import ROOT, image_relpath, make_cohort, rewrite_participants, subprocess_env

from src.utils.io import file_md5


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


def _drop_column(root: Path) -> list[str]:
    rewrite_participants(root / "b", lambda df: df.drop(columns="age"))
    return []


def _edit_value(column: str, value: str):
    def setup(root: Path) -> list[str]:
        rewrite_participants(root / "b", lambda df: df.assign(**{column: [value, *df[column].iloc[1:]]}))
        return []

    return setup


def _trailing_tab(root: Path) -> list[str]:
    path = root / "b" / "participants.tsv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], *(line + "\t" for line in lines[1:])]) + "\n")
    return []


def _missing_image(root: Path) -> list[str]:
    (root / "b" / image_relpath("sub-t02", "GM", "cat12")).unlink()
    return []


def _rewrite_images(root: Path, edit) -> None:
    for path in sorted((root / "b").rglob("*label-GM_probseg.nii.gz")):
        image = nib.load(path)
        data, affine = edit(np.asarray(image.dataobj, dtype=np.float32), image.affine.copy())
        nib.save(nib.Nifti1Image(data, affine), path)


# the fixtures' 6x7x5 random maps hold a few ml of "GM": the volume bound is lowered where another check is
# under test (otherwise the first subject of cohort a fails it first)
ANY_VOLUME = "data.plausibility.total_gm_ml=[0,1500]"


def _nan_image(root: Path) -> list[str]:
    _rewrite_images(root, lambda d, a: (np.where(np.arange(d.size).reshape(d.shape) == 7, np.nan, d), a))
    return [ANY_VOLUME]


def _scaled_images(root: Path) -> list[str]:
    _rewrite_images(root, lambda d, a: (d * 1000, a))
    return [ANY_VOLUME]


def _shifted_cohort(root: Path) -> list[str]:  # every image of cohort b 120 mm off in its header
    def shift(data: np.ndarray, affine: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        affine[:3, 3] += [120.0, 0, 0]
        return data, affine

    _rewrite_images(root, shift)
    return [ANY_VOLUME]


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
    "trailing tab on data rows": (_trailing_tab, "tab-separated fields, its header"),
    "unknown table format": (_unknown_table_format, "unknown table format 'spm12'"),
    "missing table": (_missing_table, "regional table"),
    "path escapes the cohort": (_path_escapes, "subject sub-t00: column 'gm_file': path '../a/"),
    "absolute image path": (_absolute_path, "subject sub-t00: column 'gm_file': absolute path"),
    "one image for two subjects": (_shared_image, "subjects sub-t00 and sub-t01 use the same GM image"),
    "treatment differs from declared": (_treatment_mismatch, "subject sub-t00 has treatment 'ketamine'"),
    "participants.tsv lacks a column": (_drop_column, "missing required column(s) ['age']"),
    "unknown sex code": (_edit_value("sex", "X"), "subject sub-t00 has unknown sex code 'X'"),
    "MADRS out of range": (_edit_value("madrs_baseline", "75"), "subject sub-t00 has MADRS 75.0"),
    "duplicate subject": (_edit_value("participant_id", "sub-t01"), "duplicate participant_id ['sub-t01']"),
    "image file missing": (_missing_image, "subject sub-t02 is in participants.tsv but has no GM image"),
    "NaN in a GM map": (_nan_image, "cohort 'b': subject sub-t00: GM image"),
    "GM map scaled x1000": (_scaled_images, "is it scaled (x100, x1000)"),
    "cohort outside MNI space": (_shifted_cohort, "so the cohort's grid is not in MNI space"),
    # the fixtures' 6x7x5 random maps pass every structural check but hold a few ml of "GM"
    "implausible GM map": (lambda r: [], "subject sub-t00: GM image"),
}


def half_fast(cases: dict) -> list:
    """The cases in name order, every second one marked slow: the fast subset (``-m "not slow"``) checks half
    of the bad inputs of each entry point (about 1 s each, most of it Hydra composing the config twice), the
    full suite all of them."""
    return [pytest.param(c, marks=pytest.mark.slow) if i % 2 else c for i, c in enumerate(sorted(cases))]


def refused(module: str, overrides: list[str], expected: str) -> str:
    """Run an entry point, in this process as ``python -m <module>`` runs it (Hydra, argument parsing, the
    error handler), on input it must refuse: exit status 2, the last line of stderr ``error: ...`` holding
    ``expected``, no traceback. Returns that line."""
    import contextlib
    import io
    import runpy
    import signal

    stderr = io.StringIO()
    argv, cwd, handler = sys.argv, Path.cwd(), signal.getsignal(signal.SIGTERM)
    sys.argv = [module, *overrides, "hydra/job_logging=none", "hydra/hydra_logging=none"]
    os.chdir(ROOT)
    try:
        with contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as stop:
            runpy.run_module(module, run_name="__main__", alter_sys=True)
    finally:
        sys.argv = argv
        os.chdir(cwd)
        signal.signal(signal.SIGTERM, handler)  # the entry point turns SIGTERM into Ctrl-C
    text = stderr.getvalue()
    assert stop.value.code == 2, text
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines and lines[-1].startswith("error: ") and expected in lines[-1], text
    assert "Traceback" not in text and "HYDRA_FULL_ERROR" not in text
    return lines[-1]


def tree_state(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` with its content hash: to show that a refused run changed nothing (the
    store's empty lock file aside)."""
    return {
        str(path.relative_to(folder)): file_md5(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.name != ".lock"
    }


@pytest.mark.parametrize("case", half_fast(CASES))
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


@pytest.mark.slow
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


def _no_tiv(table: pd.DataFrame) -> pd.DataFrame:
    return table.drop(columns="tiv")


def _one_class(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(response=1)


def _hole(table: pd.DataFrame) -> pd.DataFrame:
    table.loc[5, "gm_r3"] = np.nan
    return table


def _constant_clinical(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(clin_bmi=np.where(np.arange(len(table)) % 3, 24.0, np.nan))


def _empty_clinical(table: pd.DataFrame) -> pd.DataFrame:
    return table.assign(clin_bmi=np.nan)


def _bad_label(table: pd.DataFrame) -> pd.DataFrame:
    table.loc[2, "response"] = 2
    return table


TRAIN_CASES = {
    # case: (overrides, what the message must say, edit of the discovery feature table)
    "repeats not a number": (["cv.repeats=abc"], "config key cv.repeats='abc': an integer is needed", None),
    "no workers": (["n_jobs=0"], "config key n_jobs=0: must be -1 (all cores) or a positive number", None),
    "negative seed": (["seed=-3"], "config key seed=-3: must be >= 0", None),
    "negative permutations": (["permutation.n=-5"], "config key permutation.n=-5: must be >= 0", None),
    "zero trials": (["cv.n_trials=0"], "config key cv.n_trials=0: must be >= 1", None),
    "typo in a cv key": (["+cv.n_trails=5"], "config key cv.n_trails is not a setting", None),
    "typo in a search space": (
        ["+model.search_space.C.hgh=3"],
        "config key model.search_space.C.hgh is not a setting this project reads (did you mean "
        "model.search_space.C.high?)",
        None,
    ),
    "typo in a fixed parameter": (["+model.fixed.kernal=rbf"], "did you mean model.fixed.kernel?", None),
    # any unknown name used to train an RBF SVC without a word
    "unknown learner": (
        ["+model.fixed.estimator=logreg_enet"],
        "config key model.fixed.estimator='logreg_enet' is not a known learner (known: svc, svr, "
        "kernel_ridge)",
        None,
    ),
    "learner typo": (["+model.fixed.estimator=kernel_rige"], "(did you mean 'kernel_ridge'?", None),
    # Hydra's lexer stops at a non-ASCII letter: one line with the quoting that works, checked to parse
    "unquoted non-ASCII value": (
        ["evaluation.subgroups.columns=[Zürich]"],
        "quote the value for Hydra, as evaluation.subgroups.columns='[\"Zürich\"]' in the shell",
        None,
    ),
    "empty search range": (["model.search_space.C.low=100"], "search space 'C': need low <= high", None),
    "unknown sampler": (["cv.sampler=bayes"], "cv.sampler must be tpe, random or grid", None),
    "too many inner folds": (["cv.inner_folds=60"], "fewer than cv.inner_folds=60", None),
    "too many outer folds": (["cv.outer_folds=30"], "fewer than the 30 folds", None),
    "corrupt store": (["tracking.enabled=true"], "tracking store sqlite:///", None),
    "read-only output": (["tracking.enabled=false"], "is not writable", None),
    "feature table missing": (["features=gm_wm_roi"], "gm_wm_roi/discovery.parquet not found", None),
    "covariate column missing": ([], "column(s) ['tiv'] missing", _no_tiv),
    "one class only": ([], "only one class present", _one_class),
    "missing feature value": ([], "1 missing value(s), e.g. subject sub-x005, column 'gm_r3'", _hole),
    # a clinical predictor without information: refused (it would be imputed, scaled and weighted)
    "constant clinical predictor": (
        [],
        "clinical predictor 'bmi' is 24 for every subject",
        _constant_clinical,
    ),
    "all-missing clinical predictor": ([], "clinical predictor 'bmi' is missing for every", _empty_clinical),
    "typo in a data key": (
        ["+data.on_grid_missmatch=resample"],
        "config key data.on_grid_missmatch is not a setting this project reads (did you mean "
        "data.on_grid_mismatch?)",
        None,
    ),
    "typo in a data section": (["+data.plausibilty.max_value=0.5"], "did you mean data.plausibility?", None),
    "typo in the outcome": (["+data.outcome.threshhold=0.4"], "did you mean data.outcome.threshold?", None),
    "outcome threshold not a number": (
        ["data.outcome.threshold=half"],
        "config key data.outcome.threshold='half': a number is needed",
        None,
    ),
    "outcome threshold out of range": (
        ["data.outcome.threshold=1.5"],
        "config key data.outcome.threshold=1.5: must be in (0, 1]",
        None,
    ),
    "predict threshold not a number": (
        ["predict.threshold=high"],
        "config key predict.threshold='high': a number is needed",
        None,
    ),
    "unknown grid policy": (
        ["data.on_grid_mismatch=resmaple"],
        "config key data.on_grid_mismatch='resmaple' is not a known value (did you mean 'resample'?)",
        None,
    ),
    "unknown experiment": (["+experiment=gm_onyl"], "did you mean +experiment=gm_only?", None),
    "unknown feature set": (["features=gm_roii"], "no config conf/features/gm_roii.yaml (did you mean", None),
    "typo without a plus": (["cv.n_trails=5"], "config key cv.n_trails is not a setting", None),
    "typo at the top level": (
        ["seeed=3"],
        "config key seeed is not a setting this project reads (did you mean seed?)",
        None,
    ),
    "response not 0/1": ([], "response must be 0 or 1; subject(s) ['sub-x002'] have [2]", _bad_label),
}


@pytest.mark.parametrize("case", half_fast(TRAIN_CASES))
def test_train_refuses_before_any_work(tmp_path, case):
    from test_train import contract_table

    features = tmp_path / "features" / "gm_roi"
    features.mkdir(parents=True)
    extra, expected, edit = TRAIN_CASES[case]
    table = contract_table(n=40, seed=1)
    (edit(table) if edit else table).to_parquet(features / "discovery.parquet", index=False)
    output = tmp_path / "out"
    (tmp_path / "mlruns").mkdir()
    if case == "corrupt store":
        (tmp_path / "mlruns" / "mlflow.db").write_bytes(b"this is not a database" * 100)
    if case == "read-only output":  # a file where the output folder should go (permissions do not stop root)
        (tmp_path / "taken").write_text("")
        output = tmp_path / "taken" / "out"
    before = {name: tree_state(tmp_path / name) for name in ("features", "mlruns")}
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
    assert before == {name: tree_state(tmp_path / name) for name in before}  # inputs and store untouched


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A small trained gm_only model (no tracking) and the four contract cohorts' feature tables."""
    from test_tracking import write_cohorts

    work = tmp_path_factory.mktemp("trained")
    write_cohorts(work / "features" / "gm_roi")
    overrides = [
        "+experiment=gm_only",
        f"paths.features={work / 'features'}",
        f"paths.output={work / 'out'}",
        f"hydra.run.dir={work / 'hydra'}",
        "cv.repeats=1",
        "cv.outer_folds=3",
        "cv.inner_folds=3",
        "cv.n_trials=3",
        "permutation.n=0",
        "tracking.enabled=false",
        "n_jobs=1",
    ]
    done = subprocess.run(
        [sys.executable, "-m", "src.train", *overrides], cwd=ROOT, env=subprocess_env(), capture_output=True
    )
    assert done.returncode == 0, done.stderr
    return work


def _edit_table(cohort: str, edit):
    def setup(work: Path) -> list[str]:
        path = work / "features" / "gm_roi" / f"{cohort}.parquet"
        edit(pd.read_parquet(path)).to_parquet(path, index=False)
        return []

    return setup


def _untrained(work: Path) -> list[str]:
    shutil.rmtree(work / "out" / "gm_only" / "train")
    return []


def _swapped_model(work: Path) -> list[str]:
    from src.validation.ensemble import model_file, read_model_file

    folder = work / "out" / "gm_only" / "train" / "model"
    other = read_model_file(model_file(folder))
    other.calibration = (1.0, 0.0)  # a well-formed model that is not the one trained
    other.save(folder)
    return []


def _pickled_model(work: Path) -> list[str]:
    folder = work / "out" / "gm_only" / "train" / "model"
    (folder / "model.npz").unlink()
    (folder / "model.joblib").write_bytes(b"not even read")
    return []


def _missing_cohort_table(work: Path) -> list[str]:
    (work / "features" / "gm_roi" / "saline.parquet").unlink()
    return []


def _with_hole(table: pd.DataFrame) -> pd.DataFrame:
    table.loc[3, "gm_r7"] = np.nan
    return table


EVALUATE_CASES = {
    "not trained": (_untrained, "train/metrics.json not found: train first"),
    "model file swapped": (_swapped_model, "but training recorded"),
    "legacy pickle": (_pickled_model, "is a pickle (from an older version): loading it could run code"),
    "a cohort lacks a feature column": (
        _edit_table("saline", lambda t: t.drop(columns="gm_r5")),
        "cohort 'saline' (",
    ),
    "a cohort has an extra column": (
        _edit_table("external_a", lambda t: t.assign(gm_extra=1.0)),
        "1 unexpected (e.g. ['gm_extra'])",
    ),
    "missing value in one cohort": (
        _edit_table("external_b", _with_hole),
        "cohort 'external_b'",
    ),
    "a cohort's table is missing": (_missing_cohort_table, "(cohort 'saline' of the data config)"),
    "no bootstrap": (lambda w: ["evaluation.n_bootstrap=0"], "config key evaluation.n_bootstrap=0"),
    "typo in an evaluation key": (
        lambda w: ["+evaluation.n_permutation=10"],
        "did you mean evaluation.n_permutations?",
    ),
}


@pytest.mark.parametrize("case", sorted(EVALUATE_CASES))
def test_evaluate_refuses_before_any_work(trained, tmp_path, case):
    work = tmp_path / "work"
    shutil.copytree(trained, work)
    setup, expected = EVALUATE_CASES[case]
    extra = setup(work)
    before = tree_state(work / "out")
    message = refused(
        "src.evaluate",
        [
            "+experiment=gm_only",
            f"paths.features={work / 'features'}",
            f"paths.output={work / 'out'}",
            f"hydra.run.dir={tmp_path / 'hydra'}",
            "tracking.enabled=false",
            *extra,
        ],
        expected,
    )
    if case == "a cohort lacks a feature column":
        assert "1 missing (e.g. ['gm_r5'])" in message
    if case == "missing value in one cohort":
        subject = pd.read_parquet(work / "features" / "gm_roi" / "external_b.parquet").loc[
            3, "participant_id"
        ]
        assert f"subject {subject} has no value in column 'gm_r7'" in message
    assert not (work / "out" / "gm_only" / "evaluate").exists()
    assert tree_state(work / "out") == before
