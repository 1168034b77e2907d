"""Typed features recorded by a real server (#22): a `python -m inference serve` serving the typed fixture with
persistence on PostgreSQL stores what Predict, PredictBatch rows and PredictMatrix with string_columns answered,
and ListPredictions gives back the values sent (a number, a category string, a boolean, null) as the
google.protobuf.Value kinds they were sent as. A category PostgreSQL cannot store (U+0000) is refused at the edge,
INVALID_ARGUMENT naming the feature, and nothing is stored for it."""
from __future__ import annotations

import math
import shutil
from typing import Any

import grpc
import pytest

from predmesh import Client, InvalidArgument
from predmesh.v1 import analytics_pb2, analytics_pb2_grpc, inference_pb2, inference_pb2_grpc
from predmesh.values import encode
from tests.support.pg import TempSchema
from tests.support.procs import ServerProc, wait_for
from tests.support.typed_model import write_typed_model

pytestmark = pytest.mark.postgres

ROWS: list[dict[str, Any]] = [
    {"tenure": 3, "monthly": 80.5, "contract": "Month-to-month", "senior": True},
    {"tenure": None, "monthly": 55.25, "contract": "Two year", "senior": False},
    {"tenure": 40.0, "monthly": 99.0, "contract": None, "senior": None},
    {"tenure": 12, "monthly": 20.0, "contract": 'Zürich "quoted" back\\slash\ttab\nline – 東京', "senior": False},
]
NUL = "feature 'contract' contains the character U+0000, which a stored prediction cannot hold"


def as_stored(row: dict) -> dict:
    """A row as the server stores it: numbers as floats (3 → 3.0), the rest as sent."""
    return {k: float(v) if type(v) is int else v for k, v in row.items()}


def kinds(features) -> dict[str, str]:
    return {name: value.WhichOneof("kind") for name, value in features.items()}


@pytest.fixture(scope="module")
def served(trained_store, tmp_path_factory):
    root = tmp_path_factory.mktemp("typed-recording")
    shutil.copytree(trained_store, root / "models")
    write_typed_model(root / "models")
    with TempSchema() as schema:
        env = {"PREDMESH_DATABASE_URL": schema.url, "PREDMESH_SPOOL_DIR": str(root / "spool"),
               "PREDMESH_DRIFT": "0"}
        with ServerProc(root / "models", root / "server.log", env=env) as proc:
            yield proc


def test_list_predictions_gives_back_the_typed_values_sent(served):
    sent: dict[str, dict] = {}  # prediction id → the row sent
    with Client(served.target, timeout=10) as client:
        for i, row in enumerate(ROWS):
            sent[client.predict("churn", row, request_id=f"one-{i}").prediction_id] = row
        for p, row in zip(client.predict_batch("churn", [(r, f"rows-{i}") for i, r in enumerate(ROWS)]), ROWS):
            sent[p.prediction_id] = row
        values: list[float] = []
        for r in ROWS:
            values += [math.nan if r["tenure"] is None else float(r["tenure"]), float(r["monthly"]),
                       math.nan if r["senior"] is None else float(r["senior"])]
        scored = client.predict_matrix("churn", ["tenure", "monthly", "senior"], values,
                                       string_columns={"contract": [r["contract"] for r in ROWS]},
                                       request_id_prefix="matrix", row_numbers=range(len(ROWS)))
        sent.update(zip(scored.prediction_ids, ROWS))
        assert len(sent) == 3 * len(ROWS)

        def listed():
            return {s.prediction.prediction_id: s for s in client.list_predictions(model="churn", page_size=100)}
        wait_for(lambda: len(listed()) == len(sent), 20, what="every typed row stored")
        stored = listed()
    for pid, row in sent.items():
        got = stored[pid].features
        assert got == as_stored(row), pid
        assert {k: type(v) for k, v in got.items()} == {k: type(v) for k, v in as_stored(row).items()}, pid
    # on the wire: each value as the Value kind it was sent as
    with grpc.insecure_channel(served.target) as channel:
        page = analytics_pb2_grpc.AnalyticsServiceStub(channel).ListPredictions(
            analytics_pb2.ListPredictionsRequest(model="churn", page_size=100), timeout=10)
    by_id = {p.prediction.prediction_id: p for p in page.predictions}
    first = by_id[next(pid for pid, row in sent.items() if row is ROWS[0])]
    assert kinds(first.features) == {"tenure": "number_value", "monthly": "number_value",
                                     "contract": "string_value", "senior": "bool_value"}
    third = by_id[next(pid for pid, row in sent.items() if row is ROWS[2])]
    assert kinds(third.features) == {"tenure": "number_value", "monthly": "number_value",
                                     "contract": "null_value", "senior": "null_value"}


def test_a_category_with_nul_is_refused_naming_the_feature_and_not_stored(served):
    bad = {**ROWS[0], "contract": "Month\x00to-month"}
    with grpc.insecure_channel(served.target) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Predict(inference_pb2.PredictRequest(model="churn", features=encode(bad), request_id="nul-one"),
                         timeout=10)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert NUL in (info.value.details() or "")
    with Client(served.target, timeout=10) as client:
        each = client.predict_each("churn", [ROWS[1], bad])
        assert each[0].prediction is not None and isinstance(each[1].error, InvalidArgument)
        assert NUL in each[1].error.message
        values = [1.0, 50.0, 0.0, 2.0, 60.0, 1.0]
        with pytest.raises(InvalidArgument, match=r"row 1: feature 'contract' contains the character U\+0000"):
            client.predict_matrix("churn", ["tenure", "monthly", "senior"], values,
                                  string_columns={"contract": ["One year", "a\x00"]}, request_id_prefix="nul-m")
        partial = client.predict_matrix("churn", ["tenure", "monthly", "senior"], values,
                                        string_columns={"contract": ["One year", "a\x00"]}, partial_success=True)
        assert set(partial.errors) == {1} and NUL in partial.errors[1].message
        assert partial.prediction_ids[0]
        kept = {each[0].prediction.prediction_id, partial.prediction_ids[0]}
        wait_for(lambda: kept <= {s.prediction.prediction_id for s in client.list_predictions(model="churn",
                                                                                               page_size=100)},
                 20, what="the rows answered OK stored")
        assert not any("\x00" in str(s.features.get("contract"))
                       for s in client.list_predictions(model="churn", page_size=100))
    assert "quarantine" not in served.log().lower()
