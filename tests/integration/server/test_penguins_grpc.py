"""Penguins served through a real gRPC server and scored with the SDK: a model trained with `predmesh train
--data penguins.csv` and a HistGradientBoosting pipeline fitted by hand and brought in with `predmesh import`.
Every row, sent as plain values (None where the CSV has a gap), answers with the probabilities the pipeline gives in
process (to 1e-9), by rows and by columns (predict_matrix with string columns); the model describes its typed
schema; a value of the wrong kind is INVALID_ARGUMENT naming the feature."""
from __future__ import annotations

import math
import pickle
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from predmesh import Client, InvalidArgument
from tests.support import penguins
from tests.support.procs import ServerProc
from tests.support.tabular import own_pipeline, run

TOLERANCE = 1e-9


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[Client, dict]]:
    """A server over a store holding 'penguins' (trained from the CSV, one-hot + LogisticRegression) and
    'penguins_hgb' (the hand-fitted pipeline, imported from a pickle with --trust-pickle); yields a client and
    each model's in-process pipeline."""
    root = tmp_path_factory.mktemp("penguins")
    store = root / "models"
    trained = run("train", "--data", penguins.csv_path(), "--target", "species", "--model", "penguins",
                  "--estimator", "lr", store=store)
    assert trained.returncode == 0, trained.stderr
    hand = penguins.fitted_hgb()
    (root / "hgb.pkl").write_bytes(pickle.dumps(hand))
    imported = run("import", "--model", "penguins_hgb", root / "hgb.pkl", "--data", penguins.csv_path(),
                   "--target", "species", "--trust-pickle", store=store)
    assert imported.returncode == 0, imported.stderr
    pipelines = {"penguins": own_pipeline(store, "penguins", "1"), "penguins_hgb": hand}
    with ServerProc(store, root / "server.log") as proc, Client(proc.target, timeout=30.0) as client:
        yield client, pipelines


def row_dicts(names) -> list[dict[str, object]]:
    df = penguins.table()
    return [{n: (None if isinstance(v, float) and math.isnan(v) else v) for n, v in zip(names, values)}
            for values in df[list(names)].itertuples(index=False)]


@pytest.mark.parametrize("model", ["penguins", "penguins_hgb"])
def test_every_row_scores_as_the_pipeline_does(served, model):
    client, pipelines = served
    info = client.get_model(model)
    assert info.classes == ("Adelie", "Chinstrap", "Gentoo")
    expected = pipelines[model].predict_proba(penguins.table()[list(info.feature_names)])
    rows = row_dicts(info.feature_names)
    got = []
    for start in range(0, len(rows), 100):
        scored = client.predict_batch(model, rows[start:start + 100])
        got += [[p.probabilities[c] for c in info.classes] for p in scored]
    assert np.max(np.abs(np.asarray(got) - expected)) <= TOLERANCE
    one = client.predict(model, rows[3])  # the row the CSV has no measurement and no sex for
    assert all(rows[3][n] is None for n in (*penguins.NUMBERS[:4], "sex"))
    assert [one.probabilities[c] for c in info.classes] == pytest.approx(expected[3], abs=TOLERANCE, rel=0)


@pytest.mark.parametrize("model", ["penguins", "penguins_hgb"])
def test_columns_with_string_columns_score_the_same(served, model):
    client, pipelines = served
    info = client.get_model(model)
    df = penguins.table()
    numbers = [f.name for f in info.features if f.kind == "number"]
    values = df[numbers].to_numpy(dtype=np.float64).ravel().tolist()
    strings = {c: [None if isinstance(v, float) else str(v) for v in df[c]] for c in penguins.CATEGORIES}
    scored = client.predict_matrix(model, numbers, values, string_columns=strings)
    got = np.asarray(scored.probabilities).reshape(len(df), len(scored.classes))
    expected = pipelines[model].predict_proba(df[list(info.feature_names)])
    assert scored.classes == info.classes and np.max(np.abs(got - expected)) <= TOLERANCE


def test_the_schema_is_typed(served):
    client, _ = served
    for model in ("penguins", "penguins_hgb"):
        features = {f.name: f for f in client.get_model(model).features}
        assert features["island"].kind == "category" and features["island"].category_names == (
            "Biscoe", "Dream", "Torgersen")
        assert features["sex"].missing_share == pytest.approx(11 / 344) and features["sex"].nullable
        assert features["body_mass_g"].kind == "number" and features["body_mass_g"].nullable
        assert features["island"].accepts_unknown


def test_an_unseen_island_is_scored_and_a_number_for_it_is_refused(served):
    client, pipelines = served
    names = client.get_model("penguins_hgb").feature_names
    row = row_dicts(names)[0] | {"island": "Anvers"}
    got = client.predict("penguins_hgb", row)
    expected = pipelines["penguins_hgb"].predict_proba(pd.DataFrame([row], columns=list(names)))
    assert list(got.probabilities.values()) == pytest.approx(expected[0], abs=TOLERANCE, rel=0)
    with pytest.raises(InvalidArgument, match="feature 'island' is categorical"):
        client.predict("penguins_hgb", row | {"island": 3})
    with pytest.raises(InvalidArgument, match="feature 'bill_length_mm' is a number"):
        client.predict("penguins", row | {"bill_length_mm": "long"})

