"""The Open Inference Protocol with typed features (an in-process server serving the typed fixture): one tensor per
feature (BYTES categories, BOOL booleans, FP64 numbers with NaN missing), the metadata that declares them, the same
validation as every transport, and probabilities equal to the pipeline's own predict_proba."""
from __future__ import annotations

import struct

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from inference.metrics import ServerMetrics
from inference.models.frame import to_frame
from inference.rpc.server import InferenceServer
from inference.settings import ServerSettings
from predmesh.oip import grpc_predict_v2_pb2 as pb
from predmesh.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.support.recorder import ListRecorder
from tests.support.typed_model import write_typed_model
from tests.support.typed_strict import write_strict_model

ROWS: list[list[object]] = [[1.0, 29.85, "Month-to-month", False],
        [None, 56.95, "One year", True],
        [45.0, 42.3, None, False],
        [2.0, 70.7, "Two year", None]]  # a missing boolean: NaN in a numeric column (BOOL has no missing value)
FEATURES = ("tenure", "monthly", "contract", "senior")


@pytest.fixture(scope="module")
def typed(tmp_path_factory, trained_store):
    """An in-process server over the Iris store plus the typed churn model (and its strict copy: monthly not
    nullable, unknown categories refused); yields (stub, recorder, server, manifest, pipeline)."""
    import shutil

    root = tmp_path_factory.mktemp("typed") / "models"
    shutil.copytree(trained_store, root)
    manifest, pipeline = write_typed_model(root)
    write_strict_model(root)
    recorder = ListRecorder()
    settings = ServerSettings(grpc_addr="127.0.0.1:0", metrics_addr="", model_store=root, drain_seconds=0,
                              grace_seconds=1, max_batch_rows=10)
    server = InferenceServer(settings, recorder=recorder, metrics=ServerMetrics(CollectorRegistry()))
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield pb_grpc.GRPCInferenceServiceStub(channel), recorder, server, manifest, pipeline
    channel.close()
    server.stop(grace=0)


def raw_bytes(items) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in items)


def columns_request(rows=ROWS, *, model="churn", raw=True, datatypes=None, shape_of=lambda n: [n, 1], rid="t1",
                    drop=(), override=None):
    """One tensor per feature, as Triton's client builds them (raw) or with typed contents."""
    datatypes = {"tenure": "FP64", "monthly": "FP64", "contract": "BYTES", "senior": "BOOL", **(datatypes or {})}
    if datatypes["senior"] == "BOOL" and any(row[3] is None for row in rows):
        datatypes["senior"] = "FP64"  # 0/1, NaN missing
    request = pb.ModelInferRequest(model_name=model, id=rid)
    for i, name in enumerate(FEATURES):
        if name in drop:
            continue
        values = [row[i] for row in rows]
        datatype = datatypes[name]
        tensor = request.inputs.add(name=name, datatype=datatype, shape=shape_of(len(rows)))
        payload = (override or {}).get(name)
        if datatype == "BYTES":
            items = [b"" if v is None else str(v).encode() for v in values]
            if raw:
                request.raw_input_contents.append(payload if payload is not None else raw_bytes(items))
            else:
                tensor.contents.bytes_contents.extend(items)
        elif datatype == "BOOL":
            if raw:
                request.raw_input_contents.append(payload if payload is not None else bytes(bool(v) for v in values))
            else:
                tensor.contents.bool_contents.extend(bool(v) for v in values)
        else:
            floats = np.array([np.nan if v is None else float(v) for v in values], dtype="<f8")
            if raw:
                request.raw_input_contents.append(payload if payload is not None else floats.tobytes())
            else:
                tensor.contents.fp64_contents.extend(floats.tolist())
    return request


def probabilities_of(response) -> np.ndarray:
    (i,) = [i for i, o in enumerate(response.outputs) if o.name == "probabilities"]
    out = response.outputs[i]
    assert out.datatype == "FP64"
    return np.frombuffer(response.raw_output_contents[i], dtype="<f8").reshape(list(out.shape))


def test_metadata_and_config_declare_one_input_per_feature(typed):
    stub, *_ = typed
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="churn"), timeout=5)
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [
        ("tenure", "FP64", [-1, 1]), ("monthly", "FP64", [-1, 1]), ("contract", "BYTES", [-1, 1]),
        ("senior", "BOOL", [-1, 1])]
    assert [(t.name, t.datatype) for t in meta.outputs] == [("label", "INT64"), ("probabilities", "FP64")]
    assert meta.platform == "sklearn_sklearn"
    config = stub.ModelConfig(pb.ModelConfigRequest(name="churn"), timeout=5).config
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("tenure", pb.TYPE_FP64, [1]), ("monthly", pb.TYPE_FP64, [1]), ("contract", pb.TYPE_STRING, [1]),
        ("senior", pb.TYPE_BOOL, [1])]
    assert [o.data_type for o in config.output] == [pb.TYPE_INT64, pb.TYPE_FP64]
    iris = stub.ModelMetadata(pb.ModelMetadataRequest(name="iris"), timeout=5)  # numbers-only: unchanged
    assert [(t.name, t.datatype) for t in iris.inputs] == [("input", "FP32")]


@pytest.mark.parametrize("raw", [True, False], ids=["raw", "typed-contents"])
@pytest.mark.parametrize("shape_of", [lambda n: [n, 1], lambda n: [n]], ids=["Nx1", "N"])
def test_typed_rows_score_as_the_pipeline_does_and_are_recorded(typed, raw, shape_of):
    stub, recorder, _, manifest, pipeline = typed
    before = len(recorder.records)
    rid = f"t1-{'raw' if raw else 'typed'}-{len(shape_of(2))}"  # each case its own key (a key's retry records nothing)
    response = stub.ModelInfer(columns_request(raw=raw, shape_of=shape_of, rid=rid), timeout=5)
    got = probabilities_of(response)
    expected = pipeline.predict_proba(to_frame(ROWS, manifest.features))
    assert np.abs(got - expected).max() <= 1e-9
    labels = np.frombuffer(response.raw_output_contents[0], dtype="<i8")
    assert labels.tolist() == expected.argmax(axis=1).tolist()
    records = recorder.records[before:]
    assert [r.request_id for r in records] == [f"{rid}-{i}" for i in range(4)]
    assert [r.features for r in records] == [dict(zip(FEATURES, row)) for row in ROWS]
    assert [r.label for r in records] == [manifest.classes[i] for i in labels]


def test_unknown_category_is_scored_where_the_model_accepts_it(typed):
    stub, _, _, manifest, pipeline = typed
    rows: list[list[object]] = [[3.0, 50.0, "Three year", True]]
    got = probabilities_of(stub.ModelInfer(columns_request(rows), timeout=5))
    assert np.abs(got - pipeline.predict_proba(to_frame(rows, manifest.features))).max() <= 1e-9


def test_a_numbers_only_frame_matrix_is_refused_with_the_inputs_to_send(typed):
    stub, *_ = typed
    request = pb.ModelInferRequest(model_name="churn", inputs=[pb.ModelInferRequest.InferInputTensor(
        name="input", datatype="FP64", shape=[1, 4])], raw_input_contents=[np.zeros(4).tobytes()])
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "contract (BYTES)" in (err.value.details() or "") and "senior (BOOL)" in (err.value.details() or "")


CASES = [
    # DESIGN-22 §4, as a Triton client can send it
    ("number as BYTES", {"datatypes": {"tenure": "BYTES"}}, "feature 'tenure' is a number; got the string"),
    ("number as BOOL", {"datatypes": {"monthly": "BOOL"}}, "feature 'monthly' is a number; got"),
    ("number missing, not nullable", {"model": "strict", "rows": [[1.0, None, "One year", True]]},
     "feature 'monthly' is missing (null) and this model cannot impute it"),
    ("category as FP64", {"rows": [[1.0, 2.0, 3.0, True]], "datatypes": {"contract": "FP64"}},
     "feature 'contract' is categorical"),
    ("boolean as FP64 other than 0/1", {"rows": [[1.0, 2.0, "One year", 2.0]], "datatypes": {"senior": "FP64"}},
     "feature 'senior' is a boolean; send true or false"),
    ("boolean as BYTES", {"rows": [[1.0, 2.0, "One year", "true"]], "datatypes": {"senior": "BYTES"}},
     "feature 'senior' is a boolean; send true or false"),
    ("unknown category refused", {"model": "strict", "rows": [[1.0, 2.0, "Zehn Jahre", True]]},
     "feature 'contract' has no category 'Zehn Jahre'"),
    ("category with NUL (PostgreSQL cannot store it)", {"rows": [[1.0, 2.0, "One year", True],
                                                                [1.0, 2.0, "Ten\x00year", True]]},
     "row 1: feature 'contract' contains the character U+0000, which a stored prediction cannot hold"),
    # the wire
    ("invalid UTF-8", {"override": {"contract": raw_bytes([b"One year", b"\xc3\x28", b"x", b"y"])}},
     "row 1: feature 'contract' is not valid UTF-8"),
    ("BYTES element count", {"override": {"contract": raw_bytes([b"One year"])}}, "'contract' holds 1 values"),
    ("FP64 byte count", {"override": {"tenure": b"\x00" * 8}}, "'tenure' holds 8 bytes"),
    ("BOOL byte", {"rows": ROWS[:3], "override": {"senior": b"\x00\x07\x00"}}, "0 or 1"),
    ("missing input", {"drop": ("senior",)}, "feature 'senior' is missing"),
    ("bad shape", {"shape_of": lambda n: [n, 2]}, "has shape"),
    ("too many rows", {"rows": ROWS * 3}, "exceed the limit"),
    ("unknown datatype", {"datatypes": {"tenure": "STRING"}}, "datatype 'STRING'"),
]


@pytest.mark.parametrize("kwargs, needle", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_invalid_typed_requests_are_invalid_argument_naming_the_feature(typed, kwargs, needle):
    stub, recorder, *_ = typed
    before = len(recorder.records)
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(columns_request(**kwargs), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert needle in (err.value.details() or ""), err.value.details()
    assert len(recorder.records) == before


def test_mismatched_rows_unknown_and_duplicate_inputs(typed):
    stub, *_ = typed
    request = columns_request()
    request.inputs[1].shape[:] = [3, 1]
    extra = columns_request()
    extra.inputs.add(name="colour", datatype="BYTES", shape=[4])
    extra.raw_input_contents.append(raw_bytes([b"a"] * 4))
    twice = columns_request()
    twice.inputs.add().CopyFrom(twice.inputs[0])
    twice.raw_input_contents.append(twice.raw_input_contents[0])
    short = columns_request()
    del short.raw_input_contents[-1]
    for bad, needle in ((request, "'monthly' has 3 rows"), (extra, "unknown input 'colour'"),
                        (twice, "'tenure' appears twice"), (short, "raw_input_contents holds 3 entries")):
        with pytest.raises(grpc.RpcError) as err:
            stub.ModelInfer(bad, timeout=5)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and needle in (err.value.details() or ""), (
            needle, err.value.details())


def test_a_numbers_only_model_also_takes_one_input_per_feature(typed):
    stub, _, server, *_ = typed
    names = ("sepal_length", "sepal_width", "petal_length", "petal_width")
    x = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
    request = pb.ModelInferRequest(model_name="iris")
    for i, name in enumerate(names):
        request.inputs.add(name=name, datatype="FP64", shape=[2])
        request.raw_input_contents.append(x[:, i].astype("<f8").tobytes())
    response = stub.ModelInfer(request, timeout=5)
    probabilities = np.frombuffer(response.raw_output_contents[1], dtype="<f4").reshape(2, 3)
    expected = server.registry.get("iris").estimator.predict_proba(x)
    assert np.abs(probabilities - expected).max() < 1e-6
