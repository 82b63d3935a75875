"""Scoring new patients: `python -m src.predict` and the per-patient numbers behind it."""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import compose_config, data_settings
from test_errors import refused
from test_features import DATA
from test_train import SPACE, contract_table

from src.config.settings import FeaturesSettings, PatientSettings
from src.prediction import predict_patients
from src.utils.errors import UserInputError
from src.validation.ensemble import ColumnMismatchError, EnsembleModel, load_model
from src.validation.nested_cv import CVConfig, run_nested_cv


@pytest.fixture(scope="module")
def locked() -> tuple[EnsembleModel, pd.DataFrame]:
    """A locked ensemble (2 x 4 folds) trained where feature gm_r0 carries the planted response signal."""
    table = contract_table(n=48, seed=5, signal=2.0)
    X = table[["age", "sex", "tiv", "site", *[c for c in table.columns if c.startswith("gm_")]]]
    cv = CVConfig(repeats=2, outer_folds=4, inner_folds=3, n_trials=4)
    result = run_nested_cv(X, table["response"].to_numpy(), SPACE, cv, seed=2, ids=table["participant_id"])
    return EnsembleModel.from_result(result, training=X), table


def _new_patients(table: pd.DataFrame) -> pd.DataFrame:
    """Two new patients without outcomes: the average training subject with gm_r0 shifted far towards the
    responders' side and far towards the non-responders' (the planted pattern, +-3 SD)."""
    base = table.iloc[[0, 0]].drop(columns=["response", "treatment"]).reset_index(drop=True)
    features = [c for c in table.columns if c.startswith("gm_")]
    base[features] = table[features].mean().to_numpy()
    base["age"], base["tiv"] = table["age"].mean(), table["tiv"].mean()
    base.loc[0, "gm_r0"] += 3 * table["gm_r0"].std()
    base.loc[1, "gm_r0"] -= 3 * table["gm_r0"].std()
    base["participant_id"] = ["sub-new1", "sub-new2"]
    return base


def test_planted_pattern_is_scored_as_planted(locked):
    model, table = locked
    out = predict_patients(model, _new_patients(table))
    assert out["prediction"].tolist() == ["responder", "non-responder"]
    assert out.loc[0, "probability"] > 0.8 and out.loc[1, "probability"] < 0.2
    assert (out["fold_agreement"] == 1.0).all()  # every fold model learnt the planted feature


def test_contributions_add_up_and_name_the_planted_region(locked, tmp_path):
    model, table = locked
    patients = _new_patients(table)
    values, base = model.contributions(patients)
    np.testing.assert_allclose(
        values.sum(axis=1) + base, model.decision_function(patients), rtol=0, atol=1e-9
    )
    # the contribution is the mean fold weight x the covariate-adjusted value, adjusted with an OLS fit of the
    # whole training cohort (recomputed here with numpy's lstsq on an explicit design)
    design = np.column_stack(
        [np.ones(len(table)), table["age"], table["sex"] == "M", table["tiv"], table["site"] == "b"]
    ).astype(float)
    features = [c for c in table.columns if c.startswith("gm_")]
    coef = np.linalg.lstsq(design, table[features].to_numpy(float), rcond=None)[0]
    new_design = np.column_stack(
        [np.ones(2), patients["age"], patients["sex"] == "M", patients["tiv"], patients["site"] == "b"]
    ).astype(float)
    adjusted = patients[features].to_numpy(float) - new_design @ coef
    weights = np.mean([m.weights for m in model.models], axis=0)
    np.testing.assert_allclose(values.to_numpy(), adjusted * weights, rtol=1e-9, atol=1e-12)
    top = predict_top(model, patients)
    assert top.loc[0, "towards_response"].startswith("gm_r0 (+")
    assert top.loc[1, "towards_non_response"].startswith("gm_r0 (-")
    # the covariate model travels with the saved model (arrays + JSON)
    model.save(tmp_path / "model")
    again, again_base = load_model(tmp_path / "model").contributions(patients)
    np.testing.assert_array_equal(again.to_numpy(), values.to_numpy())


def predict_top(model, patients):
    from src.prediction.score import top_regions

    return top_regions(model.contributions(patients)[0])


def test_probability_interval_and_decision_follow_the_locked_ensemble(locked):
    model, table = locked
    patients = table.drop(columns=["response", "treatment"]).head(12)
    out = predict_patients(model, patients, threshold=0.6, coverage=0.9)
    # the probability is the ensemble's own calibrated output
    np.testing.assert_allclose(out["probability"], model.predict_proba(patients)[:, 1], rtol=0, atol=1e-12)
    # the interval: the central 90 % of the 8 fold models' scores, Platt-calibrated (independent recomputation
    # from each fold model's own decision_function)
    fold_scores = np.column_stack([m.decision_function(patients) for m in model.models])
    slope, intercept = model.calibration
    for i in range(len(patients)):
        ordered = np.sort(fold_scores[i])
        low = np.interp(0.05 * (len(ordered) - 1), np.arange(len(ordered)), ordered)
        expected = 1 / (1 + np.exp(-(slope * low + intercept)))
        assert out.loc[i, "interval_low"] == pytest.approx(expected, abs=1e-12)
        assert out.loc[i, "interval_low"] <= out.loc[i, "interval_high"]
    assert (
        out["prediction"].tolist()
        == np.where(out["probability"] >= 0.6, "responder", "non-responder").tolist()
    )
    wider = predict_patients(model, patients, coverage=0.99)
    assert (wider["interval_low"] <= out["interval_low"] + 1e-15).all()


def test_a_table_that_does_not_fit_the_model_is_refused(locked):
    model, table = locked
    patients = table.drop(columns=["response", "treatment", "gm_r4"]).head(3)
    with pytest.raises(ColumnMismatchError, match=r"new.tsv: .*1 missing \(e.g. \['gm_r4'\]\)"):
        predict_patients(model, patients, where="new.tsv")
    holed = table.drop(columns=["response"]).head(3).assign(gm_r2=[1.0, np.nan, 2.0])
    with pytest.raises(ValueError, match="subject sub-x001 has no value in column 'gm_r2'"):
        predict_patients(model, holed)


@pytest.mark.slow
def test_predict_entry_point_scores_an_outcome_free_table(tmp_path, monkeypatch, capsys):
    """Train a small model, then score a .tsv of new patients with no outcome or treatment column."""
    import runpy
    import sys

    from conftest import ROOT

    features = tmp_path / "features" / "gm_roi"
    features.mkdir(parents=True)
    table = contract_table(n=40, seed=6)
    table.to_parquet(features / "discovery.parquet", index=False)
    common = [
        "+experiment=gm_only",
        f"paths.features={tmp_path / 'features'}",
        f"paths.output={tmp_path / 'out'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        "tracking.enabled=false",
    ]
    quiet = ["hydra/job_logging=none", "hydra/hydra_logging=none"]  # refused() adds them itself
    monkeypatch.chdir(ROOT)
    train = [
        *common,
        "cv.repeats=1",
        "cv.outer_folds=3",
        "cv.inner_folds=3",
        "cv.n_trials=3",
        "permutation.n=0",
    ]
    monkeypatch.setattr(sys, "argv", ["src.train", *train])
    runpy.run_module("src.train", run_name="__main__")
    new = _new_patients(table)
    new.to_csv(tmp_path / "new.tsv", sep="\t", index=False)
    monkeypatch.setattr(sys, "argv", ["src.predict", *common, *quiet, f"input={tmp_path / 'new.tsv'}"])
    runpy.run_module("src.predict", run_name="__main__")
    printed = capsys.readouterr().out
    written = pd.read_csv(tmp_path / "out" / "gm_only" / "predict" / "predictions.csv")
    assert written["participant_id"].tolist() == ["sub-new1", "sub-new2"]
    assert written["prediction"].tolist() == ["responder", "non-responder"]
    assert "sub-new1: P(response) = " in printed and "responder" in printed
    assert written.loc[0, "towards_response"].startswith("gm_r0 (+")  # the planted region, by name
    # each run its own dated file; predictions.csv is the latest
    runpy.run_module("src.predict", run_name="__main__")
    dated = sorted((tmp_path / "out" / "gm_only" / "predict").glob("predictions-*.csv"))
    assert len(dated) == 2 and all(pd.read_csv(f).equals(written) for f in dated)
    # a swapped model file is refused before any patient is scored
    model_file = tmp_path / "out" / "gm_only" / "train" / "model" / "model.npz"
    shutil.copy(model_file, tmp_path / "original.npz")
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte in the middle of the archive
    model_file.write_bytes(bytes(data))
    refused("src.predict", [*common, f"input={tmp_path / 'new.tsv'}"], "but training recorded")
    shutil.copy(tmp_path / "original.npz", model_file)
    for overrides, expected in (
        ([], "no input: give a GM map, a cohort folder or a feature table"),
        ([f"input={tmp_path / 'missing.tsv'}"], "missing.tsv not found"),
        ([f"input={tmp_path / 'new.tsv'}", "predict.threshold=1.5"], "predict.threshold=1.5: must be in"),
        ([f"input={tmp_path / 'new.tsv'}", "predict.threshold=high"], "predict.threshold='high': a number"),
    ):
        refused("src.predict", [*common, *overrides], expected)
    # a text cell or a code the contract does not know: the file, the subject and the column, as training says
    for column, value, expected in (
        ("age", "forty", "subject sub-new2 has non-numeric value 'forty' in column 'age'"),
        ("gm_r3", "7,5", "subject sub-new2 has non-numeric value '7,5' in column 'gm_r3'"),
        ("sex", "female", "subject sub-new2 has unknown sex code 'female' in column 'sex'"),
    ):
        bad = new.astype({column: object})
        bad.loc[1, column] = value
        bad.to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
        line = refused("src.predict", [*common, f"input={tmp_path / 'bad.tsv'}"], expected)
        assert str(tmp_path / "bad.tsv") in line


def test_covariates_outside_the_training_cohort_are_flagged(locked):
    model, table = locked
    patients = _new_patients(table)
    patients.loc[0, "age"] = table["age"].max() + 20
    patients.loc[1, "site"] = "scanner-z"
    out = predict_patients(model, patients)
    assert f"age {table['age'].max() + 20:g} outside the training range" in out.loc[0, "warnings"]
    assert out.loc[1, "warnings"] == "site 'scanner-z' not in training (a, b)"  # no policy notes given
    ordinary = predict_patients(model, table.drop(columns=["response"]).head(5))
    assert (ordinary["warnings"] == "").all()


def test_a_model_saved_before_contributions_existed_still_loads(locked):
    """skops rebuilds through __setstate__: a file written before ``adjustment`` existed has none."""
    model, _ = locked
    state = {k: v for k, v in model.__getstate__().items() if k != "adjustment"}
    older = EnsembleModel.__new__(EnsembleModel)
    older.__setstate__(state)
    assert older.adjustment is None
    with pytest.raises(
        ValueError, match="regional contributions need a linear model trained with this version"
    ):
        older.contributions(_new_patients(locked[1]))


def test_a_scan_unlike_the_training_cohort_is_flagged(locked, tmp_path):
    """A patient whose features are all shifted (as a wrongly scaled or misregistered map would be) lies
    beyond every training subject scored out of sample; a training-like patient does not."""
    model, table = locked
    patients = table.drop(columns=["response", "treatment"]).iloc[[3, 4]].reset_index(drop=True)
    features = [c for c in table.columns if c.startswith("gm_")]
    patients.loc[1, features] = patients.loc[1, features] + 4 * table[features].std().to_numpy() * np.sign(
        np.arange(len(features)) % 2 - 0.5
    )
    out = predict_patients(model, patients)
    assert out.loc[0, "distance_percentile"] < 99 and "farther" not in out.loc[0, "warnings"]
    assert out.loc[1, "distance_percentile"] == 100.0
    assert "features farther from the training cohort than 100 % of its subjects" in out.loc[1, "warnings"]
    # the reference: every training subject's distance from axes fitted without it (sorted); the distance
    # itself equals sklearn's PCA of the standardised covariate-adjusted training features (Mahalanobis on
    # the first 10 components)
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    reference = model.distance["reference"]
    assert len(reference) == len(table) and np.all(np.diff(reference) >= 0)
    training = table[model.input_columns]
    scaler = StandardScaler().fit(model.adjustment.transform(training))
    pca = PCA(n_components=10).fit(scaler.transform(model.adjustment.transform(training)))
    scores = pca.transform(scaler.transform(model.adjustment.transform(patients[model.input_columns])))
    np.testing.assert_allclose(
        out["distance"], np.sqrt((scores**2 / pca.explained_variance_).sum(axis=1)), rtol=1e-9
    )
    model.save(tmp_path / "model")  # travels with the arrays-only model file
    np.testing.assert_array_equal(
        load_model(tmp_path / "model").distance_percentile(patients)[1], out["distance_percentile"]
    )


SIMULATED = {**DATA, "layout": "bids"}  # the simulated cohorts' data config, without root and cohorts
GM_ROI = {"name": "gm_roi", "kind": "roi", "atlas": "aal", "tissues": ["GM"]}


def _without_outcomes(source, target):
    """A copy of a simulated cohort as new patients arrive: no MADRS, no treatment column."""
    from conftest import rewrite_participants

    shutil.copytree(source, target)
    rewrite_participants(target, lambda df: df.drop(columns=["madrs_baseline", "madrs_24h", "treatment"]))
    return target


def test_an_image_and_an_outcome_free_folder_give_the_training_features(tmp_path, tiny_simulated):
    """What src.predict scores from images equals what src.features.build made of the same scans for
    training: the outcome-free folder (all patients) and one GM map given alone with its covariates (TIV from
    the WM and CSF maps beside it)."""
    from src.data.contract import image_relpath
    from src.features.extract import FeatureSet
    from src.features.feature_sets import build_feature_set
    from src.prediction import patient_features

    data = {**SIMULATED, "root": str(tiny_simulated), "cohorts": ["external_a"]}
    build_feature_set(data_settings(**data), FeatureSet(name="gm_roi"), tmp_path / "features")
    training_path = pd.read_parquet(tmp_path / "features" / "gm_roi" / "external_a.parquet")
    expected = training_path.drop(columns=["response", "treatment", "outcome"])
    folder = _without_outcomes(tiny_simulated / "external_a", tmp_path / "new")
    got = patient_features(folder, data=data_settings(**data), features=FeaturesSettings(**GM_ROI))
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12)

    row = expected.iloc[2]
    image = folder / image_relpath(row["participant_id"], "GM", "simvbm")
    patient = {"age": row["age"], "sex": row["sex"], "site": row["site"]}
    one = patient_features(
        image,
        data=data_settings(**data),
        features=FeaturesSettings(**GM_ROI),
        patient=PatientSettings(**patient),
    )
    pd.testing.assert_frame_equal(
        one, expected.iloc[[2]].reset_index(drop=True), check_exact=False, rtol=1e-12
    )
    # a given TIV replaces the one from the WM and CSF maps
    given = patient_features(
        image,
        data=data_settings(**data),
        features=FeaturesSettings(**GM_ROI),
        patient=PatientSettings(**{**patient, "tiv": 1234.5}),
    )
    assert given["tiv"].tolist() == [1234.5]


def test_clinical_values_reach_the_model_as_in_training(tmp_path, tiny_simulated):
    """gm_roi_clinical from an outcome-free folder equals the training table (clinical columns coded the
    same way, missing where empty); one image takes its clinical values from patient.clinical, a value not
    given is missing (the model imputes it), an undeclared one or a value out of range is refused."""
    from src.data.clinical import ClinicalError
    from src.data.contract import image_relpath
    from src.features.extract import FeatureSet
    from src.features.feature_sets import build_feature_set
    from src.prediction import patient_features

    declared = compose_config()["data"]["clinical"]
    data = data_settings(
        **{**SIMULATED, "root": str(tiny_simulated), "cohorts": ["external_a"], "clinical": declared}
    )
    build_feature_set(data, FeatureSet(name="gm_roi_clinical", clinical=True), tmp_path / "features")
    training = pd.read_parquet(tmp_path / "features" / "gm_roi_clinical" / "external_a.parquet")
    expected = training.drop(columns=["response", "treatment", "outcome"])
    assert expected.filter(like="clin_").isna().any().any()  # the simulated cohorts have missing values
    features = FeaturesSettings(**GM_ROI, clinical=True)
    folder = tmp_path / "new"
    shutil.copytree(tiny_simulated / "external_a", folder)
    from conftest import rewrite_participants

    rewrite_participants(folder, lambda df: df.drop(columns=["madrs_24h", "treatment"]))
    got = patient_features(folder, data=data, features=features)
    pd.testing.assert_frame_equal(got, expected, check_exact=False, rtol=1e-12)

    row = expected.iloc[0]
    image = folder / image_relpath(row["participant_id"], "GM", "simvbm")
    patient = {"age": row["age"], "sex": row["sex"], "site": row["site"]}
    one = patient_features(
        image,
        data=data,
        features=features,
        patient=PatientSettings(**patient, clinical={"bmi": 31.5, "antidepressant": "snri"}),
    )
    assert one["clin_bmi"].tolist() == [31.5] and one["clin_antidepressant=snri"].tolist() == [1.0]
    assert one["clin_antidepressant=ssri"].tolist() == [0.0] and one["clin_family_history_aud"].isna().all()
    with pytest.raises(UserInputError, match=r"patient.clinical: \['weight'\] are not clinical predictors"):
        patient_features(
            image, data=data, features=features, patient=PatientSettings(**patient, clinical={"weight": 80})
        )
    with pytest.raises(ClinicalError, match="has 99 in clinical column 'bmi', outside its declared range"):
        patient_features(
            image, data=data, features=features, patient=PatientSettings(**patient, clinical={"bmi": 99})
        )


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("no sex", "is one image: give the patient's sex (e.g. patient.age="),
        ("no tissue maps", "no WM map beside it for TIV (or give patient.tiv=<ml>); expected sub-"),
        ("scaled", "(> 3.0); is it scaled (x100, x1000)"),
        ("sex code", "has unknown sex code 'female' in column 'sex'"),
        ("text file", "give a GM map (.nii, .nii.gz), a cohort folder or a feature table"),
        ("table features", "comes from regional tables, not images; give the patients' regional table"),
    ],
)
def test_a_bad_image_input_is_refused_with_the_reason(tmp_path, tiny_simulated, case, expected):
    import nibabel as nib

    from src.data.contract import image_relpath
    from src.prediction import patient_features
    from src.utils.errors import UserInputError

    data = {**SIMULATED, "root": str(tiny_simulated)}
    source = tiny_simulated / "external_a" / image_relpath("sub-ea001", "GM", "simvbm")
    image = tmp_path / source.name
    shutil.copy(source, image)
    patient, features = {"age": 40, "sex": "F", "site": "exta"}, GM_ROI
    if case == "no sex":
        patient.pop("sex")
    elif case == "no tissue maps":
        pass  # only the GM map was copied
    elif case == "scaled":
        img = nib.load(source)
        nib.save(nib.Nifti1Image(np.asarray(img.dataobj) * 1000, img.affine), image)
        patient["tiv"] = 1500
    elif case == "sex code":
        patient["sex"], patient["tiv"] = "female", 1500
    elif case == "text file":
        image = tmp_path / "notes.txt"
        image.write_text("x")
    elif case == "table features":
        features = {"name": "fs_table", "kind": "table"}
    with pytest.raises(UserInputError, match=None) as error:
        patient_features(
            image,
            data=data_settings(**data),
            features=FeaturesSettings(**features),
            patient=PatientSettings(**patient),
        )
    assert expected in str(error.value)


@pytest.mark.slow
def test_one_image_end_to_end_with_its_card(tmp_path, tiny_simulated, monkeypatch, capsys):
    """Features built, a small model trained on the simulated discovery cohort, then `python -m src.predict`
    on one GM map: the numbers equal the model's on that subject's training-path features, and the card shows
    them with the regions, a brain map, the warnings and the input's hash."""
    import html
    import json
    import runpy
    import sys

    from conftest import ROOT

    from src.data.contract import image_relpath
    from src.features.extract import FeatureSet
    from src.features.feature_sets import build_feature_set
    from src.utils.io import file_md5

    data = {**SIMULATED, "root": str(tiny_simulated), "cohorts": ["discovery", "external_a"]}
    build_feature_set(data_settings(**data), FeatureSet(name="gm_roi"), tmp_path / "features")
    common = [
        "+experiment=gm_only",
        f"data.root={tiny_simulated}",
        f"paths.features={tmp_path / 'features'}",
        f"paths.output={tmp_path / 'out'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        "tracking.enabled=false",
        "hydra/job_logging=none",
        "hydra/hydra_logging=none",
    ]
    monkeypatch.chdir(ROOT)
    train = ["cv.repeats=1", "cv.outer_folds=3", "cv.inner_folds=2", "cv.n_trials=2", "permutation.n=0"]
    monkeypatch.setattr(sys, "argv", ["src.train", *common, *train])
    runpy.run_module("src.train", run_name="__main__")
    image = tiny_simulated / "external_a" / image_relpath("sub-ea002", "GM", "simvbm")
    table = pd.read_parquet(tmp_path / "features" / "gm_roi" / "external_a.parquet")
    row = table[table["participant_id"] == "sub-ea002"]
    patient = [f"patient.{k}={row[k].iloc[0]}" for k in ("age", "sex", "site")]
    monkeypatch.setattr(sys, "argv", ["src.predict", *common, f"input={image}", *patient])
    runpy.run_module("src.predict", run_name="__main__")
    printed = capsys.readouterr().out
    written = pd.read_csv(tmp_path / "out" / "gm_only" / "predict" / "predictions.csv")
    model = load_model(tmp_path / "out" / "gm_only" / "train" / "model")
    assert written["participant_id"].tolist() == ["sub-ea002"]
    np.testing.assert_allclose(written["probability"], model.predict_proba(row)[:, 1], rtol=1e-9)
    sha256 = json.loads((tmp_path / "out" / "gm_only" / "train" / "metrics.json").read_text())["provenance"]
    assert f"verified DVC copy, sha256 {sha256['model_sha256']}; registry: tracking off" in printed
    card = (tmp_path / "out" / "gm_only" / "predict" / "cards" / "sub-ea002.html").read_text()
    assert f"P(response) = {written['probability'].iloc[0]:.2f}" in card
    assert card.count("data:image/png;base64,") == 3  # probability, contributions, brain map
    assert html.escape("site 'exta' not in training: its scores may be shifted") in card  # said on the card
    assert f"md5 {file_md5(image)}" in card
    top = written["towards_response"].iloc[0].split(" (")[0]
    assert top in card  # the region names of the CSV are the bars' labels
    assert "Not checked: a left-right mirrored scan" in card  # the limit is said where the result is read
    # the model card: none before src.evaluate (said); once written, linked (a relative link that resolves)
    assert "No model card yet" in card
    model_card = tmp_path / "out" / "gm_only" / "evaluate" / "model_card.md"
    model_card.parent.mkdir(parents=True)
    model_card.write_text("# Model card: `gm_only`\n")
    runpy.run_module("src.predict", run_name="__main__")
    cards = tmp_path / "out" / "gm_only" / "predict" / "cards"
    card = (cards / "sub-ea002.html").read_text()
    link = re.search(r'Model card: <a href="([^"]+)">', card).group(1)
    assert (cards / link).resolve() == model_card.resolve() and "No model card yet" not in card


def test_an_unseen_site_is_aligned_with_enough_unlabelled_scans_and_flagged_otherwise(locked):
    """Site policy: 10 scans of a new scanner (a constant offset on every feature) are aligned with these
    scans only, which removes the offset (aligning the scans with and without it gives the same features); the
    training sites' rows are untouched; with too few scans, or alignment off, nothing changes and the note
    says the scores may be shifted."""
    from src.prediction.score import align_unseen_sites

    model, table = locked
    features = [c for c in table.columns if c.startswith("gm_")]
    new = table.drop(columns=["response", "treatment"]).iloc[:12].reset_index(drop=True)
    new.loc[2:, "site"] = "z"  # rows 0-1 keep a training site, rows 2-11 come from scanner z
    shifted = new.copy()
    shifted.loc[2:, features] += 0.7 * table[features].std().to_numpy()
    training = table.drop(columns=["treatment"])
    aligned, notes = align_unseen_sites(model, shifted, training, min_scans=8)
    unshifted, _ = align_unseen_sites(model, new, training, min_scans=8)
    np.testing.assert_allclose(
        aligned[features].to_numpy(), unshifted[features].to_numpy(), rtol=1e-9, atol=1e-9
    )
    pd.testing.assert_frame_equal(aligned.iloc[:2], shifted.iloc[:2])
    assert notes[:2] == ["", ""]
    assert set(notes[2:]) == {"site 'z' not in training: aligned to it with its 10 unlabelled scans here"}
    scores = predict_patients(model, aligned, notes=notes)
    assert scores.loc[5, "warnings"].startswith("site 'z' not in training: aligned")
    assert "not in training (a, b)" not in scores.loc[5, "warnings"]  # one note for one fact
    for min_scans, why in ((11, "10 scan(s) from it in this input, 11 needed to align it"), (None, "=null")):
        kept, notes = align_unseen_sites(model, shifted, training, min_scans=min_scans)
        pd.testing.assert_frame_equal(kept, shifted)
        assert notes[2].startswith("site 'z' not in training: its scores may be shifted") and why in notes[2]


def test_occlusion_equals_a_linear_models_exact_contributions_and_finds_the_planted_region_with_rbf(locked):
    """The RBF attribution (occlusion: black-box re-scoring per feature) gives, on a linear ensemble, exactly
    the closed-form contributions; on an RBF ensemble trained on the same data it ranks the planted feature
    first for the patients shifted along it."""
    from src.models.search_space import SearchSpace

    model, table = locked
    patients = _new_patients(table)
    np.testing.assert_allclose(
        model.occlusion(patients).to_numpy(), model.contributions(patients)[0].to_numpy(), rtol=0, atol=1e-9
    )
    rbf_space = SearchSpace.from_config(
        {
            "search_space": {"C": {"type": "float", "low": 0.1, "high": 10.0, "log": True}},
            "fixed": {"kernel": "rbf"},
        }
    )
    X = table[model.input_columns]
    cv = CVConfig(repeats=1, outer_folds=3, inner_folds=3, n_trials=3)
    result = run_nested_cv(
        X, table["response"].to_numpy(), rbf_space, cv, seed=3, ids=table["participant_id"]
    )
    rbf = EnsembleModel.from_result(result, training=X)
    from src.prediction.score import local_attribution

    values, method = local_attribution(rbf, patients)
    assert method.startswith("occlusion")
    assert values.loc[0].idxmax() == "gm_r0" and values.loc[1].idxmin() == "gm_r0"


def test_a_misregistered_scan_is_flagged_far_from_the_training_cohort(tmp_path, tiny_simulated):
    """Image-level out-of-distribution check: the same subject's maps flipped front-to-back, or moved by two
    voxels (12 mm), pass the plausibility checks but lie beyond every training subject (scored out of
    sample); the scan as it is does not. With 12 training subjects the covariate model leaves few degrees of
    freedom: only principal axes with real variance may enter the distance (before that fix, distances of
    1e14 made the percentiles meaningless)."""
    import nibabel as nib

    from src.data.contract import image_relpath
    from src.features.extract import FeatureSet
    from src.features.feature_sets import build_feature_set
    from src.prediction import patient_features

    data = {**SIMULATED, "root": str(tiny_simulated), "cohorts": ["discovery"]}
    build_feature_set(data_settings(**data), FeatureSet(name="gm_roi"), tmp_path / "features")
    training = pd.read_parquet(tmp_path / "features" / "gm_roi" / "discovery.parquet")
    X = training.drop(columns=["participant_id", "treatment", "response", "outcome"])
    cv = CVConfig(repeats=1, outer_folds=3, inner_folds=2, n_trials=2)
    result = run_nested_cv(
        X, training["response"].to_numpy(), SPACE, cv, seed=4, ids=training["participant_id"]
    )
    model = EnsembleModel.from_result(result, training=X)
    row = training.iloc[0]
    patient = {"age": row["age"], "sex": row["sex"], "site": row["site"]}
    percentiles = {}
    for change in ("none", "flipped front-to-back", "moved 2 voxels up"):
        folder = tmp_path / change.replace(" ", "_")
        folder.mkdir()
        for tissue in ("GM", "WM", "CSF"):
            source = tiny_simulated / "discovery" / image_relpath(row["participant_id"], tissue, "simvbm")
            img = nib.load(source)
            values = np.asarray(img.dataobj)
            if change.startswith("flipped"):
                values = values[:, ::-1]
            elif change.startswith("moved"):
                values = np.roll(values, 2, axis=2)
            nib.save(nib.Nifti1Image(values, img.affine), folder / source.name)
        image = folder / image_relpath(row["participant_id"], "GM", "simvbm").name
        table = patient_features(
            image,
            data=data_settings(**data),
            features=FeaturesSettings(**GM_ROI),
            patient=PatientSettings(**patient),
        )
        scored = predict_patients(model, table)
        percentiles[change] = scored.loc[0, "distance_percentile"]
        assert ("features farther from the training cohort" in scored.loc[0, "warnings"]) == (
            change != "none"
        )
    assert percentiles["none"] < 99 and percentiles["flipped front-to-back"] == 100.0, percentiles


@pytest.mark.slow
def test_without_the_registry_alias_predict_uses_the_verified_dvc_copy(tmp_path):
    """Tracking on, a store that has no model with the alias: the DVC copy, verified against its recorded
    sha256, and the source says why; a swapped DVC model is refused rather than used."""
    from conftest import train_tiny
    from test_train import contract_table

    from src.tracking.registry import model_for_prediction
    from src.tracking.store import TrackingSettings
    from src.validation.ensemble import ModelIntegrityError, model_file

    _, outcome, train_dir = train_tiny(tmp_path, contract_table(n=30, seed=2))
    settings = TrackingSettings(root=str(tmp_path / "mlruns"), model_name="no-such-model")
    model, source = model_for_prediction(settings, "champion", train_dir, tmp_path / "dl")
    assert "verified DVC copy" in source and "models:/no-such-model@champion not found" in source
    table = contract_table(n=30, seed=2)
    np.testing.assert_array_equal(model.decision_function(table), outcome.model.decision_function(table))
    path = model_file(train_dir / "model")
    path.write_bytes(path.read_bytes() + b" ")  # swapped on disk
    with pytest.raises(ModelIntegrityError):
        model_for_prediction(settings, "champion", train_dir, tmp_path / "dl2")


def test_the_decision_is_probability_at_or_above_the_threshold(locked):
    """Patients placed between the right rule (P >= threshold) and each wrong one: P >= 0.5, decision score
    > 0, P > threshold (a patient exactly at the threshold is a responder)."""
    model, table = locked
    patients = table.drop(columns=["response", "treatment"])
    shifted = copy.deepcopy(model)
    shifted.calibration = (model.calibration[0], model.calibration[1] + 0.8)  # P(score 0) > 0.5
    p = shifted.predict_proba(patients)[:, 1]
    decision = shifted.decision_function(patients)
    threshold = float(np.sort(p)[len(p) // 2])  # one patient exactly at it, others on both sides
    out = predict_patients(shifted, patients, threshold=threshold)
    responder = out["prediction"].eq("responder").to_numpy()
    np.testing.assert_array_equal(responder, p >= threshold)
    assert (p == threshold).sum() >= 1 and responder[p == threshold].all()  # at the threshold: responder
    assert (responder != (decision > 0)).any(), "no patient separates P >= threshold from score > 0"
    assert (responder != (p >= 0.5)).any(), "no patient separates P >= threshold from P >= 0.5"


def test_the_card_says_simulated_and_uncertain_and_prints_no_folder_of_this_machine(tmp_path, monkeypatch):
    """A model trained on the simulated cohorts: said first. An interval across the threshold: 'uncertain
    (leans ...)', not 'predicted ...'. The input is shown relative to the working folder, or by name."""
    from src.prediction.card import patient_card
    from src.utils.io import shown_path

    row = {
        "participant_id": "sub-x1",
        "prediction": "responder",
        "probability": 0.51,
        "interval_low": 0.44,
        "interval_high": 0.60,
        "fold_agreement": 0.55,
        "warnings": "",
    }
    card = patient_card(row, threshold=0.5, coverage=0.95, provenance=[], simulated=True)
    assert "Model trained on simulated data." in card and "sub-x1: uncertain (leans responder)" in card
    assert "predicted responder" not in card
    sure = patient_card({**row, "interval_low": 0.52}, threshold=0.5, coverage=0.95, provenance=[])
    assert "sub-x1: predicted responder" in sure and "simulated data" not in sure
    monkeypatch.chdir(tmp_path)
    assert shown_path(tmp_path / "in" / "a.tsv") == "in/a.tsv"
    assert shown_path(Path("/elsewhere/b.nii.gz")) == ".../b.nii.gz"


@pytest.mark.slow  # nilearn resamples its 1 mm template (3-5 s)
def test_the_card_background_is_nilearns_template(tmp_path, monkeypatch):
    """nilearn's plotting background loaded through the cached 2 mm template holds what nilearn's own load
    gives (data, mask, affine, vmax): the brain figure is drawn on the same image, only sooner."""
    from nilearn.plotting.image import utils

    from src.data import templates
    from src.prediction.card import cached_plot_background

    monkeypatch.setenv("KETAMINE_TRD_CACHE", str(tmp_path))
    templates.mni152_template_2mm.cache_clear()
    reference = type(utils.MNI152TEMPLATE)()
    reference.load()  # nilearn's way: resampled from the 1 mm template
    for _ in range(2):  # the cache written, then read
        primed = type(utils.MNI152TEMPLATE)()
        monkeypatch.setattr(utils, "MNI152TEMPLATE", primed)
        templates.mni152_template_2mm.cache_clear()
        with cached_plot_background():
            primed.load()
        np.testing.assert_array_equal(primed.data.data, reference.data.data)
        np.testing.assert_array_equal(primed.data.mask, reference.data.mask)
        np.testing.assert_array_equal(primed._affine, reference._affine)
        assert primed.vmax == reference.vmax and primed._shape == reference._shape
    assert utils.load_mni152_template is not None and "cached" not in utils.load_mni152_template.__name__
    templates.mni152_template_2mm.cache_clear()


@pytest.mark.parametrize("n, p", [(30, 400), (12, 120)])
def test_principal_axes_of_a_wide_table_equal_the_svd(n, p):
    """Voxel tables take the axes of the distance from the n x n Gram matrix instead of the thin SVD (10 s at
    99 x 181 k): the same leading singular values, the same axes up to sign, the same distances as sklearn's
    PCA; with 12 subjects, six design columns leave 5 axes of real variance, and only those are kept."""
    from sklearn.decomposition import PCA

    from src.validation.ensemble import _principal_axes

    rng = np.random.default_rng(n)
    design = np.column_stack([np.ones(n), rng.normal(size=(n, 5))])
    z = rng.normal(size=(n, p)) * rng.uniform(0.5, 3, p)
    z -= design @ np.linalg.lstsq(design, z, rcond=None)[0]  # residualised: rank n - 6
    z = (z - z.mean(axis=0)) / z.std(axis=0)
    assert p > 4 * n  # the Gram route
    singular, axes = _principal_axes(z, 10)
    expected = np.linalg.svd(z, compute_uv=False)
    k = min(10, n - 6)
    assert len(axes) == k
    np.testing.assert_allclose(singular[:k], expected[:k], rtol=1e-10)
    pca = PCA(n_components=k).fit(z)
    np.testing.assert_allclose(np.abs(axes), np.abs(pca.components_), rtol=0, atol=1e-8)
    new = rng.normal(size=(3, p))
    ours = np.sqrt((((new @ axes.T) ** 2) / (singular[:k] ** 2 / (n - 1))).sum(axis=1))
    theirs = np.sqrt((pca.transform(new) ** 2 / pca.explained_variance_).sum(axis=1))
    np.testing.assert_allclose(ours, theirs, rtol=1e-8)
