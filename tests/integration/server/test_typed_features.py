"""Typed features end to end over gRPC (#22): a real `python -m inference serve` serving the typed fixture (a
scikit-learn pipeline over a number with gaps, a number, a category with gaps and a boolean) next to Iris.

Every Predict path gives the fitted pipeline's own predict_proba(frame.to_frame(rows)) to 1e-9; every value the
model cannot take is INVALID_ARGUMENT naming the feature (never INTERNAL), alone or per row; a request encoded by a
client built for predmesh 0.2 (a double per feature, bytes built by hand) is refused with the upgrade hint."""
from __future__ import annotations

import asyncio
import dataclasses
import math
import shutil
import struct
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.struct_pb2 import ListValue, Struct, Value

from inference.models.frame import to_frame
from inference.models.loader import read_manifest, version_dir
from inference.models.manifest import MANIFEST
from inference.models.manifest import encode as encode_manifest
from predmesh import AsyncClient, Client, InvalidArgument
from predmesh.v1 import inference_pb2, inference_pb2_grpc
from predmesh.values import encode
from tests.conftest import IRIS_ROW
from tests.support.procs import ServerProc
from tests.support.typed_model import FEATURES, write_typed_model

ROWS: list[dict[str, Any]] = [
    {"tenure": 3, "monthly": 80.5, "contract": "Month-to-month", "senior": True},
    {"tenure": None, "monthly": 55.25, "contract": "Two year", "senior": False},
    {"tenure": 40.0, "monthly": 99.0, "contract": None, "senior": None},
    {"tenure": 12, "monthly": 20.0, "contract": "Lifetime", "senior": False},  # a category unseen in training
]
TOLERANCE = 1e-9


@dataclasses.dataclass
class Served:
    proc: ServerProc
    pipeline: object
    features: tuple

    def expected(self, rows: list[dict]) -> np.ndarray:
        """The fitted pipeline's own probabilities for these rows, in process."""
        plain = [[None if r[n] is None else (float(r[n]) if isinstance(r[n], int) and not isinstance(r[n], bool)
                                              else r[n]) for n in FEATURES] for r in rows]
        return self.pipeline.predict_proba(to_frame(plain, self.features))  # type: ignore[attr-defined]


def _strict(root: Path) -> None:
    """A variant of the fixture ("strict") that takes no missing value and refuses unknown categories (its golden
    rows with gaps dropped, so it still passes its smoke test)."""
    manifest, _ = write_typed_model(root, model="strict")
    path = version_dir(root, "strict", manifest.version)
    stored = read_manifest(path, None)
    strict = dataclasses.replace(
        stored, features=tuple(dataclasses.replace(f, nullable=False, accepts_unknown=False) for f in stored.features),
        golden=tuple(g for g in stored.golden if None not in g["features"]))
    assert strict.golden
    (path / MANIFEST).write_bytes(encode_manifest(strict, None))


@pytest.fixture(scope="module")
def served(trained_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    root = tmp_path_factory.mktemp("typed-server")
    shutil.copytree(trained_store, root / "models")
    manifest, pipeline = write_typed_model(root / "models")
    _strict(root / "models")
    # This module is about scoring and validation. Recording typed rows (the prediction log, spool documents) and
    # drift over categories are the recording and drift parts of #22, tested with them: off here.
    with ServerProc(root / "models", root / "server.log",
                    env={"PREDMESH_PERSISTENCE": "off", "PREDMESH_DRIFT": "0"}) as proc:
        yield Served(proc, pipeline, manifest.features)


@pytest.fixture
def client(served: Served) -> Iterator[Client]:
    with Client(served.proc.target, timeout=10) as c:
        yield c


def _probabilities(prediction, classes=("no", "yes")) -> list[float]:
    return [prediction.probabilities[c] for c in classes]


def test_the_model_describes_its_kinds(client):
    info = client.get_model("churn")
    kinds = {f.name: (f.kind, f.nullable, f.accepts_unknown) for f in info.features}
    assert kinds == {"tenure": ("number", True, False), "monthly": ("number", False, False),
                     "contract": ("category", True, True), "senior": ("boolean", True, False)}
    contract = next(f for f in info.features if f.name == "contract")
    assert set(contract.category_names) == {"Month-to-month", "One year", "Two year"}
    assert abs(sum(s for _, s in contract.categories) - 1) < 1e-9 and contract.missing_share > 0
    assert all(f.kind == "number" for f in client.get_model("iris").features)


def test_predict_gives_the_pipelines_own_probabilities(served, client):
    expected = served.expected(ROWS)
    for row, want in zip(ROWS, expected):
        got = client.predict("churn", row)
        assert got.label == ("no", "yes")[int(np.argmax(want))]
        np.testing.assert_allclose(_probabilities(got), want, rtol=0, atol=TOLERANCE)


def test_predict_batch_and_each_give_the_pipelines_own_probabilities(served, client):
    expected = served.expected(ROWS)
    batch = client.predict_batch("churn", [(r, f"typed-b{i}") for i, r in enumerate(ROWS)])
    np.testing.assert_allclose([_probabilities(p) for p in batch], expected, rtol=0, atol=TOLERANCE)
    assert [p.request_id for p in batch] == [f"typed-b{i}" for i in range(len(ROWS))]
    bad = {**ROWS[0], "monthly": None}
    each = client.predict_each("churn", [ROWS[0], bad, ROWS[3]])
    assert each[1].prediction is None and isinstance(each[1].error, InvalidArgument)
    assert "feature 'monthly' is missing (null)" in each[1].error.message
    np.testing.assert_allclose([_probabilities(each[i].prediction) for i in (0, 2)], expected[[0, 3]], rtol=0,
                               atol=TOLERANCE)


def test_predict_matrix_with_string_columns_gives_the_pipelines_own_probabilities(served, client):
    expected = served.expected(ROWS)
    names = ["tenure", "monthly", "senior"]
    values = []
    for r in ROWS:
        values += [math.nan if r["tenure"] is None else float(r["tenure"]), float(r["monthly"]),
                   math.nan if r["senior"] is None else float(r["senior"])]
    scored = client.predict_matrix("churn", names, values, string_columns={"contract": [r["contract"] for r in ROWS]},
                                   request_id_prefix="typed-m", row_numbers=range(len(ROWS)))
    np.testing.assert_allclose(np.reshape(scored.probabilities, (len(ROWS), 2)), expected, rtol=0, atol=TOLERANCE)
    # a refused row with partial_success: answered in errors, the others scored
    values[4] = math.nan  # row 1's monthly: missing, and monthly is not nullable
    partial = client.predict_matrix("churn", names, values, string_columns={"contract": [r["contract"] for r in ROWS]},
                                    partial_success=True)
    assert set(partial.errors) == {1} and "feature 'monthly'" in partial.errors[1].message
    got = np.reshape(partial.probabilities, (len(ROWS), 2))
    np.testing.assert_allclose(got[[0, 2, 3]], expected[[0, 2, 3]], rtol=0, atol=TOLERANCE)
    with pytest.raises(InvalidArgument, match="row 1: feature 'monthly' is missing"):
        client.predict_matrix("churn", names, values, string_columns={"contract": [r["contract"] for r in ROWS]})


def test_predict_stream_and_the_async_client_give_the_pipelines_own_probabilities(served, client):
    expected = served.expected(ROWS)
    results = list(client.predict_stream("churn", [*ROWS, {**ROWS[0], "senior": "yes"}]))
    np.testing.assert_allclose([_probabilities(r.prediction) for r in results[:-1]], expected, rtol=0,
                               atol=TOLERANCE)
    assert isinstance(results[-1].error, InvalidArgument) and "feature 'senior' is a boolean" in \
        results[-1].error.message

    async def main():
        async with AsyncClient(served.proc.target, timeout=10) as aio:
            one = await aio.predict("churn", ROWS[1])
            matrix = await aio.predict_matrix("churn", ["tenure", "monthly", "senior"], [1.0, 50.0, 0.0],
                                              string_columns={"contract": ["One year"]})
            return one, matrix
    one, matrix = asyncio.run(main())
    np.testing.assert_allclose(_probabilities(one), expected[1], rtol=0, atol=TOLERANCE)
    want = served.expected([{"tenure": 1.0, "monthly": 50.0, "contract": "One year", "senior": False}])[0]
    np.testing.assert_allclose(list(matrix.probabilities), want, rtol=0, atol=TOLERANCE)


CASES = [  # (model, change to ROWS[0], words of the message)
    ("churn", {"tenure": "abc"}, "feature 'tenure' is a number; got the string 'abc'"),
    ("churn", {"tenure": True}, "feature 'tenure' is a number; got true"),
    ("churn", {"monthly": None}, "feature 'monthly' is missing (null) and this model cannot impute it"),
    ("churn", {"monthly": 1e12}, "feature 'monthly'=1e+12 is outside the plausible range"),
    ("churn", {"contract": 3}, "feature 'contract' is categorical: send one of its categories as a string"),
    ("churn", {"contract": False}, "feature 'contract' is categorical"),
    ("churn", {"senior": 1}, "feature 'senior' is a boolean; send true or false"),
    ("churn", {"senior": "true"}, "feature 'senior' is a boolean; send true or false"),
    ("churn", {"extra": 1.0}, "unknown feature 'extra'"),
    ("strict", {"tenure": None}, "feature 'tenure' is missing (null) and this model cannot impute it"),
    ("strict", {"contract": None}, "feature 'contract' is missing (null) and this model cannot impute it"),
    ("strict", {"senior": None}, "feature 'senior' is missing (null)"),
    ("strict", {"contract": "Lifetime"}, "feature 'contract' has no category 'Lifetime'; expected one of"),
    ("iris", {"sepal_length": "5.1"}, "feature 'sepal_length' is a number; got the string '5.1'"),
    ("iris", {"petal_width": None}, "feature 'petal_width' is missing (null) and this model cannot impute it"),
]


@pytest.mark.parametrize("model, change, words", CASES)
def test_every_refusal_is_invalid_argument_naming_the_feature_on_every_path(served, client, model, change, words):
    base: dict[str, Any] = IRIS_ROW if model == "iris" else ROWS[0]
    row = {**base, **change}
    with pytest.raises(InvalidArgument) as info:  # InvalidArgument is INVALID_ARGUMENT, never INTERNAL
        client.predict(model, row)
    assert words in info.value.message, info.value.message
    with pytest.raises(InvalidArgument, match=r"^row 1: "):
        client.predict_batch(model, [base, row])
    each = client.predict_each(model, [base, row])
    assert each[0].prediction is not None and isinstance(each[1].error, InvalidArgument)
    assert words in each[1].error.message
    [streamed] = client.predict_stream(model, [row])
    assert isinstance(streamed.error, InvalidArgument) and words in streamed.error.message


def test_a_list_or_an_object_is_refused_naming_the_feature(served):
    with grpc.insecure_channel(served.proc.target) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        for value, words in ((Value(list_value=ListValue(values=[Value(number_value=1)])), "is a list"),
                             (Value(struct_value=Struct()), "is an object")):
            features = encode(ROWS[0])
            features["tenure"] = value
            with pytest.raises(grpc.RpcError) as info:
                stub.Predict(inference_pb2.PredictRequest(model="churn", features=features), timeout=10)
            assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert f"feature 'tenure' {words}; send a number, string, boolean or null" in (info.value.details() or "")


def _old_request(model: str, row: dict[str, float]) -> bytes:
    """A PredictRequest as a client built for predmesh 0.2 encodes it: map<string, double> entries."""
    out = bytes([0x0a, len(model)]) + model.encode()
    for key, value in row.items():
        entry = bytes([0x0a, len(key)]) + key.encode() + b"\x11" + struct.pack("<d", value)
        out += bytes([0x12, len(entry)]) + entry
    return out


@pytest.mark.parametrize("model, row", [("iris", IRIS_ROW), ("churn", {"tenure": 3.0, "monthly": 80.5})])
def test_a_predmesh_0_2_request_is_refused_with_the_upgrade_hint(served, model, row):
    with grpc.insecure_channel(served.proc.target) as channel:
        call: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(
            "/predmesh.v1.InferenceService/Predict")
        with pytest.raises(grpc.RpcError) as info:
            call(_old_request(model, row), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = info.value.details() or ""
    assert f"feature {next(iter(row))!r} has no value" in details and "predmesh 0.2" in details, details
    assert "upgrade" in details


def test_iris_still_scores_on_its_float_path(client):
    p = client.predict("iris", IRIS_ROW)
    assert p.label == "setosa" and abs(sum(p.probabilities.values()) - 1) < 1e-9
    scored = client.predict_matrix("iris", list(IRIS_ROW), list(IRIS_ROW.values()))
    np.testing.assert_allclose(list(scored.probabilities), [p.probabilities[c] for c in scored.classes], atol=1e-12)
