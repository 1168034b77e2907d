"""Feature names and categories sent in another Unicode normalisation form than the model's (NFD, as macOS file
names and some editors write "é": "e" + U+0301) are the model's own: the same text, so the same features and
categories, on the rows and the columnar paths; before, the name was an "unknown feature" whose message showed
the very name the model lists, and an accents-decomposed category was silently scored as an unseen one."""
from __future__ import annotations

import unicodedata

import numpy as np
import pandas as pd
import pytest
import skops.io as sio

from inference.models.importer import import_model
from inference.models.store import ModelStore
from tests.support.procs import ADMIN_TOKEN

REGION, CITIES = "Région", ["Zürich", "São Paulo", "Île-de-France", "Bayern"]


def nfd(text: str) -> str:
    return unicodedata.normalize("NFD", text)


@pytest.fixture
def regions(model_store, tmp_path):
    """A pipeline fitted on NFC text that one-hot encodes the region, ignoring unknown ones (so an unseen region
    scores, as all zeros), imported into the store."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    rng = np.random.default_rng(5)
    df = pd.DataFrame({"âge": rng.normal(40, 10, 300), REGION: rng.choice(CITIES, 300)})
    df["y"] = np.where((df[REGION] == "Zürich") | (df["âge"] > 50), "yes", "no")
    clf = Pipeline([("c", ColumnTransformer([("n", "passthrough", ["âge"]),
                                             ("r", OneHotEncoder(handle_unknown="ignore"), [REGION])])),
                    ("m", LogisticRegression())]).fit(df[["âge", REGION]], df["y"])
    sio.dump(clf, tmp_path / "regions.skops")
    df.to_csv(tmp_path / "regions.csv", index=False)
    import_model(ModelStore(model_store), "regions", tmp_path / "regions.skops", tmp_path / "regions.csv", "y")
    return clf


def test_names_and_categories_in_another_normal_form_are_the_models(regions, inproc_server):
    from predmesh import Client
    from predmesh.errors import InvalidArgument

    _, target = inproc_server
    expected = regions.predict_proba(pd.DataFrame({"âge": [30.0], REGION: ["Zürich"]}))[0]
    unseen = regions.predict_proba(pd.DataFrame({"âge": [30.0], REGION: ["nowhere"]}))[0]
    assert not np.allclose(expected, unseen)  # a decomposed Zürich scored as unseen would be a wrong answer
    with Client(target, timeout=10, admin_token=ADMIN_TOKEN) as client:
        client.reload_model("regions")
        composed: dict[str, float | str] = {"âge": 30.0, REGION: "Zürich"}
        for features in (composed, {nfd(k): nfd(v) if isinstance(v, str) else v for k, v in composed.items()}):
            p = client.predict("regions", features)
            assert [p.probabilities[c] for c in regions.classes_] == pytest.approx(expected, abs=1e-12)
            stored = client.predict_each("regions", [features])[0].prediction
            assert stored is not None and stored.probabilities == pytest.approx(p.probabilities, abs=1e-12)
        scored = client.predict_matrix("regions", [nfd("âge")], [30.0, 30.0],
                                       string_columns={nfd(REGION): [nfd("Zürich"), "Zürich"]})
        probabilities = np.asarray(scored.probabilities).reshape(2, -1)
        assert np.allclose(probabilities, [expected, expected], atol=1e-12, rtol=0)
        with pytest.raises(InvalidArgument, match="feature 'Région' is sent twice"):
            client.predict("regions", {"âge": 30.0, REGION: "Bayern", nfd(REGION): "Bayern"})
        with pytest.raises(InvalidArgument, match="unknown feature 'Region'"):  # no accent is another name
            client.predict("regions", {"âge": 30.0, "Region": "Bayern"})


def test_a_decomposed_category_is_not_scored_as_an_unseen_one(regions, inproc_server):
    """The silent case: the model accepts unknown regions, so before, nfd("Zürich") was answered (200) with the
    probabilities of an unknown region."""
    from predmesh import Client

    _, target = inproc_server
    expected = regions.predict_proba(pd.DataFrame({"âge": [30.0], REGION: ["Zürich"]}))[0]
    with Client(target, timeout=10, admin_token=ADMIN_TOKEN) as client:
        client.reload_model("regions")
        p = client.predict("regions", {"âge": 30.0, REGION: nfd("Zürich")})
        assert [p.probabilities[c] for c in regions.classes_] == pytest.approx(expected, abs=1e-12)
        scored = client.predict_matrix("regions", ["âge"], [30.0], string_columns={REGION: [nfd("Zürich")]})
        assert np.allclose(scored.probabilities, expected, atol=1e-12, rtol=0)


def test_a_batch_file_with_a_decomposed_header_and_categories_scores(regions, inproc_server, tmp_path):
    """`predmesh batch score` of a CSV written on macOS (NFD header and cells): before, exit 2 "the input lacks
    the feature column(s) Région of the model (it has Région, …)"."""
    import csv

    from tests.support.batch import batch_env, run_batch

    _, target = inproc_server
    from predmesh import Client

    with Client(target, timeout=10, admin_token=ADMIN_TOKEN) as client:
        client.reload_model("regions")
    source = tmp_path / "mac.csv"
    with open(source, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([[nfd("âge"), nfd(REGION)], ["30", nfd("Zürich")], ["55", nfd("São Paulo")]])
    result = run_batch(["score", "--model", "regions", "--input", str(source), "--output", str(tmp_path / "o.csv")],
                       batch_env(target, tmp_path / "batch"))
    assert result.returncode == 0, result.stderr
    with open(tmp_path / "o.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0])[:2] == [nfd("âge"), nfd(REGION)]  # the user's header is kept
    expected = regions.predict_proba(pd.DataFrame({"âge": [30.0, 55.0], REGION: ["Zürich", "São Paulo"]}))
    got = [[float(r[f"prob_{c}"]) for c in regions.classes_] for r in rows]
    assert np.allclose(got, expected, atol=1e-9, rtol=0)
