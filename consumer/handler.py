"""The transport-free core: a window of deliveries in, one Outcome (ACK with a result, REJECT, RETRY) per delivery out.

Nothing here touches AMQP; the scorer is injected (the SDK client in production, a fake in unit tests).
"""
from __future__ import annotations

import enum
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from google.protobuf.struct_pb2 import Value

from predmesh import jobs
from predmesh.errors import PredmeshError
from predmesh.types import CallLimits, StreamResult
from predmesh.v1 import inference_pb2
from predmesh.values import Features

log = logging.getLogger(__name__)

# A job that can never succeed: rejected to the dead-letter queue on its first delivery.
# ALREADY_EXISTS: the job's request id (its message_id) was used before for a different request (issue #23);
# FAILED_PRECONDITION: e.g. a columnar job mixing rows answered by two model versions.
PERMANENT = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS,
                       grpc.StatusCode.FAILED_PRECONDITION})
# Everything else (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, and also INTERNAL, UNAUTHENTICATED, ...)
# keeps the job unacked and is retried: a misconfigured or broken server must not empty the queue into the DLQ.
# The exception: RESOURCE_EXHAUSTED because a call of one job alone is larger than the server's message limit
# (gRPC's "larger than max") can never succeed as sent: that job is dead-lettered.
TOO_LARGE_MESSAGE = "larger than max"
# A server fault on a call of several jobs: scored again one job per call, so that a job the model cannot score
# (a user's pipeline raising on some value) is found and dead-lettered alone (_apart).
SERVER_FAULTS = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN})

# What a dead letter may carry of the job's own headers: the broker refuses (and closes the connection over) a
# content header frame larger than its frame_max (128 KiB by default); the largest headers are dropped first.
MAX_COPIED_HEADER_BYTES = 16 * 1024


class Action(enum.Enum):
    ACK = "ack"
    REJECT = "reject"
    RETRY = "retry"


@dataclass(frozen=True)
class Publish:
    """A message for the worker to publish (with confirms and mandatory) before it acks the delivery."""

    exchange: str
    routing_key: str
    body: bytes
    content_type: str
    type: str
    correlation_id: str | None = None
    message_id: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Outcome:
    """What to do with one delivery: ACK (after publishing `publish`), REJECT (dead letter), RETRY (hold, retry)."""

    action: Action
    publish: Publish | None = None   # the result (ACK) or the annotated dead letter (REJECT)
    reply: Publish | None = None     # REJECT of a job with reply_to: the error result sent to the caller
    code: grpc.StatusCode | None = None
    reason: str = ""                 # short label for metrics: the status name, or "undecodable"/"too_large"
    error: str = ""                  # RETRY: the message of the transient failure


@dataclass(frozen=True)
class Delivery:
    """The parts of an AMQP delivery the core needs."""

    tag: int
    body: bytes
    content_type: str | None = None
    type: str | None = None
    message_id: str | None = None
    correlation_id: str | None = None
    reply_to: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    redelivered: bool = False
    timestamp: int | None = None


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = 1024 * 1024
    max_call_rows: int = 500          # rows per PredictBatch call (and never above the server's published limit)


class Scorer(Protocol):
    """What the core needs from the server; errors are predmesh.errors.PredmeshError."""

    def limits(self, model: str) -> CallLimits:
        """The server's published limits per call (GetModel); raises for an unknown model or a server down."""

    def predict_each(self, model: str, rows: Sequence[tuple[Features, str]]) -> list[StreamResult]:
        """One result per row, in order: its prediction (SDK Prediction, message in .raw) or its error; raises
        only for a problem of the call itself."""

    def predict_matrix(self, model: str, matrix: Any) -> Any:
        """A FeatureMatrix scored in one call with partial_success: its PredictionMatrix (refused rows in
        row_errors); raises only for a problem of the call itself."""


@dataclass
class _Job:
    delivery: Delivery
    request: jobs.Job
    rows: list[tuple[dict[str, Value], str]] | None  # None: not built yet (see rows_of)
    matrix: Any = None  # a matrix job: its FeatureMatrix with explicit request ids (rows stays empty)
    n_rows: int = 0
    size: int = 0       # request_bytes of its rows, once known


def handle(deliveries: Sequence[Delivery], scorer: Scorer, topology: jobs.Topology,
           limits: Limits = Limits()) -> list[Outcome]:
    """Score a window of deliveries together; one Outcome per delivery.

    The jobs of a model go in calls of whole jobs cut to the server's published limits (rows and request bytes)
    and to limits.max_call_rows; each call answers every row on its own (PredictBatch with partial_success), so
    a job with a refused row is rejected with that row's reason and the other jobs of the call are answered. A
    problem of the call itself (the model unknown, the server down) is true of every job in it.
    """
    outcomes: dict[int, Outcome] = {}
    by_model: dict[str, list[tuple[int, _Job]]] = defaultdict(list)
    for i, d in enumerate(deliveries):
        try:
            job = decode(d, limits)
        except jobs.BadJob as exc:
            outcomes[i] = reject(d, exc.code, exc.message, topology, "undecodable")
            continue
        by_model[job.request.model].append((i, job))
    for model, members in by_model.items():
        try:
            server = scorer.limits(model)
        except PredmeshError as err:  # NOT_FOUND: every job of the model is rejected; UNAVAILABLE: retried
            outcomes.update({i: failed(job, err, topology) for i, job in members})
            continue
        max_rows = min(limits.max_call_rows, server.max_batch_rows or limits.max_call_rows)
        max_bytes = server.max_request_bytes or None
        fitting = []
        for i, job in members:
            problem = _too_big(job, server, max_bytes)
            if problem:
                outcomes[i] = reject(job.delivery, grpc.StatusCode.INVALID_ARGUMENT, problem, topology,
                                     "too_large")
            elif job.matrix is not None:
                outcomes[i] = _score_matrix(model, job, scorer, topology)
            else:
                rows_of(job)
                fitting.append((i, job))
        for chunk in _chunks(fitting, max_rows, max_bytes, model):
            outcomes.update(_score_chunk(model, chunk, scorer, topology))
    return [outcomes[i] for i in range(len(deliveries))]


def decode(d: Delivery, limits: Limits) -> _Job:
    if len(d.body) > limits.max_body_bytes:
        raise jobs.BadJob(f"job body of {len(d.body)} bytes exceeds the limit of {limits.max_body_bytes} bytes; "
                          "split it into smaller jobs")
    request = jobs.decode_job(d.type, d.content_type, d.body)
    if jobs.is_matrix(request):
        assert isinstance(request, inference_pb2.PredictBatchRequest)
        matrix = jobs.matrix_of(request, d.message_id or "")
        return _Job(d, request, [], matrix, len(matrix.values) // len(matrix.feature_names))
    if isinstance(request, inference_pb2.PredictBatchRequest) and request.rows and d.message_id:
        # every row gets a request id: its rows are built once the job is known to fit a call (rows_of); for a
        # job of 100,000 rows that is 1.5 s of Python spared when it does not
        return _Job(d, request, None, None, len(request.rows))
    rows = jobs.job_rows(request, d.message_id or "")  # raises BadJob for no rows or a row without a request id
    return _Job(d, request, rows, None, len(rows), request_bytes(rows))


def rows_of(job: _Job) -> list[tuple[dict[str, Value], str]]:
    """The job's (features, request_id) rows, built on first use."""
    if job.rows is None:
        job.rows = jobs.job_rows(job.request, job.delivery.message_id or "")
    return job.rows


def batch_bytes(request: inference_pb2.PredictBatchRequest, message_id: str, stop_above: int | None = None) -> int:
    """request_bytes of the rows jobs.job_rows would give this batch job, from its encoded rows (no Python
    mapping per row): each row's features take its encoding less its request_id field. Counting stops once the
    total passes stop_above (the job is too large either way)."""
    total = 0
    for i, row in enumerate(request.rows):
        if stop_above is not None and total > stop_above:
            break
        rid = row.request_id
        if rid:
            n = len(rid.encode())
            total += row.ByteSize() - (1 + _varint_bytes(n) + n) + n + 8
        else:
            total += row.ByteSize() + len(f"{message_id}-{i}".encode()) + 8
    return total


def request_bytes(rows: Sequence[tuple[Mapping[str, Value], str]]) -> int:
    """An upper bound of the bytes these rows add to a PredictBatchRequest (each map entry exactly: its key and
    google.protobuf.Value with their tags and lengths; each row: its request_id and at most 8 more)."""
    return sum(sum(_entry_bytes(name, value) for name, value in features.items()) + len(rid.encode()) + 8
               for features, rid in rows)


def _varint_bytes(n: int) -> int:
    return 1 if n < 1 << 7 else 2 if n < 1 << 14 else 3 if n < 1 << 21 else 4 if n < 1 << 28 else 5


def _entry_bytes(name: str, value: Value) -> int:
    """The encoded size of one features map entry (tag, length, key field, value field)."""
    key, size = len(name.encode()), value.ByteSize()
    body = 1 + _varint_bytes(key) + key + 1 + _varint_bytes(size) + size
    return 1 + _varint_bytes(body) + body


def _too_big(job: _Job, server: CallLimits, max_bytes: int | None) -> str:
    """Why a job can never fit one call under the server's limits ("" when it can)."""
    n = job.n_rows
    if server.max_batch_rows and n > server.max_batch_rows:
        return (f"the job's {n} rows exceed the server's limit of {server.max_batch_rows} rows per call; split it "
                "into smaller jobs")
    overhead = len(job.request.model.encode()) + 16
    if job.matrix is not None:
        size = job.request.ByteSize()
    elif job.rows is None:
        assert isinstance(job.request, inference_pb2.PredictBatchRequest)
        size = job.size = batch_bytes(job.request, job.delivery.message_id or "",
                                      max_bytes - overhead if max_bytes else None)
    else:
        size = job.size
    if max_bytes and size + overhead > max_bytes:
        return (f"the job's rows exceed the server's limit of {max_bytes} bytes per request; split it into "
                "smaller jobs")
    return ""


def _chunks(members: list[tuple[int, _Job]], max_rows: int, max_bytes: int | None,
            model: str) -> Iterable[list[tuple[int, _Job]]]:
    """Consecutive groups of whole jobs with at most max_rows rows and max_bytes request bytes (a job over
    max_rows, within the server's limit, goes alone), and no request id twice in a group: a job sent twice (a
    publisher's retry) goes in the next call, where it gets the first one's answer (the server refuses an
    idempotency key used twice in one call)."""
    overhead = len(model.encode()) + 16
    chunk: list[tuple[int, _Job]] = []
    rows, size = 0, overhead
    ids: set[str] = set()
    for member in members:
        n, b = member[1].n_rows, member[1].size
        mine = [rid for _, rid in rows_of(member[1])]
        if chunk and (rows + n > max_rows or (max_bytes and size + b > max_bytes) or not ids.isdisjoint(mine)):
            yield chunk
            chunk, rows, size = [], 0, overhead
            ids = set()
        chunk.append(member)
        rows += n
        size += b
        ids.update(mine)
    if chunk:
        yield chunk


def _score_chunk(model: str, chunk: list[tuple[int, _Job]], scorer: Scorer,
                 topology: jobs.Topology) -> dict[int, Outcome]:
    rows = [row for _, job in chunk for row in rows_of(job)]
    try:
        results = scorer.predict_each(model, rows)
    except PredmeshError as err:
        if err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and TOO_LARGE_MESSAGE in err.message:
            # the call is over the server's message limit although cut to its published limits: score the jobs
            # one per call; a job too large on its own can never succeed as sent and is dead-lettered
            if len(chunk) == 1:
                [(i, job)] = chunk
                return {i: reject(job.delivery, err.code, f"the job is larger than the server takes in one call "
                                  f"({err.message}); split it into smaller jobs", topology, "too_large")}
            alone: dict[int, Outcome] = {}
            for member in chunk:
                alone.update(_score_chunk(model, [member], scorer, topology))
            return alone
        if err.code == grpc.StatusCode.INVALID_ARGUMENT:
            # the call itself was refused although it was cut to the published limits (the server's limits
            # changed under us): nothing is wrong with the jobs, so they are retried once the limits are re-read
            return {i: Outcome(Action.RETRY, code=err.code, reason=err.code.name, error=err.message)
                    for i, _ in chunk}
        if err.code in SERVER_FAULTS and len(chunk) > 1:
            return _apart(model, chunk, scorer, topology)
        return {i: failed(job, err, topology) for i, job in chunk}
    out, at = {}, 0
    for i, job in chunk:
        n = job.n_rows
        mine = results[at:at + n]
        at += n
        if jobs.answers_each_row(job.request):  # the job asked for per-row answers: it is answered, refused rows too
            out[i] = answered(job, jobs.each_row_result_of([r.raw for r in mine]), topology)
            continue
        refused = next(((k, r.error) for k, r in enumerate(mine) if r.error is not None), None)
        if refused is None:
            result = jobs.result_of(job.request, [r.prediction.raw for r in mine if r.prediction is not None])
            out[i] = answered(job, result, topology)
            continue
        k, why = refused  # the job stays all or nothing: its first refused row rejects it
        out[i] = failed_with(job, why.code, why.message if n == 1 else f"row {k}: {why.message}", topology)
    return out


def _apart(model: str, chunk: list[tuple[int, _Job]], scorer: Scorer,
           topology: jobs.Topology) -> dict[int, Outcome]:
    """A call of several jobs failed with a server fault (INTERNAL, UNKNOWN): each job scored in a call of its own.
    A job that fails so while others of the call are scored is at fault itself (a model raising on its values): it
    is dead-lettered with the reason instead of held, since held it would fail every window it joins, pausing the
    consumer for a backoff each time, until its hold time ends and it takes its window-mates to the dead letters
    with it. When every job fails alone, the server is at fault: they stay held and are retried, as before."""
    alone: dict[int, Outcome] = {}
    for member in chunk:
        alone.update(_score_chunk(model, [member], scorer, topology))
    faults = {i: o.code for i, o in alone.items() if o.action is Action.RETRY and o.code in SERVER_FAULTS}
    if not faults or len(faults) == len(chunk):
        return alone
    jobs_of = dict(chunk)
    for i, code in faults.items():
        alone[i] = reject(jobs_of[i].delivery, code, f"the server failed on this job alone ({alone[i].error}) while "
                          f"{len(chunk) - len(faults)} other job(s) of its call were scored: its values, not the "
                          "server, are at fault", topology, "job_fault")
    log.warning("%d of %d jobs of a call failed alone with a server fault while the others were scored: "
                "dead-lettered", len(faults), len(chunk))
    return alone


def _score_matrix(model: str, job: _Job, scorer: Scorer, topology: jobs.Topology) -> Outcome:
    """A matrix job in a call of its own (its rows are already in columns): answered in columns; without
    partial_success its first refused row rejects it, as for a job of rows."""
    try:
        scored = scorer.predict_matrix(model, job.matrix)
    except PredmeshError as err:
        if err.code == grpc.StatusCode.RESOURCE_EXHAUSTED and TOO_LARGE_MESSAGE in err.message:
            return reject(job.delivery, err.code, f"the job is larger than the server takes in one call "
                          f"({err.message}); split it into smaller jobs", topology, "too_large")
        return failed(job, err, topology)  # alone in its call: INVALID_ARGUMENT is the job's own fault
    if scored.row_errors and not jobs.answers_each_row(job.request):
        first = scored.row_errors[0]
        code = grpc.StatusCode.INVALID_ARGUMENT
        code = next((c for c in grpc.StatusCode if c.value[0] == first.error.code), code)
        return failed_with(job, code, f"row {first.row}: {first.error.message}", topology)
    return answered(job, jobs.matrix_result_of(scored), topology)


def answered(job: _Job, result: Any, topology: jobs.Topology) -> Outcome:
    """ACK, publishing the result: to reply_to when set, else to the results exchange by model and label."""
    d = job.delivery
    content_type = d.content_type or jobs.PROTOBUF
    if d.reply_to:
        exchange, key = "", d.reply_to
    else:
        exchange, key = topology.results_exchange, jobs.routing_key(job.request, result)
    return Outcome(Action.ACK, Publish(
        exchange=exchange, routing_key=key, body=jobs.encode(result, content_type), content_type=content_type,
        type=jobs.type_name(result), correlation_id=d.correlation_id or d.message_id, message_id=d.message_id))


def failed(job: _Job, err: PredmeshError, topology: jobs.Topology) -> Outcome:
    return failed_with(job, err.code, err.message, topology)


def failed_with(job: _Job, code: grpc.StatusCode, message: str, topology: jobs.Topology) -> Outcome:
    """REJECT for a status no retry can change (PERMANENT), else RETRY."""
    if code in PERMANENT:
        return reject(job.delivery, code, message, topology, code.name)
    return Outcome(Action.RETRY, code=code, reason=code.name, error=message)


def reject(d: Delivery, code: grpc.StatusCode, message: str, topology: jobs.Topology, reason: str) -> Outcome:
    """REJECT: the job's body and properties to the dead-letter exchange with headers saying why (its own
    headers up to MAX_COPIED_HEADER_BYTES, see bounded_headers) and, when it has a reply_to, the error result
    (google.rpc.Status, in the job's encoding) to the caller."""
    try:
        deliveries = int((d.headers or {}).get("x-delivery-count", 0) or 0) + 1
    except (TypeError, ValueError):  # a producer's own header of that name
        deliveries = 1
    kept, dropped = bounded_headers(d.headers or {})
    headers = {**kept, jobs.HEADER_STATUS: code.name, jobs.HEADER_STATUS_CODE: code.value[0],
               jobs.HEADER_ERROR: message[:1000], jobs.HEADER_REASON: "rejected", jobs.HEADER_DELIVERIES: deliveries}
    if dropped:
        headers[jobs.HEADER_DROPPED] = ",".join(dropped)[:1000]
    reply = None
    if d.reply_to:
        content_type = d.content_type if d.content_type in jobs.CONTENT_TYPES else jobs.PROTOBUF
        error = jobs.error_result_of(code, message[:1000])
        reply = Publish(exchange="", routing_key=d.reply_to, body=jobs.encode(error, content_type),
                        content_type=content_type, type=jobs.type_name(error),
                        correlation_id=d.correlation_id or d.message_id, message_id=d.message_id)
    return Outcome(Action.REJECT, Publish(
        exchange=topology.dead_exchange, routing_key=topology.work_queue, body=d.body,
        content_type=d.content_type or "", type=d.type or "", correlation_id=d.correlation_id,
        message_id=d.message_id, headers=headers), reply=reply, code=code, reason=reason)


def header_bytes(value: Any) -> int:
    """A generous estimate of the bytes a header value takes in an AMQP field table."""
    if isinstance(value, (bytes, bytearray)):
        return len(value) + 5
    if isinstance(value, str):
        return len(value.encode(errors="replace")) + 5
    if isinstance(value, Mapping):
        return sum(len(str(k).encode(errors="replace")) + 1 + header_bytes(v) for k, v in value.items()) + 5
    if isinstance(value, (list, tuple)):
        return sum(header_bytes(v) for v in value) + 5
    return 9


def bounded_headers(headers: Mapping[str, Any],
                    limit: int = MAX_COPIED_HEADER_BYTES) -> tuple[dict[str, Any], list[str]]:
    """(the headers to copy into a dead letter, the names left out): the largest are dropped until the rest take
    at most `limit` bytes, so the dead letter's header frame stays far below the broker's frame_max."""
    sizes = {name: len(str(name).encode(errors="replace")) + 1 + header_bytes(v) for name, v in headers.items()}
    total, dropped = sum(sizes.values()), []
    for name in sorted(sizes, key=lambda n: -sizes[n]):
        if total <= limit:
            break
        dropped.append(str(name))
        total -= sizes[name]
    return {k: v for k, v in headers.items() if k not in dropped}, dropped
