"""The RPC edge: one status per error family, bounded echoes and names, and the request's log context."""
from __future__ import annotations

import inspect
import logging

import grpc
import pytest

from inference import errors
from inference.rpc import logcontext
from inference.rpc.edge import status_of
from predmesh.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc
from predmesh.values import encode
from tests.conftest import IRIS_ROW
from tests.support.procs import ADMIN_TOKEN

ADMIN = (("authorization", f"Bearer {ADMIN_TOKEN}"),)


def test_every_domain_error_has_a_status_of_its_own_family():
    """No error the server raises on purpose may fall through to INTERNAL, and the names say what they mean."""
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass)
               if issubclass(c, errors.PredmeshError) and c is not errors.PredmeshError]
    assert len(classes) >= 14
    for cls in classes:
        code, _ = status_of(cls("x"), "test")
        assert code != grpc.StatusCode.INTERNAL, cls
    expected = {errors.InvalidFeatures: "INVALID_ARGUMENT", errors.InvalidName: "INVALID_ARGUMENT",
                errors.TooManyRows: "INVALID_ARGUMENT",
                errors.PredictionNotFound: "NOT_FOUND", errors.ModelNotFound: "NOT_FOUND",
                errors.StorageUnavailable: "UNAVAILABLE", errors.ModelNotReady: "UNAVAILABLE",
                errors.UntrustedArtifact: "FAILED_PRECONDITION", errors.Overloaded: "RESOURCE_EXHAUSTED"}
    for cls, name in expected.items():
        assert status_of(cls("x"), "test")[0].name == name, cls
    assert not issubclass(errors.StorageUnavailable, errors.ModelNotReady)
    assert not issubclass(errors.PredictionNotFound, errors.ModelNotFound)
    code, message = status_of(errors.InvalidArgument("y" * 100_000), "test")
    assert len(message) <= 512


@pytest.fixture
def stubs(inproc_server):
    _, target = inproc_server
    with grpc.insecure_channel(target) as channel:
        yield inference_pb2_grpc.InferenceServiceStub(channel), admin_pb2_grpc.ModelAdminServiceStub(channel)


def _error(call, *args, **kw) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, timeout=10, **kw)
    return info.value


def details(err: grpc.RpcError) -> str:
    text = err.details()
    assert text is not None, err
    return text


@pytest.mark.parametrize("name", ["", "../x", "a/b", "x" * 65, "m" * 50_000, "iris\x00", "é"])
def test_impossible_model_names_are_invalid_argument_and_never_echoed_in_full(stubs, name):
    inference, admin = stubs
    calls = [
        (inference.Predict, inference_pb2.PredictRequest(model=name, features=encode(IRIS_ROW)), {}),
        (inference.GetModel, inference_pb2.GetModelRequest(model=name), {}),
        (admin.ReloadModel, admin_pb2.ReloadModelRequest(model=name), {"metadata": ADMIN}),
        (admin.ListModelVersions, admin_pb2.ListModelVersionsRequest(model=name), {"metadata": ADMIN}),
    ]
    for call, request, kw in calls:
        err = _error(call, request, **kw)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, (call, err.details())
        assert len(details(err)) < 200 and "model" in details(err)


def test_unknown_but_valid_names_are_not_found(stubs):
    inference, admin = stubs
    assert _error(inference.Predict, inference_pb2.PredictRequest(model="nope", features=encode(IRIS_ROW))).code() == \
        grpc.StatusCode.NOT_FOUND
    err = _error(admin.ReloadModel, admin_pb2.ReloadModelRequest(model="iris", version="../2"), metadata=ADMIN)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "version" in details(err)


@pytest.mark.parametrize("request_id, problem", [
    ("r" * 129, "129 characters"), ("a\x00b", "U+0000"), ("line\nbreak", "U+000A"), ("bell\x07", "U+0007"),
])
def test_request_ids_are_bounded_at_the_edge(stubs, request_id, problem):
    inference, _ = stubs
    err = _error(inference.Predict, inference_pb2.PredictRequest(model="iris", features=encode(IRIS_ROW),
                                                                 request_id=request_id))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in details(err)
    assert problem in details(err)
    batch = inference_pb2.PredictBatchRequest(model="iris", rows=[
        inference_pb2.FeatureRow(features=encode(IRIS_ROW), request_id="ok"),
        inference_pb2.FeatureRow(features=encode(IRIS_ROW), request_id=request_id)])
    err = _error(inference.PredictBatch, batch)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "rows[1].request_id" in details(err)
    [answer] = list(inference.PredictStream(iter([inference_pb2.PredictStreamRequest(
        model="iris", features=encode(IRIS_ROW), request_id=request_id)]), timeout=10))
    assert answer.error.code == grpc.StatusCode.INVALID_ARGUMENT.value[0] and "request_id" in answer.error.message


def test_a_long_unknown_feature_name_is_not_echoed_in_full(stubs):
    inference, _ = stubs
    features = dict(IRIS_ROW)
    features["f" * 20_000] = 1.0
    del features["sepal_length"]
    err = _error(inference.Predict, inference_pb2.PredictRequest(model="iris", features=encode(features)))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and len(details(err)) < 300


def test_log_lines_of_a_request_carry_its_method_model_and_request_id(inproc_server, stubs, monkeypatch):
    """A line logged while a request is handled names the request: one request can be followed in the log."""
    server, _ = inproc_server
    inference, _ = stubs
    lines: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            lines.append(self.format(record))

    handler = Collect()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger = logging.getLogger("predmesh-test-context")
    logger.addHandler(handler)
    logcontext.install(logger)
    logging.getLogger("inference").addHandler(handler)
    try:
        def broken(*args, **kwargs):
            raise RuntimeError("scoring exploded")

        monkeypatch.setattr(server.registry.get("iris"), "score", broken)
        err = _error(inference.Predict, inference_pb2.PredictRequest(model="iris", features=encode(IRIS_ROW),
                                                                     request_id="req-ctx-42"))
        assert err.code() == grpc.StatusCode.INTERNAL
        logger.warning("outside any request")
    finally:
        logging.getLogger("inference").removeHandler(handler)
        logger.removeHandler(handler)
    failure = [line for line in lines if "failed unexpectedly" in line]
    assert failure, lines
    assert "[method=Predict model=iris request_id=req-ctx-42]" in failure[0]
    assert lines[-1].endswith("outside any request")  # no context outside a request


def test_log_context_filter_reads_fields_only_when_a_line_is_logged():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello %s", ("there",), None)
    token = logcontext.enter("ModelInfer", type("R", (), {"model_name": "iris", "id": "r" * 500})())
    try:
        assert logcontext.RequestContextFilter().filter(record)
    finally:
        logcontext.leave(token)
    fields = vars(record)  # the filter's additions
    assert fields["method"] == "ModelInfer" and fields["model"] == "iris"
    assert fields["request_id"].startswith("rrr") and len(fields["request_id"]) <= 65
    assert logcontext.current() == {"method": "", "model": "", "request_id": ""}
