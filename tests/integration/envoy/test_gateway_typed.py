"""Typed features (numbers, categories, booleans, null) as natural JSON through a real Envoy in front of a real
server serving the typed fixture: the pipeline's own probabilities (to 1e-9), every validation case of DESIGN-22
§4 a 400 naming the feature (never a 5xx), and the typed schema in GetModel."""
from __future__ import annotations

import shutil

import numpy as np
import pytest

from inference.models.frame import to_frame
from tests.support.gateway import GatewayProc, rest
from tests.support.procs import ServerProc
from tests.support.typed_model import write_typed_model
from tests.support.typed_strict import write_strict_model

pytestmark = pytest.mark.envoy

FEATURES = ("tenure", "monthly", "contract", "senior")
ROW: dict[str, object] = {"tenure": 1, "monthly": 29.85, "contract": "Month-to-month", "senior": True}


@pytest.fixture(scope="module")
def typed_mesh(trained_store, tmp_path_factory):
    """A server over the Iris store plus churn (the typed fixture) and strict (monthly not nullable, unknown
    categories refused), and a gateway in front of it; yields (gateway, manifest, pipeline)."""
    tmp = tmp_path_factory.mktemp("gw-typed")
    root = tmp / "models"
    shutil.copytree(trained_store, root)
    manifest, pipeline = write_typed_model(root)
    write_strict_model(root)
    env = {"PREDMESH_DATABASE_URL": f"sqlite:///{tmp}/predmesh.db"}
    with ServerProc(root, tmp / "server.log", env=env) as server, GatewayProc([server.target], tmp / "gw") as gw:
        yield gw, manifest, pipeline


def expected(manifest, pipeline, rows: list[dict]) -> np.ndarray:
    plain = [[None if row[n] is None else (float(row[n]) if n in ("tenure", "monthly") else row[n])
              for n in FEATURES] for row in rows]
    return pipeline.predict_proba(to_frame(plain, manifest.features))


def probabilities(prediction: dict, classes) -> list[float]:
    return [prediction["probabilities"][c] for c in classes]


@pytest.mark.parametrize("row", [
    ROW,
    {"tenure": None, "monthly": 56.95, "contract": None, "senior": None},   # every nullable feature missing
    {"tenure": 40.5, "monthly": 80, "contract": "Two year", "senior": False},
    {"tenure": 3, "monthly": 50, "contract": "Ten year", "senior": True},  # unseen: scored (accepts_unknown)
], ids=["typed", "nulls", "ints-and-floats", "unseen-category"])
def test_typed_json_scores_as_the_pipeline_does(typed_mesh, row):
    gw, manifest, pipeline = typed_mesh
    resp = rest("POST", gw.url + "/v1/models/churn:predict", json={"features": row})
    assert resp.status_code == 200, resp.text
    prediction = resp.json()["prediction"]
    want = expected(manifest, pipeline, [row])[0]
    assert np.abs(np.array(probabilities(prediction, manifest.classes)) - want).max() <= 1e-9
    assert prediction["label"] == manifest.classes[int(want.argmax())]


def test_typed_batch_rows(typed_mesh):
    gw, manifest, pipeline = typed_mesh
    rows: list[dict] = [ROW, {"tenure": None, "monthly": 56.95, "contract": None, "senior": False},
            {"tenure": 45, "monthly": 42.3, "contract": "One year", "senior": True}]
    resp = rest("POST", gw.url + "/v1/models/churn:predictBatch", json={"rows": [{"features": r} for r in rows]})
    assert resp.status_code == 200, resp.text
    got = [probabilities(p, manifest.classes) for p in resp.json()["predictions"]]
    want = expected(manifest, pipeline, rows)
    assert np.abs(np.array(got) - want).max() <= 1e-9


def test_typed_matrix_with_string_columns(typed_mesh):
    gw, manifest, pipeline = typed_mesh
    # the columnar form: numbers and booleans (0/1, "NaN" missing) in values, the category as a string column
    matrix = {"feature_names": ["tenure", "monthly", "senior"],
              "values": [1, 29.85, 1, "NaN", 56.95, 0, 45, 42.3, 1],
              "string_columns": [{"name": "contract", "values": ["Month-to-month", "", "One year"],
                                  "missing_rows": [1]}],
              "request_id_prefix": "typed-m-", "row_numbers": [0, 1, 2]}
    resp = rest("POST", gw.url + "/v1/models/churn:predictBatch", json={"matrix": matrix})
    assert resp.status_code == 200, resp.text
    m = resp.json()["matrix"]
    columns: list[dict] = [dict(zip(FEATURES, (1, 29.85, "Month-to-month", True))),
               dict(zip(FEATURES, (None, 56.95, None, False))),
               dict(zip(FEATURES, (45, 42.3, "One year", True)))]
    got_m = np.array(m["probabilities"]).reshape(3, len(m["classes"]))
    assert m["classes"] == list(manifest.classes)
    assert np.abs(got_m - expected(manifest, pipeline, columns)).max() <= 1e-9


# DESIGN-22 §4 over REST: (case, model, features changed from ROW, the words the 400 must hold)
CASES = [
    ("string for a number", "churn", {"tenure": "abc"}, "feature 'tenure' is a number; got the string 'abc'"),
    ("bool for a number", "churn", {"monthly": True}, "feature 'monthly' is a number; got true"),
    ("numeric string for a number", "churn", {"monthly": "12"}, "feature 'monthly' is a number"),
    ("null for a non-nullable number", "strict", {"monthly": None},
     "feature 'monthly' is missing (null) and this model cannot impute it"),
    ("NaN string", "churn", {"monthly": "NaN"}, "feature 'monthly'"),
    ("number for a category", "churn", {"contract": 3}, "feature 'contract' is categorical"),
    ("bool for a category", "churn", {"contract": False}, "feature 'contract' is categorical"),
    ("unknown category where refused", "strict", {"contract": "Ten year"},
     "feature 'contract' has no category 'Ten year'; expected one of"),
    ("string for a boolean", "churn", {"senior": "true"}, "feature 'senior' is a boolean; send true or false"),
    ("number for a boolean", "churn", {"senior": 1}, "feature 'senior' is a boolean; send true or false"),
    ("list value", "churn", {"contract": ["One year"]}, "feature 'contract' is a list"),
    ("object value", "churn", {"tenure": {"v": 1}}, "feature 'tenure'"),
    ("out of range", "churn", {"monthly": 1e12}, "feature 'monthly'"),
    ("unknown feature", "churn", {"colour": "red"}, "unknown feature 'colour'"),
    # PostgreSQL's jsonb cannot store U+0000: refused at the edge rather than answered and then not stored
    ("NUL in an unseen category", "churn", {"contract": "Ten\u0000year"},
     "feature 'contract' contains the character U+0000, which a stored prediction cannot hold"),
    ("NUL in a category where unknown ones are refused", "strict", {"contract": "\u0000"},
     "feature 'contract' contains the character U+0000"),
]


@pytest.mark.parametrize("model, change, words", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_every_validation_case_is_400_naming_the_feature(typed_mesh, model, change, words):
    gw, *_ = typed_mesh
    resp = rest("POST", gw.url + f"/v1/models/{model}:predict", json={"features": {**ROW, **change}})
    assert resp.status_code == 400, (resp.status_code, resp.text)
    body = resp.json()
    assert body["code"] == 3 and words in body["message"], body
    batch = rest("POST", gw.url + f"/v1/models/{model}:predictBatch",
                 json={"rows": [{"features": ROW}, {"features": {**ROW, **change}}], "partial_success": True})
    assert batch.status_code == 200, batch.text
    ok, refused = batch.json()["results"]
    assert "prediction" in ok and refused["error"]["code"] == 3 and words in refused["error"]["message"]


def test_a_missing_feature_is_400_naming_it(typed_mesh):
    gw, *_ = typed_mesh
    row = {k: v for k, v in ROW.items() if k != "senior"}
    resp = rest("POST", gw.url + "/v1/models/churn:predict", json={"features": row})
    assert resp.status_code == 400 and "feature 'senior' is missing" in resp.json()["message"], resp.text


def test_get_model_describes_kinds_categories_and_nullability(typed_mesh):
    gw, manifest, _ = typed_mesh
    resp = rest("GET", gw.url + "/v1/models/churn")
    assert resp.status_code == 200, resp.text
    specs = {f["name"]: f for f in resp.json()["model"]["features"]}
    assert [specs[n]["kind"] for n in FEATURES] == ["FEATURE_KIND_NUMBER", "FEATURE_KIND_NUMBER",
                                                    "FEATURE_KIND_CATEGORY", "FEATURE_KIND_BOOLEAN"]
    contract = next(f for f in manifest.features if f.name == "contract")
    assert [(c["value"], c["share"]) for c in specs["contract"]["categories"]] == list(contract.categories)
    assert specs["contract"]["nullable"] is True and specs["contract"]["accepts_unknown"] is True
    assert specs["monthly"]["nullable"] is False
    assert abs(specs["tenure"]["missing_share"] - next(f for f in manifest.features
                                                       if f.name == "tenure").missing_share) < 1e-12


def test_a_nul_in_a_matrix_string_column_is_400_naming_the_feature(typed_mesh):
    gw, *_ = typed_mesh
    matrix = {"feature_names": ["tenure", "monthly", "senior"], "values": [1, 29.85, 1, 2, 56.95, 0],
              "string_columns": [{"name": "contract", "values": ["Month-to-month", "One\u0000year"]}],
              "request_id_prefix": "nul-m-", "row_numbers": [0, 1]}
    resp = rest("POST", gw.url + "/v1/models/churn:predictBatch", json={"matrix": matrix})
    assert resp.status_code == 400, resp.text
    assert "row 1: feature 'contract' contains the character U+0000" in resp.json()["message"], resp.text
    partial = rest("POST", gw.url + "/v1/models/churn:predictBatch",
                   json={"matrix": matrix, "partial_success": True})
    assert partial.status_code == 200, partial.text
    [error] = partial.json()["matrix"]["row_errors"]
    assert error["row"] == 1 and "feature 'contract' contains the character U+0000" in error["error"]["message"]
