"""Training from a user's table, in process: column kinds, plain values, the profile a manifest records, what
probing finds an estimator accepts, every --estimator on small synthetic tables with string, integer and boolean
class labels (binary and multi-class), and the errors that name the column."""
from __future__ import annotations

import re
import shlex

import numpy as np
import pandas as pd
import pytest

from inference.models import profile
from inference.models.columns import TableError, kind_of, labels, plain_column, plain_rows
from inference.models.frame import to_frame
from inference.models.store import ModelStore
from inference.models.tabular import ESTIMATORS, describe, pipeline, train_table


def synthetic(n: int = 120, label: str = "str", classes: int = 2, seed: int = 0) -> pd.DataFrame:
    """A table with a number with gaps, a category with gaps, a boolean and a class that depends on all three."""
    rng = np.random.default_rng(seed)
    amount = rng.normal(50, 15, n)
    plan = rng.choice(["basic", "plus", "pro"], n).astype(object)
    member = rng.random(n) < 0.4
    score = (amount - 50) / 15 + (plan == "pro") * 1.0 - member * 0.8 + rng.normal(0, 0.3, n)
    k = np.digitize(score, np.quantile(score, np.linspace(0, 1, classes + 1)[1:-1]))
    amount[rng.random(n) < 0.08] = np.nan
    plan[rng.random(n) < 0.08] = None
    target = {"str": np.array(["no", "yes", "maybe"])[k], "int": k, "bool": k.astype(bool)}[label]
    return pd.DataFrame({"amount": amount, "plan": plan, "member": member, "customer": np.arange(n), "y": target})


def test_column_kinds():
    df = pd.DataFrame({"n": [1.5, None, 2.0], "i": [1, 2, 3], "b": [True, False, True], "bs": ["true", "False", None],
                       "bo": pd.Series([True, None, False], dtype=object), "c": ["a", None, "b"]})
    assert [kind_of(df[c]) for c in df.columns] == ["number", "number", "boolean", "boolean", "boolean", "category"]


@pytest.mark.parametrize("column, message", [
    (pd.Series([None, None], name="gone", dtype=object), "column 'gone' is empty"),
    (pd.Series([f"id-{i}" for i in range(200)], name="email"), "column 'email' has 200 distinct text values"),
    (pd.Series(pd.to_datetime(["2024-01-01", "2024-02-01"]), name="signup"), "column 'signup' holds dates"),
    (pd.Series([f"C{i:06d}" for i in range(200)], name="Customer ID"), "column 'Customer ID' has 200 distinct"),
    (pd.Series([None, None], name="Date d'entrée", dtype=object), "column \"Date d'entrée\" is empty"),
])
def test_columns_that_are_no_feature_are_named(column, message):
    """The hint is an option to paste: a name with a space or a quote is shell-quoted (`--drop Customer ID` would
    drop 'Customer' and fail on 'ID')."""
    with pytest.raises(TableError, match=message) as raised:
        kind_of(column)
    hint = re.search(r"\((--drop .*)\)$", str(raised.value))
    assert hint is not None and shlex.split(hint.group(1)) == ["--drop", column.name]


def test_plain_values_and_the_frame_they_make():
    df = pd.DataFrame({"n": [1, None, 3], "c": ["x", None, "y"], "b": ["TRUE", None, "false"]})
    rows = plain_rows(df, ["n", "c", "b"], ["number", "category", "boolean"])
    assert rows.tolist() == [[1.0, "x", True], [None, None, None], [3.0, "y", False]]
    assert plain_column(pd.Series([2, 5]), "number").tolist() == [2.0, 5.0]
    schema = profile.typed_features(rows, ["n", "c", "b"], ["number", "category", "boolean"])
    frame = to_frame(rows, schema)
    assert str(frame["n"].dtype) == "float64" and frame["c"].isna().tolist() == [False, True, False]


def test_labels_keep_their_type():
    assert labels(pd.DataFrame({"y": [1.0, 0.0, 2.0]}), "y").tolist() == [1, 0, 2]
    assert labels(pd.DataFrame({"y": ["a", "b"]}), "y").tolist() == ["a", "b"]
    assert labels(pd.DataFrame({"y": [True, False]}), "y").dtype == bool
    with pytest.raises(TableError, match="target column 'y' holds non-integer numbers"):
        labels(pd.DataFrame({"y": [0.5, 1.0]}), "y")


def test_profile_of_each_kind():
    rows = np.array([[1.0, "a", True], [None, "a", False], [3.0, "b", None], [4.0, None, True]], dtype=object)
    number, category, boolean = profile.typed_features(rows, ["n", "c", "b"], ["number", "category", "boolean"])
    assert (number.min, number.max, number.missing_share) == (1.0, 4.0, 0.25)
    assert len(number.quantiles) == 9 and sum(number.shares) == pytest.approx(1.0)
    assert category.kind == "category" and category.categories == (("a", 2 / 3), ("b", 1 / 3))
    assert category.missing_share == 0.25
    assert boolean.categories == (("false", 1 / 3), ("true", 2 / 3)) and boolean.mean == pytest.approx(2 / 3)


def test_probing_finds_what_the_estimator_accepts():
    """A pipeline that imputes accepts a missing value; one that does not is refused it; a one-hot encoder that
    ignores unknown categories accepts an unseen one, and one that errors does not."""
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    df = synthetic()
    df = df[df["plan"].notna() & df["amount"].notna()]
    names, kinds = ["amount", "plan"], ["number", "category"]
    rows = plain_rows(df, names, kinds)
    schema = profile.typed_features(rows, names, kinds)
    strict = Pipeline([("c", ColumnTransformer([("n", "passthrough", ["amount"]),
                                                ("p", OneHotEncoder(handle_unknown="error"), ["plan"])])),
                       ("m", LogisticRegression())]).fit(to_frame(rows, schema), df["y"])
    lenient = Pipeline([("c", ColumnTransformer([
        ("n", SimpleImputer(), ["amount"]),
        ("p", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
         ["plan"])])), ("m", LogisticRegression())]).fit(to_frame(rows, schema), df["y"])
    for clf, accepts in ((strict, False), (lenient, True)):
        amount, plan = profile.probe(profile.scorer(clf, schema, "frame"), rows, schema)
        assert (amount.nullable, plan.nullable, plan.accepts_unknown) == (accepts, accepts, accepts)
        assert not amount.accepts_unknown  # a number has no categories to be unknown to


def test_every_estimator_choice_has_help_in_the_command():
    from inference.__main__ import ESTIMATOR_HELP

    assert list(ESTIMATOR_HELP) == list(ESTIMATORS)


# every estimator once; string, integer and boolean labels, two and three classes, each several times
@pytest.mark.parametrize("estimator, label, classes", [
    ("lr", "str", 2), ("rf", "int", 3), ("et", "bool", 2), ("gb", "str", 3), ("hgb", "str", 3),
    ("svc", "bool", 2), ("knn", "int", 3),
])
def test_train_each_estimator_and_label_type(tmp_path, estimator, label, classes):
    df = synthetic(label=label, classes=classes)
    data = tmp_path / "table.csv"
    df.to_csv(data, index=False)
    manifest = train_table(ModelStore(tmp_path / "store"), data, "y", "m", estimator, drop=["customer"])
    expected = {"str": ["maybe", "no", "yes"], "int": ["0", "1", "2"], "bool": ["False", "True"]}[label]
    expected = expected[:classes] if label != "str" else sorted(["no", "yes", "maybe"][:classes])
    assert list(manifest.classes) == expected and manifest.input == "frame"
    assert [(f.name, f.kind) for f in manifest.features] == [("amount", "number"), ("plan", "category"),
                                                             ("member", "boolean")]
    assert describe(manifest.features) == "3 features: 1 number, 1 category, 1 boolean"
    assert all(f.nullable for f in manifest.features)  # imputed (or, HistGradientBoosting, native)
    assert manifest.features[1].accepts_unknown  # one-hot ignoring unknowns, or ordinal-encoded as missing
    assert ("holdout_roc_auc" in manifest.metrics) == (classes == 2)
    assert manifest.metrics["holdout_accuracy"] > 0.5 and "holdout_macro_recall" in manifest.metrics
    assert [p.label for p in manifest.class_profiles] == expected
    assert sum(p.share for p in manifest.class_profiles) == pytest.approx(1.0)
    # the golden rows are plain values (JSON), with a missing one among them, scored as recorded
    assert any(v is None for g in manifest.golden for v in g["features"])
    stored = ModelStore(tmp_path / "store").root / "m" / "1" / "model.skops"
    import skops.io as sio
    clf = sio.load(stored, trusted=sio.get_untrusted_types(file=stored))
    got = clf.predict_proba(to_frame([g["features"] for g in manifest.golden], manifest.features))
    assert np.allclose(got, [g["probabilities"] for g in manifest.golden], atol=1e-12, rtol=0)


@pytest.mark.parametrize("change, message", [
    ({"target": "nope"}, "target column 'nope' is not in table.csv"),
    ({"drop": ["nope"]}, "--drop column 'nope' is not in table.csv"),
    ({"drop": ["y"]}, "target column 'y' cannot be dropped"),
    ({"target": "empty"}, "target column 'empty' is empty"),
    ({"target": "single"}, "target column 'single' has one class only"),
    ({"target": "lonely"}, "target column 'lonely': class 'b' has one row"),
    ({"drop": ["customer"]}, "column 'empty' is empty"),
])
def test_errors_name_the_column(tmp_path, change, message):
    df = synthetic()
    df["empty"] = None
    df["single"] = "same"
    df["lonely"] = ["a"] * (len(df) - 1) + ["b"]
    data = tmp_path / "table.csv"
    df.to_csv(data, index=False)
    args = {"target": "y", "drop": ["customer", "empty", "single", "lonely"]} | change
    if "target" in change:
        args["drop"] = [c for c in args["drop"] if c != change["target"]]
    with pytest.raises(TableError, match=message):
        train_table(ModelStore(tmp_path / "store"), data, args["target"], "m", "lr", drop=args["drop"])
    assert not (tmp_path / "store" / "m").exists()


def test_unreadable_files_are_named(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not parquet")
    with pytest.raises(TableError, match=r"cannot read .*bad\.parquet"):
        train_table(ModelStore(tmp_path / "store"), bad, "y", "m")
    with pytest.raises(TableError, match=r"cannot read .*missing\.csv: no such file"):
        train_table(ModelStore(tmp_path / "store"), tmp_path / "missing.csv", "y", "m")


def test_hist_gradient_boosting_takes_categories_natively():
    clf = pipeline("hgb", ["amount", "plan", "member"], ["number", "category", "boolean"])
    assert list(clf[-1].categorical_features) == [0, 1]
    assert profile.estimator_name(pipeline("svc", ["a"], ["number"])) == "CalibratedClassifierCV(SVC)"


def test_a_parquet_file_with_pandas_nullable_dtypes_trains_and_imports(tmp_path):
    """pandas writes its nullable dtypes into Parquet (convert_dtypes(), dtype_backend="numpy_nullable"): a
    "boolean" column with <NA> made train and import end in a traceback (TypeError: boolean value of NA is
    ambiguous); Int64, category and string columns with gaps come along."""
    import skops.io as sio
    from sklearn.compose import ColumnTransformer
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline, make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    from inference.models.importer import import_model

    df = synthetic(200)
    df["member"] = df["member"].astype("boolean")
    df.loc[::7, "member"] = pd.NA
    df["count"] = pd.array([None if i % 9 == 0 else i % 5 for i in range(len(df))], dtype="Int64")
    df["plan"] = df["plan"].astype("category")
    df["y"] = df["y"].astype("string")
    df.to_parquet(tmp_path / "nullable.parquet")
    manifest = train_table(ModelStore(tmp_path / "store"), tmp_path / "nullable.parquet", "y", "m", "lr",
                           drop=["customer"])
    kinds = {f.name: (f.kind, round(f.missing_share, 3)) for f in manifest.features}
    assert kinds == {"amount": ("number", round(df["amount"].isna().mean(), 3)),
                     "plan": ("category", round(df["plan"].isna().mean(), 3)),
                     "member": ("boolean", round(df["member"].isna().mean(), 3)),
                     "count": ("number", round(df["count"].isna().mean(), 3))}
    features = ["amount", "plan", "member"]
    clf = Pipeline([("c", ColumnTransformer([
        ("n", SimpleImputer(), ["amount"]),
        ("p", make_pipeline(SimpleImputer(strategy="most_frequent"), OneHotEncoder(handle_unknown="ignore")),
         ["plan", "member"])])), ("m", LogisticRegression())])
    fit = df[features].astype(object)
    clf.fit(fit.where(fit.notna(), np.nan), df["y"])  # scikit-learn's own imputer does not take pd.NA
    sio.dump(clf, tmp_path / "m.skops")
    imported = import_model(ModelStore(tmp_path / "store"), "imported", tmp_path / "m.skops",
                            tmp_path / "nullable.parquet", "y")
    assert [(f.name, f.kind) for f in imported.features] == [("amount", "number"), ("plan", "category"),
                                                              ("member", "boolean")]


def test_blank_cells_are_missing_values_as_in_the_batch(tmp_path):
    """A spreadsheet export writes " " for no value (the Telco churn data's TotalCharges): pandas then reads the
    whole column as text, and train refused the user's main number as "an identifier or free text … drop it".
    Blank cells are missing values, as `predmesh batch score` reads them."""
    df = synthetic(200)
    df["amount"] = df["amount"].round(2).astype(object)
    df.loc[df["amount"].isna(), "amount"] = " "
    df["plan"] = df["plan"].astype(object)
    df.loc[df["plan"].isna(), "plan"] = "  "
    df.to_csv(tmp_path / "blanks.csv", index=False)
    manifest = train_table(ModelStore(tmp_path / "store"), tmp_path / "blanks.csv", "y", "m", "lr",
                           drop=["customer"])
    features = {f.name: f for f in manifest.features}
    assert features["amount"].kind == "number" and features["amount"].missing_share == pytest.approx(
        (df["amount"] == " ").mean())
    assert features["plan"].kind == "category" and set(features["plan"].category_names) == {"basic", "plus", "pro"}


def test_a_number_column_with_a_few_words_says_which_cells_are_not_numbers(tmp_path):
    df = synthetic(200)
    df["amount"] = df["amount"].astype(object)
    df.loc[df["amount"].isna(), "amount"] = "unknown"
    df.to_csv(tmp_path / "words.csv", index=False)
    with pytest.raises(TableError, match=r"column 'amount' is text: \d+ of its 200 values are numbers, but \d+ are "
                                         r"not \('unknown'\); make those cells empty \(missing\) or numbers"):
        train_table(ModelStore(tmp_path / "store"), tmp_path / "words.csv", "y", "m", "lr", drop=["customer"])


@pytest.mark.parametrize("label", ["a\nb", "v" * 129], ids=["a newline", "129 characters"])
def test_a_class_label_feedback_could_never_name_is_refused(tmp_path, label):
    # such a class trained and served, but SubmitFeedback (and the label filter) refuse its label: its rows could
    # never be given feedback, so the model's accuracy could never be measured on them
    df = synthetic()
    df["y"] = df["y"].replace({"yes": label})
    data = tmp_path / "table.csv"
    df.to_csv(data, index=False)
    with pytest.raises(TableError, match=r"target column 'y': class .* cannot be a class label: feedback and the "
                                         r"label filter take 1 to 128 printable characters"):
        train_table(ModelStore(tmp_path / "store"), data, "y", "m", "lr", drop=["customer"])
    assert not (tmp_path / "store" / "m").exists()
