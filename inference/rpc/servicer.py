"""InferenceService and ModelAdminService: bounds → registry → scoring → convert (errors mapped in edge.py)."""
from __future__ import annotations

import logging
import os
import threading
import time
from functools import partial
from typing import cast

import grpc
import numpy as np
from google.rpc import status_pb2

from database.fingerprint import matrix_hashes
from database.records import PredictionRecord
from inference import errors
from inference.bounds import MAX_ID, check_name, check_text, shown
from inference.models.canary import Criteria
from inference.models.registry import ModelRegistry
from inference.recording.recorder import Recorder
from inference.rpc import logcontext
from inference.rpc.auth import TokenAuth
from inference.rpc.edge import Refused, rpc, status_of
from inference.scoring.convert import (
    fresh_request_ids,
    model_info,
    plain,
    prediction_message,
    retried,
    row_prediction_ids,
    transport_of,
)
from inference.scoring.idempotency import KeyedRecorder, Keys, duplicates, keyed_hashes, one_version
from inference.scoring.score import score_and_record, score_and_record_matrix
from predmesh.channel import PID_HEADER
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
    log.info("handler entered an injected delay of %.0f ms", seconds * 1000)
    if cancelled.wait(seconds) or not context.is_active():
        log.info("handler observed cancellation after %.0f ms and stopped", (time.monotonic() - started) * 1000)
        return True
    log.info("handler waited out its injected delay")
    return False


def _injected_delay(context) -> None:
    """The fault point before scoring (off unless PREDMESH_FAULTS arms inference.predict_delay_ms)."""
    if fault_point("inference.predict_delay_ms", partial(_wait_unless_cancelled, context)):
        raise errors.DeadlineExceeded("call cancelled during injected delay")


def _refusal(message: str) -> status_pb2.Status:
    """A row's INVALID_ARGUMENT status, as the per-row answers (PredictBatch, PredictStream) carry it."""
    return status_pb2.Status(code=grpc.StatusCode.INVALID_ARGUMENT.value[0], message=message)


def _status(code: grpc.StatusCode, message: str) -> status_pb2.Status:
    return status_pb2.Status(code=code.value[0], message=message)


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


DEFAULT_KEYS = 200_000  # recent answers kept for retries (PREDMESH_IDEMPOTENCY_CACHE)
MAX_REASON = 1024  # RolloutModel/PinModel/RollbackModel reason, as a batch run's message


def _check_note(request) -> None:
    """The reason and changed_by of a fleet change: stored in the desired state and its history, logged, and printed
    by `predmesh desired`, so printable text of bounded length (a NUL was INTERNAL on PostgreSQL, a newline forged
    a log line)."""
    check_text("reason", request.reason, MAX_REASON)
    check_text("changed_by", request.changed_by, MAX_ID)


class CanaryScoring:
    """InferenceServicer._canary: `with` around one scoring call of one model."""

    def __init__(self, canaries, model, serving=None):
        self.canaries, self.model = canaries, model
        self.active = canaries.is_candidate(model)  # the candidate of a canary: its answers are compared
        self._serving = serving  # name -> the serving version (the fallback of a failing candidate)
        self._counted = False

    def __enter__(self) -> CanaryScoring:
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if kind is not None and issubclass(kind, Exception) and not self._counted:
            self.canaries.failed(self.model)

    def score(self, run):
        """run(model): scored by the routed model; when a canary candidate fails on its own (the estimator
        raised: not a deadline, not a full spool), the failure counts against it and the serving version answers
        instead, so a broken candidate costs the client nothing. Returns (the model that answered, run's result)."""
        try:
            return self.model, run(self.model)
        except Exception as exc:
            self.canaries.failed(self.model)
            self._counted = True
            if not self.active or self._serving is None or isinstance(exc, errors.PredmeshError):
                raise
            serving = self._serving(self.model.name)
            if serving is self.model:
                raise
            log.warning("model %s: canary candidate %s failed (%s: %s); version %s answers instead",
                        self.model.name, self.model.version, type(exc).__name__, exc, serving.version)
            self.active = False
            return serving, run(serving)

    def answered(self, rows, labels) -> None:
        self.canaries.answered(self.model, rows, labels)


class InferenceServicer(inference_pb2_grpc.InferenceServiceServicer):
    """Predict, PredictBatch, PredictStream, ListModels, GetModel."""

    def __init__(self, registry: ModelRegistry, recorder: Recorder, *, max_batch_rows: int,
                 max_request_bytes: int = 4 * 1024 * 1024, keys: Keys | None = None):
        self.registry = registry
        self.keys = keys if keys is not None else Keys(DEFAULT_KEYS)
        self.recorder = KeyedRecorder(recorder, self.keys)  # committed answers become their keys' answers
        self.max_batch_rows = max_batch_rows
        # published on every ModelInfo the server answers, so clients size their calls instead of probing
        self.limits = call_limits(max_batch_rows, max_request_bytes)

    def _score(self, model_name: str, rows, request_ids, context, started: float) -> list:
        """Validate, score, record and build predictions for rows of one model (rows: the messages holding the
        features: PredictRequest, FeatureRow or PredictStreamRequest)."""
        model = self.registry.route(model_name, next((rid for rid in request_ids if rid), ""))
        if len(rows) == 1:
            check_text("request_id", request_ids[0], MAX_ID)
        else:
            for i, rid in enumerate(request_ids):
                check_text(f"rows[{i}].request_id", rid, MAX_ID)
        vectors = [_vector(model, r, i if len(rows) > 1 else None) for i, r in enumerate(rows)]
        twice = duplicates(request_ids, lambda i: f"rows[{i}]")
        if twice:
            raise errors.InvalidArgument(twice[min(twice)])
        hashes = keyed_hashes(model, request_ids, vectors)
        with self.keys.begin(model.name, request_ids, hashes, context.time_remaining()) as claim:
            if claim.conflicts:
                raise errors.AlreadyExists(claim.conflicts[min(claim.conflicts)])
            answers: dict[int, PredictionRecord] = dict(claim.stored)
            todo = [i for i in range(len(rows)) if i not in answers]
            if todo:
                _injected_delay(context)
                names = model.names
                with self._canary(model) as canary:
                    _, (_, records) = canary.score(lambda m: score_and_record(
                        self.recorder, self.registry.metrics, m, [vectors[i] for i in todo],
                        [zip(names, vectors[i]) for i in todo], [request_ids[i] for i in todo],
                        transport_of(context.invocation_metadata()), started, context.time_remaining(),
                        [hashes[i] for i in todo]))
                    if canary.active:
                        canary.answered([vectors[i] for i in todo], [r.label for r in records])
                answers.update(zip(todo, records))
        return [prediction_message(answers[i]) for i in range(len(rows))]

    def _canary(self, model) -> CanaryScoring:
        """Around a scoring call: its failure counts against model's side of a canary, and the rows a candidate
        answered go to the agreement check (inference/models/canary.py); nothing when model has no canary."""
        return CanaryScoring(self.registry.canaries, model, self.registry.get)

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
        model = self.registry.route(model_name, next((r.request_id for r in rows if r.request_id), ""))
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
        statuses = {i: _refusal(message) for i, message in refused.items()}
        ids = [rows[i].request_id for i in kept]
        twice = duplicates(ids, lambda k: f"rows[{kept[k]}]")
        hashes = keyed_hashes(model, ids, vectors)
        for k in twice:
            statuses[kept[k]] = _refusal(twice[k])
            hashes[k] = None  # not this row's key: it is refused
        with self.keys.begin(model.name, ids, hashes, context.time_remaining()) as claim:
            predictions = {kept[k]: prediction_message(r) for k, r in claim.stored.items()}
            statuses.update({kept[k]: _status(grpc.StatusCode.ALREADY_EXISTS, m) for k, m in claim.conflicts.items()})
            todo = [k for k in range(len(kept)) if kept[k] not in predictions and kept[k] not in statuses]
            if todo:
                _injected_delay(context)
                with self._canary(model) as canary:
                    _, (_, records) = canary.score(lambda m: score_and_record(
                        self.recorder, self.registry.metrics, m, [vectors[k] for k in todo],
                        [zip(model.names, vectors[k]) for k in todo], [ids[k] for k in todo],
                        transport_of(context.invocation_metadata()), started, context.time_remaining(),
                        [hashes[k] for k in todo]))
                    if canary.active:
                        canary.answered([vectors[k] for k in todo], [r.label for r in records])
                predictions.update(zip((kept[k] for k in todo), map(prediction_message, records)))
        return [inference_pb2.BatchRowResult(request_id=predictions[i].request_id, prediction=predictions[i])
                if i in predictions else inference_pb2.BatchRowResult(
                    request_id=r.request_id if len(r.request_id) <= MAX_ID else "",
                    error=statuses[i])
                for i, r in enumerate(rows)]

    def _predict_matrix(self, model_name: str, m, context, started: float, partial_success: bool = False):
        """The columnar PredictBatch: values into one matrix, request ids from the prefix and row numbers, the rows
        recorded as one batch, the answer in columns (no per-row message on either side). With partial_success
        out-of-range and non-finite rows are answered in row_errors instead of failing the call, and only the
        others are scored."""
        model = self.registry.route(model_name, m.request_id_prefix)
        names = tuple(model.spelled_name(n) for n in m.feature_names)
        strings = {model.spelled_name(c.name): c for c in m.string_columns}
        everything = names + tuple(model.spelled_name(c.name) for c in m.string_columns)
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
        numbers: list[int] = []
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
        statuses = {i: _refusal(message) for i, message in refused.items()}
        hashes: list[str | None] | None = None
        if prefix:
            twice = duplicates(request_ids, lambda i: f"matrix.row_numbers[{i}] ({numbers[i]})")
            if twice and not partial_success:
                raise errors.InvalidArgument(twice[min(twice)])
            statuses.update({i: _refusal(message) for i, message in twice.items()})
            hashes = list(matrix_hashes(model.name, model.names, matrix))
            for i in statuses:
                hashes[i] = None  # a refused row is not looked up, nor is it answered
        keyed = hashes if hashes is not None else [None] * n
        # derived once (vectorised): the keys' lookup and the recorded batch both need them
        ids_of_rows = row_prediction_ids(prefix, numbers) if prefix else None
        new = bool(prefix) and m.new_keys and not retried(context.invocation_metadata())
        with self.keys.begin(model.name, request_ids, keyed, context.time_remaining(), ids_of_rows, new) as claim:
            if claim.conflicts and not partial_success:
                raise errors.AlreadyExists(claim.conflicts[min(claim.conflicts)])
            statuses.update({i: _status(grpc.StatusCode.ALREADY_EXISTS, m) for i, m in claim.conflicts.items()})
            stored = {i: r for i, r in claim.stored.items() if i not in statuses}
            fresh = n - len(statuses) - len(stored)
            version, classes, other = one_version(model, stored, fresh)
            if other and not partial_success:
                raise errors.FailedPrecondition(other[min(other)])
            for i, message in other.items():
                statuses[i] = _status(grpc.StatusCode.FAILED_PRECONDITION, message)
                del stored[i]
            if not statuses and not stored:  # the bulk fast path: every row scored, in one batch
                _injected_delay(context)
                with self._canary(model) as canary:
                    probabilities, labels, batch = score_and_record_matrix(
                        self.recorder, self.registry.metrics, model, matrix, request_ids, transport, started,
                        context.time_remaining(), cast("list[str] | None", hashes),  # keyed: every row has one
                        ids_of_rows)
                    if canary.active:
                        canary.answered(matrix, [model.classes[i] for i in labels])
                return inference_pb2.PredictBatchResponse(
                    matrix=_matrix_answer(model, labels, probabilities, batch.prediction_ids, batch.latency_ms))
            return self._predict_matrix_partly(model, matrix, request_ids, statuses, stored, hashes, version,
                                               classes, bool(prefix), transport, context, started)

    def _predict_matrix_partly(self, model, matrix: np.ndarray, request_ids: list[str],
                               statuses: dict[int, status_pb2.Status], stored: dict[int, PredictionRecord],
                               hashes: list[str | None] | None, version: str, classes: tuple[str, ...],
                               own_ids: bool, transport: str, context, started: float):
        """The columnar answer when not every row is scored now: rows answered before (stored: their stored
        answers, in place), refused rows (statuses: in row_errors, and in place with label 0, zero probabilities
        and no prediction_id), the others scored and recorded as one batch."""
        n = len(matrix)
        keep = np.ones(n, dtype=bool)
        keep[list(statuses)] = False
        keep[list(stored)] = False
        kept = np.flatnonzero(keep)
        labels = np.zeros(n, dtype=np.int64)
        probabilities = np.zeros((n, len(classes)))
        prediction_ids = [""] * n
        latency_ms = (time.perf_counter() - started) * 1000
        position = {c: j for j, c in enumerate(classes)}
        for i, r in stored.items():
            labels[i] = position[r.label]
            probabilities[i] = [r.probabilities.get(c, 0.0) for c in classes]
            prediction_ids[i] = r.prediction_id
        if len(kept):
            _injected_delay(context)
            rows = kept.tolist()
            with self._canary(model) as canary:
                kept_probabilities, kept_labels, batch = score_and_record_matrix(
                    self.recorder, self.registry.metrics, model, matrix[kept], [request_ids[i] for i in rows],
                    transport, started, context.time_remaining(),
                    None if hashes is None else cast("list[str]", [hashes[i] for i in rows]))  # kept: keyed
                if canary.active:
                    canary.answered(matrix[kept], [model.classes[i] for i in kept_labels])
            labels[kept] = kept_labels
            probabilities[kept] = kept_probabilities
            for i, pid in zip(rows, batch.prediction_ids):
                prediction_ids[i] = pid
            latency_ms = batch.latency_ms
        out = inference_pb2.PredictionMatrix(model=model.name, model_version=version, classes=classes,
                                             latency_ms=latency_ms)
        out.labels.extend(labels.tolist())
        out.probabilities.extend(probabilities.ravel().tolist())
        out.prediction_ids.extend(prediction_ids)
        out.row_errors.extend(
            inference_pb2.RowError(row=i, request_id=request_ids[i] if own_ids else "", error=status)
            for i, status in sorted(statuses.items()))
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
        # the answering process (the SDK's Client.server_pid): a client spreads its connections over a group's
        context.set_trailing_metadata(((PID_HEADER, str(os.getpid())),))
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


def criteria_of(request) -> Criteria | None:
    """A RolloutModelRequest's canary criteria (None: unset, decided by hand)."""
    if not request.HasField("canary"):
        return None
    c = request.canary
    return Criteria(window_s=c.window_seconds, min_feedback=c.min_feedback or Criteria.min_feedback,
                    min_requests=c.min_requests or Criteria.min_requests,
                    **{name: getattr(c, name) for name in ("max_accuracy_drop", "max_error_rate", "max_p99_ratio",
                                                           "min_agreement") if c.HasField(name)})


def _side(figures: dict) -> model_pb2.CanarySide:
    out = model_pb2.CanarySide(**{k: figures[k] for k in ("version", "requests", "calls", "errors", "error_rate",
                                                          "feedback", "p50_ms", "p99_ms") if k in figures})
    if figures.get("accuracy") is not None:
        out.accuracy = figures["accuracy"]
    return out


def canary_message(run, figures: dict | None = None) -> model_pb2.CanaryRun:
    """A canary run (database/canary.py Run) with its figures: those of its decision, else figures (now)."""
    figures = figures if figures is not None else run.figures
    c = Criteria.from_dict(run.criteria)
    criteria = model_pb2.CanaryCriteria(window_seconds=c.window_s, min_feedback=c.min_feedback,
                                        min_requests=c.min_requests)
    for name in ("max_accuracy_drop", "max_error_rate", "max_p99_ratio", "min_agreement"):
        if getattr(c, name) is not None:
            setattr(criteria, name, getattr(c, name))
    agreement = figures.get("agreement", {})
    out = model_pb2.CanaryRun(id=run.id, baseline=run.baseline, candidate=run.candidate, share=run.share,
                              criteria=criteria, started_by=run.started_by, status=run.status,
                              decided_by=run.decided_by, summary=run.summary,
                              serving=_side(figures.get("serving", {})),
                              candidate_side=_side(figures.get("candidate", {})),
                              compared=agreement.get("compared", run.tallies.get("compared", 0)),
                              agreed=agreement.get("agreed", run.tallies.get("agreed", 0)),
                              elapsed_seconds=figures.get("elapsed_s", 0.0))
    out.started_at.FromNanoseconds(int(run.started_at * 1e9))
    if run.decided_at:
        out.decided_at.FromNanoseconds(int(run.decided_at * 1e9))
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
        self.auth.require(context.invocation_metadata(), write=True, action="roll out")
        _check_note(request)
        wanted, previous = self._fleet().change(
            request.model, request.version, "rollout", by=request.changed_by, reason=request.reason,
            candidate=request.candidate, candidate_share=request.candidate_share, criteria=criteria_of(request))
        return admin_pb2.RolloutModelResponse(desired=desired_message(wanted.model, wanted),
                                              serving_version=self._serving(wanted.model), previous_version=previous)

    @rpc
    def PinModel(self, request, context):
        self.auth.require(context.invocation_metadata(), write=True, action="pin")
        _check_note(request)
        wanted, previous = self._fleet().change(request.model, request.version, "pin", pinned=True,
                                                by=request.changed_by, reason=request.reason)
        return admin_pb2.PinModelResponse(desired=desired_message(wanted.model, wanted),
                                          serving_version=self._serving(wanted.model), previous_version=previous)

    @rpc
    def RollbackModel(self, request, context):
        self.auth.require(context.invocation_metadata(), write=True, action="roll back")
        _check_note(request)
        wanted, previous = self._fleet().rollback(request.model, by=request.changed_by, reason=request.reason)
        return admin_pb2.RollbackModelResponse(desired=desired_message(wanted.model, wanted),
                                               serving_version=self._serving(wanted.model),
                                               previous_version=previous)

    @rpc
    def GetDesiredState(self, request, context):
        self.auth.require(context.invocation_metadata(), write=False)
        model = check_name("model", request.model)
        fleet = self._fleet()
        return admin_pb2.GetDesiredStateResponse(desired=desired_message(model, fleet.fresh(model)),
                                                 serving_version=self._serving(model),
                                                 canaries=[canary_message(run, figures)
                                                           for run, figures in fleet.canaries(model)])

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
