"""JSON shapes that Envoy's transcoder turns into protobuf defaults or undecodable bytes: a missing value is never
scored as 0.0, and every client mistake is a 4xx (never 5xx), through a real Envoy in front of a real server."""
from __future__ import annotations

import pytest
import requests

from tests.conftest import IRIS_ROW
from tests.support.gateway import GatewayProc
from tests.support.procs import ServerProc

pytestmark = pytest.mark.envoy


@pytest.fixture(scope="module")
def gateway(trained_store, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gw-shapes")
    env = {"PREDMESH_DATABASE_URL": f"sqlite:///{tmp}/predmesh.db"}
    with ServerProc(trained_store, tmp / "server.log", env=env) as server:
        with GatewayProc([server.target], tmp / "gw") as gw:
            yield gw


def _row(**changes):
    return {**IRIS_ROW, **changes}


# (case, path, body, expected HTTP status, text the message must contain)
CASES = [
    ("null feature", ":predict", {"features": _row(petal_width=None)}, 400,
     "feature 'petal_width' is missing (null) and this model cannot impute it"),
    ("null feature, batch row 1", ":predictBatch",
     {"rows": [{"features": IRIS_ROW}, {"features": _row(sepal_length=None)}]}, 400,
     "row 1: feature 'sepal_length' is missing (null)"),
    ("null feature among others, key order", ":predict",
     {"features": {"sepal_length": None, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2}}, 400,
     "sepal_length"),
    ("object for a number", ":predict", {"features": _row(petal_width={})}, 400, "feature 'petal_width'"),
    ("array for a number", ":predict", {"features": _row(petal_width=[1])}, 400, "feature 'petal_width' is a list"),
    ("bool for a number", ":predict", {"features": _row(petal_width=True)}, 400,
     "feature 'petal_width' is a number; got true"),
    ("text for a number", ":predict", {"features": _row(petal_width="abc")}, 400,
     "feature 'petal_width' is a number; got the string 'abc'"),
    ("NaN as a string", ":predict", {"features": _row(petal_width="NaN")}, 400, "petal_width"),
    ("Infinity as a string", ":predict", {"features": _row(petal_width="Infinity")}, 400, "petal_width"),
    ("features null", ":predict", {"features": None}, 400, "missing"),
    ("features an array", ":predict", {"features": [1, 2]}, 400, ""),
    ("rows [null]", ":predictBatch", {"rows": [None]}, 400, ""),
    ("rows null", ":predictBatch", {"rows": None}, 400, "rows is empty"),
    ("request_id a number", ":predict", {"features": IRIS_ROW, "request_id": 5}, 400, ""),
    ("request_id with NUL", ":predict", {"features": IRIS_ROW, "request_id": "a\u0000b"}, 400, "request_id"),
    ("request_id too long", ":predict", {"features": IRIS_ROW, "request_id": "r" * 5000}, 400, "request_id"),
    # the columnar form: the JSON mapping drops a null from matrix.values, so REST must state the rows
    ("matrix: a row of nulls, no row_numbers", ":predictBatch",
     {"matrix": {"feature_names": list(IRIS_ROW), "values": [*IRIS_ROW.values(), None, None, None, None,
                                                               *IRIS_ROW.values()]}}, 400, "row_numbers"),
    ("matrix: a row of nulls, row_numbers", ":predictBatch",
     {"matrix": {"feature_names": list(IRIS_ROW), "values": [*IRIS_ROW.values(), None, None, None, None,
                                                               *IRIS_ROW.values()],
                 "request_id_prefix": "m-", "row_numbers": [1, 2, 3]}}, 400, "3 numbers for 2 rows"),
    ("matrix: one null", ":predictBatch",
     {"matrix": {"feature_names": list(IRIS_ROW), "values": [*list(IRIS_ROW.values())[:3], None],
                 "request_id_prefix": "m-", "row_numbers": [1]}}, 400, "whole number"),
    ("matrix with row_numbers", ":predictBatch",
     {"matrix": {"feature_names": list(IRIS_ROW), "values": [*IRIS_ROW.values(), *IRIS_ROW.values()],
                 "request_id_prefix": "m-", "row_numbers": [1, 2]}}, 200, ""),
    # a feature is a google.protobuf.Value: a string is a category, so a number sent as a string is refused
    ("number as a string", ":predict", {"features": _row(petal_width="0.2")}, 400,
     "feature 'petal_width' is a number; got the string '0.2'"),
    ("request_id null: a fresh id", ":predict", {"features": IRIS_ROW, "request_id": None}, 200, ""),
]


@pytest.mark.parametrize("case, path, body, status, text", CASES, ids=[c[0] for c in CASES])
def test_json_shapes_are_4xx_and_a_missing_value_is_never_zero(gateway, case, path, body, status, text):
    response = requests.post(f"{gateway.url}/v1/models/iris{path}", json=body, timeout=10)
    assert response.status_code == status, (case, response.status_code, response.text[:300])
    if status >= 400:
        assert text in response.text, (case, response.text[:300])
    elif path == ":predict":
        assert response.json()["prediction"]["label"] == "setosa"


@pytest.mark.parametrize("length", [65, 2_000, 20_000])
def test_an_oversized_model_name_is_a_4xx_and_does_not_disturb_other_clients(gateway, length):
    """The name is refused early and never echoed in full (a 20 kB echo used to overflow metadata limits and reset
    the shared upstream HTTP/2 connection)."""
    name = "m" * length
    response = requests.post(f"{gateway.url}/v1/models/{name}:predict", json={"features": IRIS_ROW}, timeout=10)
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:200])
    assert len(response.content) < 1024
    ok = requests.post(f"{gateway.url}/v1/models/iris:predict", json={"features": IRIS_ROW}, timeout=10)
    assert ok.status_code == 200
