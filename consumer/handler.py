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

from predmesh import jobs
from predmesh.errors import PredmeshError
from predmesh.types import CallLimits, StreamResult

log = logging.getLogger(__name__)

# A job that can never succeed: rejected to the dead-letter queue on its first delivery.
PERMANENT = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND})
# Everything else (UNAVAILABLE, RESOURCE_EXHAUSTED, DEADLINE_EXCEEDED, and also INTERNAL, UNAUTHENTICATED, ...)
# keeps the job unacked and is retried: a misconfigured or broken server must not empty the queue into the DLQ.


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
    code: grpc.StatusCode | None = None
    reason: str = ""                 # short label for metrics: the status name, or "undecodable"/"too_large"


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

    def predict_each(self, model: str, rows: Sequence[tuple[Mapping[str, float], str]]) -> list[StreamResult]:
        """One result per row, in order: its prediction (SDK Prediction, message in .raw) or its error; raises
        only for a problem of the call itself."""


@dataclass
class _Job:
    delivery: Delivery
    request: jobs.Job
    rows: list[tuple[dict[str, float], str]]


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
            else:
                fitting.append((i, job))
        for chunk in _chunks(fitting, max_rows, max_bytes, model):
            outcomes.update(_score_chunk(model, chunk, scorer, topology))
    return [outcomes[i] for i in range(len(deliveries))]


def decode(d: Delivery, limits: Limits) -> _Job:
    if len(d.body) > limits.max_body_bytes:
        raise jobs.BadJob(f"job body of {len(d.body)} bytes exceeds the limit of {limits.max_body_bytes} bytes; "
                          "split it into smaller jobs")
    request = jobs.decode_job(d.type, d.content_type, d.body)
    return _Job(d, request, jobs.job_rows(request, d.message_id or ""))


def request_bytes(rows: Sequence[tuple[Mapping[str, float], str]]) -> int:
    """An upper bound of the bytes these rows add to a PredictBatchRequest (each map entry: its key, an 8-byte
    double and at most 8 bytes of tags and lengths; each row: its request_id and at most 8 more)."""
    return sum(sum(len(name.encode()) + 16 for name in features) + len(rid.encode()) + 8 for features, rid in rows)


def _too_big(job: _Job, server: CallLimits, max_bytes: int | None) -> str:
    """Why a job can never fit one call under the server's limits ("" when it can)."""
    n = len(job.rows)
    if server.max_batch_rows and n > server.max_batch_rows:
        return (f"the job's {n} rows exceed the server's limit of {server.max_batch_rows} rows per call; split it "
                "into smaller jobs")
    if max_bytes and request_bytes(job.rows) + len(job.request.model.encode()) + 16 > max_bytes:
        return (f"the job's rows exceed the server's limit of {max_bytes} bytes per request; split it into "
                "smaller jobs")
    return ""


def _chunks(members: list[tuple[int, _Job]], max_rows: int, max_bytes: int | None,
            model: str) -> Iterable[list[tuple[int, _Job]]]:
    """Consecutive groups of whole jobs with at most max_rows rows and max_bytes request bytes (a job over
    max_rows, within the server's limit, goes alone)."""
    overhead = len(model.encode()) + 16
    chunk: list[tuple[int, _Job]] = []
    rows, size = 0, overhead
    for member in members:
        n, b = len(member[1].rows), request_bytes(member[1].rows)
        if chunk and (rows + n > max_rows or (max_bytes and size + b > max_bytes)):
            yield chunk
            chunk, rows, size = [], 0, overhead
        chunk.append(member)
        rows += n
        size += b
    if chunk:
        yield chunk


def _score_chunk(model: str, chunk: list[tuple[int, _Job]], scorer: Scorer,
                 topology: jobs.Topology) -> dict[int, Outcome]:
    rows = [row for _, job in chunk for row in job.rows]
    try:
        results = scorer.predict_each(model, rows)
    except PredmeshError as err:
        if err.code == grpc.StatusCode.INVALID_ARGUMENT:
            # the call itself was refused although it was cut to the published limits (the server's limits
            # changed under us): nothing is wrong with the jobs, so they are retried once the limits are re-read
            return {i: Outcome(Action.RETRY, code=err.code, reason=err.code.name) for i, _ in chunk}
        return {i: failed(job, err, topology) for i, job in chunk}
    out, at = {}, 0
    for i, job in chunk:
        n = len(job.rows)
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
    return Outcome(Action.RETRY, code=code, reason=code.name)


def reject(d: Delivery, code: grpc.StatusCode, message: str, topology: jobs.Topology, reason: str) -> Outcome:
    """REJECT: the job itself, unchanged, to the dead-letter exchange with headers saying why."""
    deliveries = int((d.headers or {}).get("x-delivery-count", 0) or 0) + 1
    headers = {**(d.headers or {}), jobs.HEADER_STATUS: code.name, jobs.HEADER_STATUS_CODE: code.value[0],
               jobs.HEADER_ERROR: message[:1000], jobs.HEADER_REASON: "rejected", jobs.HEADER_DELIVERIES: deliveries}
    return Outcome(Action.REJECT, Publish(
        exchange=topology.dead_exchange, routing_key=topology.work_queue, body=d.body,
        content_type=d.content_type or "", type=d.type or "", correlation_id=d.correlation_id,
        message_id=d.message_id, headers=headers), code=code, reason=reason)
