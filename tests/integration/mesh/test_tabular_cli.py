"""`predmesh train --data` and `predmesh import` as real processes, on the penguins data the palmerpenguins package
ships and on small synthetic tables: each version is then loaded the way the server loads it (ModelRegistry →
LoadedModel: trust checks, golden-row smoke test) and scores every row with the probabilities the pipeline itself
gives in process, to 1e-9; every refusal is one line naming the column or file, exit 2."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from tests.support import penguins
from tests.support.tabular import own_pipeline, run, served

TOLERANCE = 1e-9


def assert_served_like(loaded, clf, df: pd.DataFrame) -> None:
    """Every row of df, sent as plain values, scores as the pipeline scores the DataFrame itself."""
    rows = penguins.plain_rows(df, loaded.manifest.features)
    got = np.asarray(loaded.score(rows, timeout=30.0))
    expected = clf.predict_proba(df[list(loaded.manifest.feature_names)])
    assert got.shape == expected.shape
    assert np.max(np.abs(got - expected)) <= TOLERANCE, np.max(np.abs(got - expected))


@pytest.mark.parametrize("estimator", ["lr", "rf", "et", "gb", "hgb", "svc", "knn"])
def test_penguins_trained_from_the_csv_with_each_estimator(tmp_path, estimator):
    store = tmp_path / "models"
    out = run("train", "--data", penguins.csv_path(), "--target", "species", "--model", "penguins",
              "--estimator", estimator, store=store)
    assert out.returncode == 0, out.stderr
    assert "trained penguins version 1 (" in out.stdout and "7 features: 5 number, 2 category" in out.stdout
    meta = json.loads((store / "penguins" / "1" / "metadata.json").read_text())
    assert meta["input"] == "frame" and meta["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    kinds = {f["name"]: f.get("kind", "number") for f in meta["features"]}
    assert kinds == {"island": "category", "sex": "category", **dict.fromkeys(penguins.NUMBERS, "number")}
    sex = next(f for f in meta["features"] if f["name"] == "sex")
    assert [c[0] for c in sex["categories"]] == ["male", "female"] and sex["missing_share"] == pytest.approx(11 / 344)
    assert sex["nullable"] and sex["accepts_unknown"]
    assert meta["metrics"]["holdout_accuracy"] > 0.9 and "holdout_roc_auc" not in meta["metrics"]
    loaded = served(store, "penguins")
    assert loaded.runtime == "sklearn"
    assert_served_like(loaded, own_pipeline(store, "penguins", "1"), penguins.table())


def synthetic(label: str) -> pd.DataFrame:
    """120 rows: a number with gaps, a category, a boolean with gaps; the class as strings, integers or booleans."""
    rng = np.random.default_rng(7)
    n = 120
    size = rng.normal(10, 3, n)
    colour = rng.choice(["red", "green", "blue"], n)
    fresh = rng.random(n) < 0.5
    score = (size - 10) / 3 + (colour == "red") - fresh * 0.5 + rng.normal(0, 0.4, n)
    k = np.digitize(score, np.quantile(score, [1 / 3, 2 / 3]) if label == "int" else [np.median(score)])
    size[::17] = np.nan
    flag = pd.Series(fresh, dtype=object)
    flag[::13] = None
    target = {"str": lambda: np.array(["keep", "toss"])[k], "int": lambda: k, "bool": lambda: k.astype(bool)}[label]()
    return pd.DataFrame({"size": size, "colour": colour, "fresh": flag, "label": target})


@pytest.mark.parametrize("label, estimator, classes", [
    ("str", "rf", ["keep", "toss"]), ("int", "knn", ["0", "1", "2"]), ("bool", "lr", ["False", "True"]),
])
def test_string_integer_and_boolean_labels(tmp_path, label, estimator, classes):
    df = synthetic(label)
    data = tmp_path / "fruit.csv"
    df.to_csv(data, index=False)
    store = tmp_path / "models"
    out = run("train", "--data", data, "--target", "label", "--model", "fruit", "--estimator", estimator, store=store)
    assert out.returncode == 0, out.stderr
    assert "3 features: 1 number, 1 category, 1 boolean" in out.stdout
    meta = json.loads((store / "fruit" / "1" / "metadata.json").read_text())
    assert meta["classes"] == classes and ("holdout_roc_auc" in meta["metrics"]) == (len(classes) == 2)
    loaded = served(store, "fruit")
    clf = own_pipeline(store, "fruit", "1")
    rows = penguins.plain_rows(df, loaded.manifest.features)
    from inference.models.frame import to_frame
    expected = clf.predict_proba(to_frame(rows, loaded.manifest.features))
    assert np.max(np.abs(np.asarray(loaded.score(rows, timeout=30.0)) - expected)) <= TOLERANCE
    assert [str(c) for c in clf.classes_] == classes


def test_parquet_trains_like_csv(tmp_path):
    df = penguins.table()
    df.to_parquet(tmp_path / "penguins.parquet")
    store = tmp_path / "models"
    out = run("train", "--data", tmp_path / "penguins.parquet", "--target", "species", "--model", "penguins",
              "--estimator", "lr", "--drop", "year", store=store)
    assert out.returncode == 0, out.stderr
    assert "6 features: 4 number, 2 category" in out.stdout
    assert_served_like(served(store, "penguins"), own_pipeline(store, "penguins", "1"), df)
    again = run("train", "--data", tmp_path / "penguins.parquet", "--target", "species", "--model", "penguins",
                "--estimator", "lr", store=store)
    assert again.returncode == 0 and "7 features" in again.stdout, again.stderr
    assert "note: version 2 of penguins has other features or classes than version 1" in again.stderr


@pytest.mark.parametrize("args, message", [
    (["--target", "beak"], "target column 'beak' is not in penguins.csv"),
    (["--target", "species", "--drop", "wings"], "--drop column 'wings' is not in penguins.csv"),
    (["--target", "island_all"], "target column 'island_all' has one class only"),
    (["--target", "species", "--drop", "island_all"], "column 'tag' is empty"),
    (["--target", "species", "--drop", "island_all", "tag"], "column 'ring' has 344 distinct text values"),
])
def test_training_refusals_name_the_column(tmp_path, args, message):
    df = penguins.table().assign(island_all="Biscoe", tag=None, ring=[f"R{i:04d}" for i in range(344)])
    df.to_csv(tmp_path / "penguins.csv", index=False)
    out = run("train", "--data", tmp_path / "penguins.csv", "--model", "p", *args, store=tmp_path / "models")
    lines = out.stderr.splitlines()
    assert out.returncode == 2 and out.stdout == "" and len(lines) == 1, out.stderr
    assert lines[0].startswith("predmesh train: ") and message in lines[0], out.stderr
    assert not (tmp_path / "models" / "p").exists()


@pytest.mark.parametrize("args, message", [
    (["--data", "penguins.csv", "--model", "p"], "--data needs --target COLUMN"),
    (["--data", "penguins.csv", "--target", "species"], "--data needs --model NAME"),
    (["--target", "species"], "--target needs --data FILE"),
    (["--data", "penguins.csv", "--target", "species", "--model", "../p"], "model '../p' is not a valid name"),
])
def test_flags_that_go_together(tmp_path, args, message):
    out = run("train", *args, store=tmp_path / "models")
    assert out.returncode == 2 and out.stderr.startswith("predmesh train: "), out.stderr
    assert message in out.stderr and len(out.stderr.splitlines()) == 1


def test_an_unreadable_file_is_named(tmp_path):
    (tmp_path / "table.parquet").write_bytes(b"this is not parquet")
    for data in (tmp_path / "table.parquet", tmp_path / "absent.csv"):
        out = run("train", "--data", data, "--target", "species", "--model", "p", store=tmp_path / "models")
        assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, out.stderr
        assert f"cannot read {data}" in out.stderr


@pytest.fixture(scope="module")
def hand_fitted(tmp_path_factory):
    """The HistGradientBoosting pipeline fitted by hand on penguins, saved with skops and with pickle."""
    where = tmp_path_factory.mktemp("hand")
    clf = penguins.fitted_hgb()
    sio.dump(clf, where / "penguins.skops")
    (where / "penguins.pkl").write_bytes(pickle.dumps(clf))
    return clf, where


@pytest.mark.parametrize("file, flags", [("penguins.skops", []), ("penguins.pkl", ["--trust-pickle"])])
def test_a_hand_fitted_hist_gradient_boosting_pipeline_is_imported(tmp_path, hand_fitted, file, flags):
    clf, where = hand_fitted
    store = tmp_path / "models"
    out = run("import", "--model", "penguins", where / file, "--data", penguins.csv_path(), "--target", "species",
              *flags, store=store)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("imported penguins version 1 (HistGradientBoostingClassifier, 7 features: 5 "
                                 "number, 2 category)"), out.stdout
    meta = json.loads((store / "penguins" / "1" / "metadata.json").read_text())
    assert [f["name"] for f in meta["features"]] == list(penguins.FEATURES)
    assert all(f["nullable"] for f in meta["features"])  # native missing-value support
    assert {f["name"] for f in meta["features"] if f.get("accepts_unknown")} == {"island", "sex"}
    assert meta["metrics"]["sample_accuracy"] > 0.95
    assert (store / "penguins" / "1" / "model.skops").read_bytes()[:4] == b"PK\x03\x04"
    assert_served_like(served(store, "penguins"), clf, penguins.table())


def test_a_pickle_without_trust_is_refused(tmp_path, hand_fitted):
    _, where = hand_fitted
    out = run("import", "--model", "penguins", where / "penguins.pkl", "--data", penguins.csv_path(),
              store=tmp_path / "models")
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, out.stderr
    assert "penguins.pkl is not a skops file" in out.stderr and "--trust-pickle" in out.stderr
    assert not (tmp_path / "models").exists()


def test_an_import_whose_sample_lacks_a_column_names_it(tmp_path, hand_fitted):
    _, where = hand_fitted
    penguins.table().drop(columns=["sex"]).to_csv(tmp_path / "sample.csv", index=False)
    out = run("import", "--model", "penguins", where / "penguins.skops", "--data", tmp_path / "sample.csv",
              store=tmp_path / "models")
    assert out.returncode == 2 and len(out.stderr.splitlines()) == 1, out.stderr
    assert "sample sample.csv has no column 'sex', which the model takes" in out.stderr
