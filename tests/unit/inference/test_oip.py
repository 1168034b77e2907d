"""The Open Inference Protocol service on an in-process server: answers, status codes, and recorded predictions."""
from __future__ import annotations

import grpc
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from inference.metrics import ServerMetrics
from inference.rpc.server import InferenceServer
from inference.settings import ServerSettings
from predmesh import Client
from predmesh.oip import grpc_predict_v2_pb2 as pb
from predmesh.oip import grpc_predict_v2_pb2_grpc as pb_grpc
from tests.conftest import IRIS_ROW
from tests.support.recorder import ListRecorder

ROWS = np.array([[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3], [5.9, 3.0, 4.2, 1.5]], dtype=np.float32)
NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(params=["sklearn", "native"])
def oip(model_store, request):
    recorder = ListRecorder()
    settings = ServerSettings(grpc_addr="127.0.0.1:0", metrics_addr="", model_store=model_store, drain_seconds=0,
                              grace_seconds=1, max_batch_rows=10, runtime=request.param)
    server = InferenceServer(settings, recorder=recorder, metrics=ServerMetrics(CollectorRegistry()))
    port = server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    yield pb_grpc.GRPCInferenceServiceStub(channel), recorder, f"127.0.0.1:{port}", server
    channel.close()
    server.stop(grace=0)


def infer_request(rows=ROWS, *, raw=True, model="iris", datatype="FP32", name="input", shape=None, rid="r1",
                  outputs=()):
    tensor = pb.ModelInferRequest.InferInputTensor(name=name, datatype=datatype,
                                                   shape=list(rows.shape if shape is None else shape))
    request = pb.ModelInferRequest(model_name=model, id=rid, inputs=[tensor],
                                   outputs=[pb.ModelInferRequest.InferRequestedOutputTensor(name=o) for o in outputs])
    if raw:
        request.raw_input_contents.append(rows.astype("<f4" if datatype == "FP32" else "<f8").tobytes())
    else:
        tensor.contents.fp32_contents.extend(rows.ravel().tolist())
        request.inputs[0].CopyFrom(tensor)
    return request


def outputs_of(response) -> dict[str, np.ndarray]:
    dtypes = {"INT64": "<i8", "FP32": "<f4"}
    return {o.name: np.frombuffer(raw, dtype=dtypes[o.datatype]).reshape(list(o.shape))
            for o, raw in zip(response.outputs, response.raw_output_contents)}


@pytest.mark.parametrize("raw", [True, False])
def test_model_infer_matches_predict_and_is_recorded(oip, raw):
    stub, recorder, target, server = oip
    response = stub.ModelInfer(infer_request(raw=raw), timeout=5)
    got = outputs_of(response)
    assert response.model_name == "iris" and response.model_version == "2" and response.id == "r1"
    assert got["label"].tolist() == [0, 2, 1]
    assert got["probabilities"].shape == (3, 3)
    model = server.registry.get("iris")
    expected = model.estimator.predict_proba(ROWS.astype(np.float64))  # scikit-learn is the reference
    assert np.allclose(got["probabilities"], expected, atol=1e-6)
    with Client(target, timeout=5) as client:
        p = client.predict("iris", dict(zip(NAMES, ROWS[1].tolist())))
    assert p.label == model.classes[2]
    assert abs(p.probabilities[p.label] - float(got["probabilities"][1, 2])) < 1e-6
    oip_records = recorder.records[:3]
    assert [r.request_id for r in oip_records] == ["r1-0", "r1-1", "r1-2"]
    assert [r.label for r in oip_records] == ["setosa", "virginica", "versicolor"]
    assert oip_records[0].features == dict(zip(NAMES, ROWS[0].tolist()))
    assert all(r.model == "iris" and r.model_version == "2" and r.transport == "grpc" for r in oip_records)
    assert len({r.prediction_id for r in recorder.records}) == len(recorder.records) == 4


def test_requested_outputs_only(oip):
    stub, *_ = oip
    response = stub.ModelInfer(infer_request(outputs=["probabilities"]), timeout=5)
    assert [o.name for o in response.outputs] == ["probabilities"]
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(infer_request(outputs=["nope"]), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "nope" in (err.value.details() or "")


@pytest.mark.parametrize("kwargs, needle", [
    ({"shape": [3, 5]}, "shape"),
    ({"shape": [12]}, "shape"),
    ({"rows": ROWS[:, :3]}, "shape"),
    ({"datatype": "INT32"}, "datatype"),
    ({"datatype": "BYTES"}, "datatype"),
    ({"name": "x"}, "unknown input"),
    ({"rows": np.array([[5.1, np.nan, 1.4, 0.2]], dtype=np.float32)}, "sepal_width"),
    ({"rows": np.array([[5.1, 3.5, 1e30, 0.2]], dtype=np.float32)}, "petal_length"),
    ({"rows": np.zeros((11, 4), dtype=np.float32)}, "exceed"),
])
def test_bad_tensors_are_invalid_argument(oip, kwargs, needle):
    stub, recorder, *_ = oip
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(infer_request(**kwargs), timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert needle in (err.value.details() or "")
    assert recorder.records == []


def test_raw_bytes_must_match_the_shape(oip):
    stub, *_ = oip
    request = infer_request()
    request.raw_input_contents[0] = request.raw_input_contents[0][:-4]
    with pytest.raises(grpc.RpcError) as err:
        stub.ModelInfer(request, timeout=5)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "bytes" in (err.value.details() or "")


def test_unknown_model_or_version_is_not_found(oip):
    stub, *_ = oip
    for call, request in ((stub.ModelInfer, infer_request(model="nope")),
                          (stub.ModelMetadata, pb.ModelMetadataRequest(name="nope")),
                          (stub.ModelConfig, pb.ModelConfigRequest(name="nope")),
                          (stub.ModelMetadata, pb.ModelMetadataRequest(name="iris", version="7"))):
        with pytest.raises(grpc.RpcError) as err:
            call(request, timeout=5)
        assert err.value.code() == grpc.StatusCode.NOT_FOUND, request
    assert stub.ModelReady(pb.ModelReadyRequest(name="nope"), timeout=5).ready is False


def test_liveness_readiness_metadata_and_config(oip):
    stub, _, _, server = oip
    assert stub.ServerLive(pb.ServerLiveRequest(), timeout=5).live
    assert stub.ServerReady(pb.ServerReadyRequest(), timeout=5).ready
    assert stub.ModelReady(pb.ModelReadyRequest(name="iris"), timeout=5).ready
    assert stub.ServerMetadata(pb.ServerMetadataRequest(), timeout=5).name == "predmesh"
    meta = stub.ModelMetadata(pb.ModelMetadataRequest(name="iris"), timeout=5)
    assert meta.versions == ["2"]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.inputs] == [("input", "FP32", [-1, 4])]
    assert [(t.name, t.datatype, list(t.shape)) for t in meta.outputs] == [
        ("label", "INT64", [-1]), ("probabilities", "FP32", [-1, 3])]
    config = stub.ModelConfig(pb.ModelConfigRequest(name="iris"), timeout=5).config
    assert config.name == "iris" and config.max_batch_size == 10
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [("input", pb.TYPE_FP32, [4])]
    server.stop(grace=0, drain=0)
    assert server.ready() is False


def test_predict_still_works_alongside(oip):
    _, recorder, target, _ = oip
    with Client(target, timeout=5) as client:
        assert client.predict("iris", IRIS_ROW).label == "setosa"
    assert recorder.records[-1].transport == "grpc"
