"""InferenceService and ModelAdminService: bounds → registry → scoring → convert (errors mapped in edge.py)."""
from __future__ import annotations

import logging
import threading
import time
from functools import partial

import grpc
import numpy as np
from google.rpc import status_pb2

from inference import errors
from inference.bounds import MAX_ID, check_name, check_text, shown
from inference.models.registry import ModelRegistry
from inference.recording.recorder import Recorder
from inference.rpc import logcontext
from inference.rpc.auth import TokenAuth
from inference.rpc.edge import Refused, rpc, status_of
from inference.scoring.convert import fresh_request_ids, model_info, plain, prediction_message, transport_of
from inference.scoring.score import score_and_record, score_and_record_matrix
from predmesh.faults import fault_point
from predmesh.v1 import admin_pb2, admin_pb2_grpc, inference_pb2, inference_pb2_grpc, model_pb2
from predmesh.values import unreadable_features, upgrade_message

log = logging.getLogger(__name__)


def _wait_unless_cancelled(context, seconds: float) -> bool:
    """An injected delay (predmesh.faults): wait, unless the call is cancelled (deadline, client gone) first;
    True when it was."""
    cancelled = threading.Event()
    context.add_callback(cancelled.set)
    started = time.monotonic()
    if cancelled.wait(seconds) or not context.is_active():
        log.info("handler observed cancellation after %.0f ms and stopped", (time.monotonic() - started) * 1000)
        return True
    return False


def _injected_delay(context) -> None:
    """The fault point before scoring (off unless PREDMESH_FAULTS arms inference.predict_delay_ms)."""
    if fault_point("inference.predict_delay_ms", partial(_wait_unless_cancelled, context)):
        raise errors.DeadlineExceeded("call cancelled during injected delay")


def _refusal(message: str) -> status_pb2.Status:
    """A row's INVALID_ARGUMENT status, as the per-row answers (PredictBatch, PredictStream) carry it."""
    return status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=message)


def _vector(model, message, row: int | None = None) -> list:
    """The checked plain values of a message's features in schema order (LoadedModel.vector); a feature missing
    because its entry could not be read (a predmesh 0.2 client's double) is refused as such."""
    try:
        return model.vector(message.features, row, plain)
    except errors.InvalidFeatures:
        unreadable = unreadable_features(message)  # only on the refusal path: no cost for a valid request
        if unreadable:
            where = "" if row is None else f"row {row}: "
            raise errors.InvalidFeatures(where + upgrade_message(unreadable[0])) from None
        raise


def _string_column(column: inference_pb2.StringColumn, n: int) -> list[str | None]:
    """A categorical column of a FeatureMatrix as n plain values, None in its missing rows."""
    where = f"matrix.string_columns[{shown(column.name)}]"
    values: list[str | None] = list(column.values)
    if len(values) != n:
        raise errors.InvalidArgument(f"{where} holds {len(values)} values for {n} rows; send one per row")
    for row in column.missing_rows:
        if row >= n:
            raise errors.InvalidArgument(f"{where}.missing_rows names row {row} of {n}")
        values[row] = None
    return values


def _matrix_answer(model, labels: np.ndarray, probabilities: np.ndarray, prediction_ids: list[str],
                   latency_ms: float) -> inference_pb2.PredictionMatrix:
    """The columnar answer: label indexes into classes, packed probabilities, prediction ids."""
    out = inference_pb2.PredictionMatrix(model=model.name, model_version=model.version, classes=model.classes,
                                         latency_ms=latency_ms)
    out.labels.extend(labels.tolist())
    out.probabilities.extend(probabilities.ravel().tolist())
    out.prediction_ids.extend(prediction_ids)
    return out


def call_limits(max_batch_rows: int, max_request_bytes: int) -> model_pb2.CallLimits:
    """The server's limits on one call, as ModelInfo.limits publishes them."""
    return model_pb2.CallLimits(max_batch_rows=max_batch_rows, max_request_bytes=max_request_bytes,
                                max_request_id_length=MAX_ID)


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    """Predict, PredictBatch, PredictStream, ListModels, GetModel."""

    def __init__(self, registry: ModelRegistry, recorder: Recorder, *, max_batch_rows: int,
                 max_request_bytes: int = 4 * 1024 * 1024):
        self.registry = registry
        self.recorder = recorder
        self.max_batch_rows = max_batch_rows
        # published on every ModelInfo the server answers, so clients size their calls instead of probing
        self.limits = call_limits(max_batch_rows, max_request_bytes)

    def _score(self, model_name: str, rows, request_ids, context, started: float) -> list:
        """Validate, score, record and build predictions for rows of one model (rows: the messages holding the
        features: PredictRequest, FeatureRow or PredictStreamRequest)."""
        model = self.registry.get(model_name)
        if len(rows) == 1:
            check_text("request_id", request_ids[0], MAX_ID)
        else:
            for i, rid in enumerate(request_ids):
                check_text(f"rows[{i}].request_id", rid, MAX_ID)
        vectors = [_vector(model, r, i if len(rows) > 1 else None) for i, r in enumerate(rows)]
        _injected_delay(context)
        names = model.names
        _, records = score_and_record(self.recorder, self.registry.metrics, model, vectors,
                                      [zip(names, v) for v in vectors], request_ids,
                                      transport_of(context.invocation_metadata()), started, context.time_remaining())
        return [prediction_message(r) for r in records]

    @rpc
    def Predict(self, request, context):
        started = time.perf_counter()
        [prediction] = self._score(request.model, [request], [request.request_id], context, started)
        return inference_pb2.PredictResponse(prediction=prediction)

    @rpc
    def PredictBatch(self, request, context):
        started = time.perf_counter()
        valueless: dict[int, str] = {}
        if type(request) is Refused:  # rows a request check refused (edge.DecodeGuard checks)
            request, valueless = request.request, request.rows
        if request.HasField("matrix"):
            if request.rows:
                raise errors.InvalidArgument("set either rows or matrix, not both")
            return self._predict_matrix(request.model, request.matrix, context, started, request.partial_success)
        if len(request.rows) > self.max_batch_rows:
            raise errors.TooManyRows(f"{len(request.rows)} rows exceed the limit of {self.max_batch_rows} per "
                                     "batch; split the request")
        if not request.rows:
            raise errors.InvalidArgument("rows is empty; send at least one row")
        if request.partial_success:
            return inference_pb2.PredictBatchResponse(
                results=self._score_each(request.model, request.rows, valueless, context, started))
        predictions = self._score(request.model, request.rows,
                                  [r.request_id for r in request.rows], context, started)
        return inference_pb2.PredictBatchResponse(predictions=predictions)

    def _score_each(self, model_name: str, rows, refused: dict[int, str], context, started: float) -> list:
        """PredictBatch with partial_success, rows form: each row checked alone (a refused row gets the status
        it would get sent alone), the others scored and recorded together; one BatchRowResult per row."""
        model = self.registry.get(model_name)
        refused = dict(refused)
        vectors, kept = [], []
        for i, r in enumerate(rows):
            if i in refused:
                continue
            try:
                check_text("request_id", r.request_id, MAX_ID)
                vectors.append(_vector(model, r))
            except errors.InvalidArgument as exc:
                refused[i] = status_of(exc, "PredictBatch")[1]
                continue
            kept.append(i)
        predictions = {}
        if kept:
            _injected_delay(context)
            _, records = score_and_record(
                self.recorder, self.registry.metrics, model, vectors, [zip(model.names, v) for v in vectors],
                [rows[i].request_id for i in kept], transport_of(context.invocation_metadata()), started,
                context.time_remaining())
            predictions = dict(zip(kept, map(prediction_message, records)))
        return [inference_pb2.BatchRowResult(request_id=predictions[i].request_id, prediction=predictions[i])
                if i in predictions else inference_pb2.BatchRowResult(
                    request_id=r.request_id if len(r.request_id) <= MAX_ID else "",
                    error=_refusal(refused[i]))
                for i, r in enumerate(rows)]

    def _predict_matrix(self, model_name: str, m, context, started: float, partial_success: bool = False):
        """The columnar PredictBatch: values into one matrix, request ids from the prefix and row numbers, the rows
        recorded as one batch, the answer in columns (no per-row message on either side). With partial_success
        out-of-range and non-finite rows are answered in row_errors instead of failing the call, and only the
        others are scored."""
        model = self.registry.get(model_name)
        names = tuple(m.feature_names)
        strings = {c.name: c for c in m.string_columns}
        everything = names + tuple(c.name for c in m.string_columns)
        if everything != model.names and (len(everything) != len(model.names)
                                          or set(everything) != set(model.names)):
            unknown = [n for n in everything if n not in model.names]
            missing = [n for n in model.names if n not in everything]
            problem = (f"unknown feature {shown(unknown[0])}" if unknown else
                       f"feature {missing[0]!r} is missing" if missing else "a feature is named twice")
            where = "matrix.string_columns" if unknown and unknown[0] in strings else "matrix.feature_names"
            raise errors.InvalidFeatures(f"{where}: {problem}; expected {', '.join(model.names)}")
        width = len(names)
        values = np.array(m.values, dtype=np.float64)
        if width:
            if not len(values) or len(values) % width:
                raise errors.InvalidArgument(f"matrix.values holds {len(values)} values; send a whole number "
                                             f"(>= 1) of rows of {width}")
            n = len(values) // width
        else:  # every feature a category: the rows are counted by the string columns
            if len(values):
                raise errors.InvalidArgument(f"matrix.values holds {len(values)} values for no feature_names")
            n = len(m.string_columns[0].values)
            if not n:
                raise errors.InvalidArgument("matrix.string_columns hold no values; send at least one row")
        if n > self.max_batch_rows:
            raise errors.TooManyRows(f"{n} rows exceed the limit of {self.max_batch_rows} per batch; split the "
                                     "request")
        columns = {name: _string_column(column, n) for name, column in strings.items()}
        # Without partial_success one refused row refuses the call: columns raises InvalidFeatures.
        matrix, refused = model.columns(values.reshape(n, width), names, columns, partial=partial_success)
        transport = transport_of(context.invocation_metadata())
        if transport == "rest" and not m.row_numbers:
            # proto3 JSON drops a null from a packed list: a row sent as nulls would vanish, not be refused
            raise errors.InvalidArgument("over REST, send matrix.row_numbers (one per row, with "
                                         "matrix.request_id_prefix): null values are dropped from matrix.values, "
                                         "so the rows cannot be counted from the values alone")
        prefix = m.request_id_prefix
        if prefix:
            numbers = list(m.row_numbers)
            if len(numbers) != n:
                raise errors.InvalidArgument(f"matrix.row_numbers holds {len(numbers)} numbers for {n} rows")
            check_text("matrix.request_id_prefix", prefix, MAX_ID - len(str(max(numbers))))
            request_ids = [prefix + str(x) for x in numbers]
        elif m.row_numbers:
            raise errors.InvalidArgument("matrix.row_numbers needs a request_id_prefix")
        else:
            request_ids = fresh_request_ids(n)
        if refused:
            return self._predict_matrix_partly(model, matrix, request_ids, refused, bool(prefix), transport,
                                               context, started)
        _injected_delay(context)
        probabilities, labels, batch = score_and_record_matrix(
            self.recorder, self.registry.metrics, model, matrix, request_ids, transport, started,
            context.time_remaining())
        return inference_pb2.PredictBatchResponse(
            matrix=_matrix_answer(model, labels, probabilities, batch.prediction_ids, batch.latency_ms))

    def _predict_matrix_partly(self, model, matrix: np.ndarray, request_ids: list[str], refused: dict[int, str],
                               own_ids: bool, transport: str, context, started: float):
        """The columnar answer when some rows are refused: the others scored and recorded as one batch, the
        refused ones in row_errors and in place in the columns (label 0, zero probabilities, no prediction_id)."""
        n = len(matrix)
        keep = np.ones(n, dtype=bool)
        keep[list(refused)] = False
        kept = np.flatnonzero(keep)
        labels = np.zeros(n, dtype=np.int64)
        probabilities = np.zeros((n, len(model.classes)))
        prediction_ids = [""] * n
        latency_ms = (time.perf_counter() - started) * 1000
        if len(kept):
            _injected_delay(context)
            kept_probabilities, kept_labels, batch = score_and_record_matrix(
                self.recorder, self.registry.metrics, model, matrix[kept], [request_ids[i] for i in kept.tolist()],
                transport, started, context.time_remaining())
            labels[kept] = kept_labels
            probabilities[kept] = kept_probabilities
            for i, pid in zip(kept.tolist(), batch.prediction_ids):
                prediction_ids[i] = pid
            latency_ms = batch.latency_ms
        out = _matrix_answer(model, labels, probabilities, prediction_ids, latency_ms)
        out.row_errors.extend(
            inference_pb2.RowError(row=i, request_id=request_ids[i] if own_ids else "", error=_refusal(message))
            for i, message in sorted(refused.items()))
        return inference_pb2.PredictBatchResponse(matrix=out)

    def PredictStream(self, request_iterator, context):
        """One answer per message, in order; a bad message gets an error answer and the stream goes on."""
        for request in request_iterator:
            if type(request) is Refused:  # decoded, but refused by a request check (edge.DecodeGuard)
                rid = request.request.request_id
                yield inference_pb2.PredictStreamResponse(
                    request_id=rid if len(rid) <= MAX_ID else "",
                    error=_refusal(request.problem))
                continue
            started = time.perf_counter()
            token = logcontext.enter("PredictStream", request)
            try:
                [prediction] = self._score(request.model, [request], [request.request_id], context,
                                           started)
            except Exception as exc:
                code, message = status_of(exc, "PredictStream")
                response = inference_pb2.PredictStreamResponse(
                    request_id=request.request_id if len(request.request_id) <= MAX_ID else "",
                    error=status_pb2.Status(code=code.value[0], message=message))
            else:
                response = inference_pb2.PredictStreamResponse(request_id=prediction.request_id,
                                                               prediction=prediction)
            finally:
                logcontext.leave(token)
            yield response

    @rpc
    def ListModels(self, request, context):
        return inference_pb2.ListModelsResponse(
            models=[model_info(m.manifest, serving=True, limits=self.limits) for m in self.registry.serving()])

    @rpc
    def GetModel(self, request, context):
        model = self.registry.get(request.model)
        fleet = self.registry.fleet
        wanted = fleet.desired(model.name) if fleet else None
        return inference_pb2.GetModelResponse(model=model_info(model.manifest, True, limits=self.limits),
                                              desired=desired_message(model.name, wanted))


def desired_message(model: str, wanted) -> model_pb2.DesiredState:
    """A Desired (database/desired.py) as the contract's DesiredState; None: none recorded (empty version)."""
    if wanted is None:
        return model_pb2.DesiredState(model=model)
    out = model_pb2.DesiredState(model=model, version=wanted.version, pinned=wanted.pinned,
                                 candidate=wanted.candidate, candidate_share=wanted.candidate_share,
                                 updated_by=wanted.updated_by, reason=wanted.reason)
    out.updated_at.FromNanoseconds(int(wanted.updated_at * 1e9))
    return out


class ModelAdminServicer(admin_pb2_grpc.ModelAdminServiceServicer):
    """ReloadModel, ListModelVersions and the fleet's desired state (rollout, pin, rollback), behind bearer-token
    auth."""

    def __init__(self, registry: ModelRegistry, auth: TokenAuth, on_reload=None,
                 limits: model_pb2.CallLimits | None = None):
        self.registry = registry
        self.auth = auth
        self.on_reload = on_reload  # (model, version) after a verified swap: tells the other processes
        self.limits = limits  # the server's CallLimits, on every ModelInfo answered

    def _fleet(self):
        fleet = self.registry.fleet
        if fleet is None:
            raise errors.FailedPrecondition("this server has no database, so no desired state for the fleet: "
                                            "use ReloadModel (this replica only)")
        return fleet

    def _serving(self, model: str) -> str:
        try:
            return self.registry.get(model).version
        except errors.PredmeshError:
            return ""

    @rpc
    def RolloutModel(self, request, context):
        self.auth.require(context.invocation_metadata(), write=True)
        wanted, previous = self._fleet().change(
            request.model, request.version, "rollout", by=request.changed_by, reason=request.reason,
            candidate=request.candidate, candidate_share=request.candidate_share)
        return admin_pb2.RolloutModelResponse(desired=desired_message(wanted.model, wanted),
                                              serving_version=self._serving(wanted.model), previous_version=previous)

    @rpc
    def PinModel(self, request, context):
        self.auth.require(context.invocation_metadata(), write=True)
        wanted, previous = self._fleet().change(request.model, request.version, "pin", pinned=True,
                                                by=request.changed_by, reason=request.reason)
        return admin_pb2.PinModelResponse(desired=desired_message(wanted.model, wanted),
                                          serving_version=self._serving(wanted.model), previous_version=previous)

    @rpc
    def RollbackModel(self, request, context):
        self.auth.require(context.invocation_metadata(), write=True)
        wanted, previous = self._fleet().rollback(request.model, by=request.changed_by, reason=request.reason)
        return admin_pb2.RollbackModelResponse(desired=desired_message(wanted.model, wanted),
                                               serving_version=self._serving(wanted.model),
                                               previous_version=previous)

    @rpc
    def GetDesiredState(self, request, context):
        self.auth.require(context.invocation_metadata(), write=False)
        model = check_name("model", request.model)
        return admin_pb2.GetDesiredStateResponse(desired=desired_message(model, self._fleet().fresh(model)),
                                                 serving_version=self._serving(model))

    @rpc
    def ReloadModel(self, request, context):
        self.auth.require(context.invocation_metadata(), write=True)
        fleet = self.registry.fleet
        if fleet is not None:  # with a shared database a reload is a rollout: every replica follows it
            version = request.version or self.registry.store.newest(check_name("model", request.model))
            wanted, previous = fleet.change(request.model, version, "rollout", reason="ReloadModel")
            model = self.registry.get(wanted.model)
            if self.on_reload:
                self.on_reload(model.name, model.version)
            return admin_pb2.ReloadModelResponse(model=model_info(model.manifest, True, self.limits),
                                                 previous_version=previous)
        model, previous = self.registry.reload(request.model, request.version)
        if self.on_reload:
            self.on_reload(model.name, model.version)
        return admin_pb2.ReloadModelResponse(model=model_info(model.manifest, True, self.limits),
                                             previous_version=previous)

    @rpc
    def ListModelVersions(self, request, context):
        self.auth.require(context.invocation_metadata(), write=False)
        manifests = self.registry.store.manifests(check_name("model", request.model))
        if not manifests:
            raise errors.ModelNotFound(f"model {shown(request.model)} has no versions in the model store")
        try:
            serving = self.registry.get(request.model).version
        except errors.PredmeshError:
            serving = ""
        return admin_pb2.ListModelVersionsResponse(
            versions=[model_info(m, m.version == serving, self.limits) for m in manifests])
