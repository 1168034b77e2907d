"""Bringing a fitted model in, in process: a skops file under the server's trust rules, a pickle only when trusted
(and stored as skops), the schema from feature_names_in_ (or an array model's sample columns), what probing finds
it accepts, and the errors that name the file or column."""
from __future__ import annotations

import operator
import pickle
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from inference.models.columns import TableError
from inference.models.frame import to_frame
from inference.models.importer import import_model
from inference.models.store import ModelStore
from tests.support.procs import ADMIN_TOKEN
from tests.unit.inference.test_tabular import synthetic

ROOT = Path(__file__).resolve().parents[3]


def lenient_pipeline():
    """Imputes numbers and categories, one-hot encodes the plan ignoring unknown ones, and takes the boolean."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    return Pipeline([("columns", ColumnTransformer([
        ("numbers", SimpleImputer(), ["amount", "member"]),
        ("plan", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
         ["plan"])])), ("classifier", LogisticRegression(max_iter=1000))])


@pytest.fixture
def sample(tmp_path):
    df = synthetic(label="str", classes=3)
    path = tmp_path / "sample.csv"
    df.to_csv(path, index=False)
    return df, path


def test_skops_pipeline_imports_with_its_schema(tmp_path, sample):
    df, path = sample
    clf = lenient_pipeline().fit(df[["amount", "plan", "member"]], df["y"])
    sio.dump(clf, tmp_path / "model.skops")
    manifest = import_model(ModelStore(tmp_path / "store"), "plans", tmp_path / "model.skops", path, "y")
    assert manifest.version == "1" and manifest.input == "frame" and manifest.estimator == "LogisticRegression"
    assert [(f.name, f.kind, f.nullable, f.accepts_unknown) for f in manifest.features] == [
        ("amount", "number", True, False), ("plan", "category", True, True), ("member", "boolean", True, False)]
    assert manifest.classes == ("maybe", "no", "yes")
    assert {"sample_accuracy", "sample_macro_precision", "sample_macro_recall"} <= set(manifest.metrics)
    assert manifest.metrics["sample_accuracy"] == pytest.approx(
        float(np.mean(clf.predict(df[["amount", "plan", "member"]]) == df["y"])))
    stored = (tmp_path / "store" / "plans" / "1" / "model.skops").read_bytes()
    assert stored == (tmp_path / "model.skops").read_bytes()
    golden = [g["features"] for g in manifest.golden]
    assert np.allclose(clf.predict_proba(to_frame(golden, manifest.features)),
                       [g["probabilities"] for g in manifest.golden], atol=1e-12, rtol=0)


def test_a_model_that_cannot_impute_is_probed_as_such(tmp_path, sample):
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    df, path = sample
    df = df.dropna()
    df.to_csv(path, index=False)
    clf = Pipeline([("c", ColumnTransformer([("n", "passthrough", ["amount"]),
                                             ("p", OneHotEncoder(handle_unknown="error"), ["plan"])])),
                    ("m", LogisticRegression())]).fit(df[["amount", "plan"]], df["y"])
    sio.dump(clf, tmp_path / "strict.skops")
    manifest = import_model(ModelStore(tmp_path / "store"), "strict", tmp_path / "strict.skops", path)
    assert [(f.name, f.nullable, f.accepts_unknown) for f in manifest.features] == [
        ("amount", False, False), ("plan", False, False)]
    assert manifest.metrics == {}  # no --target
    predicted = pd.Series(clf.predict(df[["amount", "plan"]])).value_counts(normalize=True)
    assert {p.label: p.share for p in manifest.class_profiles} == pytest.approx(predicted.to_dict())


def test_a_pickle_needs_trust_and_is_stored_as_skops(tmp_path, sample):
    df, path = sample
    clf = lenient_pipeline().fit(df[["amount", "plan", "member"]], df["y"])
    (tmp_path / "model.pkl").write_bytes(pickle.dumps(clf))
    store = ModelStore(tmp_path / "store")
    with pytest.raises(TableError, match=r"model\.pkl is not a skops file .* pass --trust-pickle"):
        import_model(store, "plans", tmp_path / "model.pkl", path)
    assert not (tmp_path / "store" / "plans").exists()
    manifest = import_model(store, "plans", tmp_path / "model.pkl", path, "y", trust_pickle=True)
    stored = tmp_path / "store" / "plans" / manifest.version / "model.skops"
    assert stored.read_bytes()[:4] == b"PK\x03\x04"  # a skops archive, never a pickle
    again = sio.load(stored, trusted=sio.get_untrusted_types(file=stored))
    frame = df[["amount", "plan", "member"]]
    assert np.array_equal(again.predict_proba(frame), clf.predict_proba(frame))


def test_an_array_model_takes_the_sample_columns(tmp_path):
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(1)
    df = pd.DataFrame({"a": rng.normal(size=80), "b": rng.normal(size=80)})
    df["y"] = (df["a"] + df["b"] > 0).astype(int)
    df.to_csv(tmp_path / "s.csv", index=False)
    sio.dump(LogisticRegression().fit(df[["a", "b"]].to_numpy(), df["y"]), tmp_path / "m.skops")
    manifest = import_model(ModelStore(tmp_path / "store"), "arr", tmp_path / "m.skops", tmp_path / "s.csv", "y")
    assert manifest.input == "array" and manifest.feature_names == ("a", "b") and manifest.classes == ("0", "1")
    assert "sample_roc_auc" in manifest.metrics


@pytest.mark.parametrize("case, message", [
    ("no column", "sample sample.csv has no column 'plan', which the model takes"),
    ("no target", "target column 'label' is not in sample.csv"),
    ("not a model", "cannot unpickle model.pkl"),
    ("no probabilities", "SVC has no predict_proba"),
    ("cannot score", "the model cannot score sample.csv: ValueError"),
    # import has no --drop: the sample must hold what the model takes (it said "drop it (--drop plan)")
    ("empty column", (r"sample column 'plan' is empty \(no row has a value\); the model takes it, so give a "
                      r"sample in which it has values$")),
])
def test_errors_name_the_file_or_column(tmp_path, sample, case, message):
    from sklearn.svm import SVC

    df, path = sample
    features = ["amount", "plan", "member"]
    clf = lenient_pipeline().fit(df[features], df["y"])
    target = "y"
    if case == "no column":
        df.drop(columns=["plan"]).to_csv(path, index=False)
    elif case == "no target":
        target = "label"
    elif case == "not a model":
        (tmp_path / "model.pkl").write_bytes(b"\x80\x04not a pickle")
    elif case == "no probabilities":
        clf = SVC().fit(df[["amount"]].fillna(0), df["y"])
    elif case == "cannot score":
        df.assign(amount="lots").to_csv(path, index=False)
    elif case == "empty column":
        df.assign(plan=None).to_csv(path, index=False)
    if case != "not a model":
        (tmp_path / "model.pkl").write_bytes(pickle.dumps(clf))
    with pytest.raises(TableError, match=message):
        import_model(ModelStore(tmp_path / "store"), "m", tmp_path / "model.pkl", path, target, trust_pickle=True)
    assert not (tmp_path / "store" / "m").exists()


def test_a_type_the_server_refuses_is_refused_at_import(tmp_path, sample):
    """The same allowlist as the server's loader: a function skops does not trust is named and refused."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    df, path = sample
    columns = ColumnTransformer([("n", make_pipeline(FunctionTransformer(operator.neg), SimpleImputer()),
                                  ["amount"])])
    clf = Pipeline([("c", columns), ("m", LogisticRegression())]).fit(df[["amount"]], df["y"])
    sio.dump(clf, tmp_path / "m.skops")
    with pytest.raises(TableError, match=r"m\.skops: the server would refuse it: .*untrusted types: _operator\.neg"):
        import_model(ModelStore(tmp_path / "store"), "m", tmp_path / "m.skops", path)


def test_the_server_never_imports_the_unpickling_importer():
    """Only the `predmesh import` command loads inference/models/importer.py (the one place a user-trusted pickle
    is read); no module of the running server does."""
    pattern = re.compile(r"^\s*(from|import) .*\bimporter\b", re.MULTILINE)
    rooms = ("rpc", "process", "scoring", "recording")
    server = [p for room in rooms for p in (ROOT / "inference" / room).rglob("*.py")]
    server += [p for p in (ROOT / "inference" / "models").glob("*.py") if p.name != "importer.py"]
    assert server and [str(p.relative_to(ROOT)) for p in server if pattern.search(p.read_text())] == []


def coded_pipeline_and_sample(tmp_path):
    """A pipeline that one-hot encodes an integer plan code (a number in the sample) refusing unknown codes, beside
    a plain number; the sample as a CSV."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(3)
    df = pd.DataFrame({"amount": rng.normal(50, 15, 200), "plan code": rng.choice([1, 2, 3, 7], 200)})
    df["y"] = np.where((df["amount"] > 50) ^ (df["plan code"] == 7), "yes", "no")
    clf = Pipeline([("c", ColumnTransformer([("n", "passthrough", ["amount"]),
                                             ("p", OneHotEncoder(), ["plan code"])])),
                    ("m", LogisticRegression())]).fit(df[["amount", "plan code"]], df["y"])
    sio.dump(clf, tmp_path / "coded.skops")
    df.to_csv(tmp_path / "coded.csv", index=False)
    return clf, df


def test_a_number_the_model_takes_as_a_code_accepts_only_its_training_values(tmp_path):
    _, df = coded_pipeline_and_sample(tmp_path)
    manifest = import_model(ModelStore(tmp_path / "store"), "coded", tmp_path / "coded.skops",
                            tmp_path / "coded.csv", "y")
    amount, code = manifest.features
    assert (amount.kind, amount.categories) == ("number", ())  # any number scores
    assert code.kind == "number" and not code.accepts_unknown
    shares = df["plan code"].value_counts(normalize=True)
    assert dict(code.categories) == pytest.approx({str(k): v for k, v in shares.items()})


def test_a_code_the_model_never_saw_is_refused_at_the_edge_not_internal(model_store, tmp_path, inproc_server):
    """An integer code one-hot encoded with handle_unknown="error": 2.5 or 4 made scikit-learn raise inside the
    server (INTERNAL, HTTP 500); now INVALID_ARGUMENT naming the feature and its values, on every path."""
    from predmesh import Client
    from predmesh.errors import InvalidArgument

    clf, _ = coded_pipeline_and_sample(tmp_path)
    import_model(ModelStore(model_store), "coded", tmp_path / "coded.skops", tmp_path / "coded.csv", "y")
    _, target = inproc_server
    with Client(target, timeout=10, admin_token=ADMIN_TOKEN) as client:
        client.reload_model("coded")
        good = client.predict("coded", {"amount": 61.0, "plan code": 7})
        expected = clf.predict_proba(pd.DataFrame({"amount": [61.0], "plan code": [7]}))[0]
        assert [good.probabilities[c] for c in clf.classes_] == pytest.approx(expected, abs=1e-12)
        message = r"feature 'plan code' takes only the values the model was fitted on \(1, 2, 3, 7\); got 2\.5"
        with pytest.raises(InvalidArgument, match=message):
            client.predict("coded", {"amount": 61.0, "plan code": 2.5})
        each = client.predict_each("coded", [{"amount": 61.0, "plan code": 4}, {"amount": 61.0, "plan code": 3}])
        assert isinstance(each[0].error, InvalidArgument) and "got 4" in each[0].error.message
        assert each[1].prediction is not None
        scored = client.predict_matrix("coded", ["amount", "plan code"], [61.0, 4.0, 61.0, 1.0],
                                       partial_success=True)
        assert list(scored.errors) == [0] and "'plan code' takes only" in scored.errors[0].message
        with pytest.raises(InvalidArgument, match="row 0: feature 'plan code' takes only"):
            client.predict_matrix("coded", ["amount", "plan code"], [61.0, 4.0, 61.0, 1.0])


@pytest.mark.parametrize("booster", ["HistGradientBoostingClassifier", "GradientBoostingClassifier"])
def test_a_calibrated_booster_imports_and_serves_its_probabilities(booster, model_store, tmp_path, inproc_server):
    """CalibratedClassifierCV keeps its unfitted `estimator` template beside the fitted clones. The structure
    checks read the template's trees, so calibrated boosters were refused with an AttributeError ("failed its
    structure checks: AttributeError: 'HistGradientBoostingClassifier' object has no attribute 'n_features_in_'")
    while a calibrated forest or LogisticRegression imported."""
    from sklearn import ensemble
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    from predmesh import Client

    df = synthetic(300, label="str", classes=2).dropna()
    df.to_csv(tmp_path / "sample.csv", index=False)
    features = ["amount", "plan", "member"]
    estimator = getattr(ensemble, booster)(**({"max_iter": 20} if booster.startswith("Hist") else
                                               {"n_estimators": 20}), random_state=0)
    clf = Pipeline([("c", ColumnTransformer([("p", OneHotEncoder(handle_unknown="ignore"), ["plan", "member"])],
                                            remainder=SimpleImputer())),
                    ("m", CalibratedClassifierCV(estimator, cv=3))]).fit(df[features], df["y"])
    sio.dump(clf, tmp_path / "calibrated.skops")
    manifest = import_model(ModelStore(model_store), "calibrated", tmp_path / "calibrated.skops",
                            tmp_path / "sample.csv", "y")
    assert manifest.estimator == f"CalibratedClassifierCV({booster})"
    rows = df[features].head(10)  # the test server takes 10 rows a batch
    expected = clf.predict_proba(rows)
    _, target = inproc_server
    with Client(target, timeout=10, admin_token=ADMIN_TOKEN) as client:
        client.reload_model("calibrated")
        answers = client.predict_batch("calibrated", [
            {"amount": float(a), "plan": str(p), "member": bool(m)}
            for a, p, m in zip(rows["amount"].tolist(), rows["plan"].tolist(), rows["member"].tolist())])
    got = [[p.probabilities[c] for c in clf.classes_] for p in answers]
    assert np.allclose(got, expected, atol=1e-12, rtol=0)


@pytest.mark.parametrize("label", ["", "a\nb", "v" * 129], ids=["empty", "a newline", "129 characters"])
def test_a_class_label_feedback_could_never_name_is_refused_at_import(tmp_path, sample, label):
    # imported and served before, while SubmitFeedback refuses such a label: that class could never get feedback
    df, path = sample
    features = ["amount", "plan", "member"]
    clf = lenient_pipeline().fit(df[features], df["y"].replace({"maybe": label}))
    sio.dump(clf, tmp_path / "m.skops")
    with pytest.raises(TableError, match=r"m\.skops: class .* cannot be a class label"):
        import_model(ModelStore(tmp_path / "store"), "m", tmp_path / "m.skops", path)
    assert not (tmp_path / "store" / "m").exists()
