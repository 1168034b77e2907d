"""gRPC servicers: convert → registry → convert; domain errors mapped to status codes once, here."""
from __future__ import annotations

import functools
import logging
import threading
import time

import grpc
import numpy as np
from google.rpc import status_pb2

from database.records import PredictionRecord
from inference import errors
from inference.auth import AdminAuth
from inference.convert import ids, model_info, transport_of
from inference.recorder import Recorder
from inference.registry import ModelRegistry
from predmesh.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc, model_pb2

log = logging.getLogger(__name__)

_STATUS = (
    (errors.ModelNotFound, grpc.StatusCode.NOT_FOUND),
    (errors.InvalidFeatures, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.TooManyRows, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.ModelNotReady, grpc.StatusCode.UNAVAILABLE),
    (errors.ReloadFailed, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.Overloaded, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DeadlineExceeded, grpc.StatusCode.DEADLINE_EXCEEDED),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
)


def status_of(exc: BaseException, what: str) -> tuple[grpc.StatusCode, str]:
    """The status for an exception; unexpected ones become INTERNAL with a generic message, logged once."""
    for cls, code in _STATUS:
        if isinstance(exc, cls):
            return code, str(exc)
    log.error("%s failed unexpectedly", what, exc_info=exc)
    return grpc.StatusCode.INTERNAL, "internal error; the server log has the details"


def rpc(method):
    """Run a unary handler; any exception becomes a proper status instead of UNKNOWN."""
    @functools.wraps(method)
    def wrapper(self, request, context):
        try:
            return method(self, request, context)
        except Exception as exc:  # context.abort below raises; keep it outside this try
            code, message = status_of(exc, method.__name__)
        context.abort(code, message)
    return wrapper


def score_and_record(recorder: Recorder, metrics, model, matrix, rows, request_ids, transport: str,
                     started: float, timeout: float | None) -> tuple[np.ndarray, list[PredictionRecord]]:
    """Score validated rows and hand one record per row to the recorder; returns (probabilities, records).

    The one path every transport (Predict*, OIP ModelInfer) takes; matrix holds the rows' values in schema order
    (lists of floats, or a matrix) and rows the same rows as feature mappings (or pairs). Records are built and
    committed by the batcher for a whole batch at once (one hand-off, one spool write) before any caller is
    answered; Overloaded means they were not taken.
    """
    classes, version, name = model.classes, model.version, model.name
    positions = range(len(classes))

    def finish(probabilities):
        latency_ms = (time.perf_counter() - started) * 1000
        now = time.time()
        records = []
        for features, rid, probs in zip(rows, request_ids, probabilities.tolist()):
            request_id, prediction_id = ids(rid)
            best = max(positions, key=probs.__getitem__)  # as argmax: max keeps the first of equal maxima
            records.append(PredictionRecord(
                prediction_id=prediction_id, request_id=request_id, model=name, model_version=version,
                features=dict(features), label=classes[best], probabilities=dict(zip(classes, probs)),
                transport=transport, latency_ms=latency_ms, created_at=now))
        return records

    probabilities, records = model.score(matrix, timeout=timeout, finish=finish, commit=recorder.record)
    metrics.predicted(name, transport, len(records))
    return probabilities, records


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    """Predict, PredictBatch, PredictStream, ListModels, GetModel."""

    def __init__(self, registry: ModelRegistry, recorder: Recorder, *, max_batch_rows: int,
                 fault_delay_s: float = 0.0):
        self.registry = registry
        self.recorder = recorder
        self.max_batch_rows = max_batch_rows
        self.fault_delay_s = fault_delay_s

    def _score(self, model_name: str, rows, request_ids, context, started: float) -> list[model_pb2.Prediction]:
        """Validate, score, record and build predictions for rows of one model."""
        model = self.registry.get(model_name)
        vectors = [model.vector(r, i if len(rows) > 1 else None) for i, r in enumerate(rows)]
        if self.fault_delay_s:
            self._injected_delay(context)
        _, records = score_and_record(self.recorder, self.registry.metrics, model, vectors, rows, request_ids,
                                      transport_of(context.invocation_metadata()), started, context.time_remaining())
        return [model_pb2.Prediction(
            prediction_id=r.prediction_id, request_id=r.request_id, model=r.model, model_version=r.model_version,
            label=r.label, probabilities=r.probabilities, latency_ms=r.latency_ms) for r in records]

    def _injected_delay(self, context) -> None:
        """Test hook: wait fault_delay_s unless the call is cancelled (deadline, client gone) first."""
        cancelled = threading.Event()
        context.add_callback(cancelled.set)
        started = time.monotonic()
        if cancelled.wait(self.fault_delay_s) or not context.is_active():
            log.info("handler observed cancellation after %.0f ms and stopped",
                     (time.monotonic() - started) * 1000)
            raise errors.DeadlineExceeded("call cancelled during injected delay")

    @rpc
    def Predict(self, request, context):
        started = time.perf_counter()
        [prediction] = self._score(request.model, [request.features], [request.request_id], context, started)
        return inference_pb2.PredictResponse(prediction=prediction)

    @rpc
    def PredictBatch(self, request, context):
        started = time.perf_counter()
        if len(request.rows) > self.max_batch_rows:
            raise errors.TooManyRows(f"{len(request.rows)} rows exceed the limit of {self.max_batch_rows} per "
                                     "batch; split the request")
        if not request.rows:
            raise errors.InvalidFeatures("rows is empty; send at least one row")
        predictions = self._score(request.model, [r.features for r in request.rows],
                                  [r.request_id for r in request.rows], context, started)
        return inference_pb2.PredictBatchResponse(predictions=predictions)

    def PredictStream(self, request_iterator, context):
        for request in request_iterator:
            started = time.perf_counter()
            try:
                [prediction] = self._score(request.model, [request.features], [request.request_id], context,
                                           started)
            except Exception as exc:
                code, message = status_of(exc, "PredictStream")
                yield inference_pb2.PredictStreamResponse(
                    request_id=request.request_id,
                    error=status_pb2.Status(code=code.value[0], message=message))
            else:
                yield inference_pb2.PredictStreamResponse(request_id=prediction.request_id, prediction=prediction)

    @rpc
    def ListModels(self, request, context):
        return inference_pb2.ListModelsResponse(
            models=[model_info(m.manifest, serving=True) for m in self.registry.serving()])

    @rpc
    def GetModel(self, request, context):
        return inference_pb2.GetModelResponse(model=model_info(self.registry.get(request.model).manifest, True))


class ModelAdminServicer(admin_pb2_grpc.ModelAdminServiceServicer):
    """ReloadModel and ListModelVersions, behind bearer-token auth."""

    def __init__(self, registry: ModelRegistry, auth: AdminAuth, on_reload=None):
        self.registry = registry
        self.auth = auth
        self.on_reload = on_reload  # (model, version) after a verified swap: tells the other processes

    @rpc
    def ReloadModel(self, request, context):
        self.auth.require(context.invocation_metadata(), write=True)
        model, previous = self.registry.reload(request.model, request.version)
        if self.on_reload:
            self.on_reload(model.name, model.version)
        return admin_pb2.ReloadModelResponse(model=model_info(model.manifest, True), previous_version=previous)

    @rpc
    def ListModelVersions(self, request, context):
        self.auth.require(context.invocation_metadata(), write=False)
        manifests = self.registry.store.manifests(request.model)
        if not manifests:
            raise errors.ModelNotFound(f"model {request.model!r} has no versions in the model store")
        try:
            serving = self.registry.get(request.model).version
        except errors.PredmeshError:
            serving = ""
        return admin_pb2.ListModelVersionsResponse(
            versions=[model_info(m, m.version == serving) for m in manifests])
