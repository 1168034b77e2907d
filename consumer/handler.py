"""The transport-free core: a window of deliveries in, one Outcome (ACK with a result, REJECT, RETRY) per delivery out.

Nothing here touches AMQP; the scorer is injected (the SDK client in production, a fake in unit tests).
"""
from __future__ import annotations

import enum
import logging
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc

from predmesh import jobs
from predmesh.errors import PredmeshError

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
    max_call_rows: int = 500          # rows per PredictBatch call (never above the server's PREDMESH_MAX_BATCH_ROWS)


class Scorer(Protocol):
    """What the core needs from the server; errors are predmesh.errors.PredmeshError."""

    def predict_batch(self, model: str, rows: Sequence[tuple[Mapping[str, float], str]]) -> list[Any]:
        """predmesh.v1.Prediction per row, in order; all rows or an error."""


@dataclass
class _Job:
    delivery: Delivery
    request: jobs.Job
    rows: list[tuple[dict[str, float], str]]


def handle(deliveries: Sequence[Delivery], scorer: Scorer, topology: jobs.Topology,
           limits: Limits = Limits()) -> list[Outcome]:
    """Score a window of deliveries together (one PredictBatch per model and chunk); one Outcome per delivery.

    A chunk that fails with INVALID_ARGUMENT is bisected (on job boundaries: a batch job stays all or nothing) so
    only the bad jobs are rejected; a transient error retries the whole chunk.
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
        for chunk in _chunks(members, limits.max_call_rows):
            outcomes.update(_score_chunk(model, chunk, scorer, topology))
    return [outcomes[i] for i in range(len(deliveries))]


def decode(d: Delivery, limits: Limits) -> _Job:
    if len(d.body) > limits.max_body_bytes:
        raise jobs.BadJob(f"job body of {len(d.body)} bytes exceeds the limit of {limits.max_body_bytes} bytes; "
                          "split it into smaller jobs")
    request = jobs.decode_job(d.type, d.content_type, d.body)
    rows = jobs.job_rows(request, d.message_id or "")
    for i, (features, _) in enumerate(rows):
        # never scorable (the server answers INVALID_ARGUMENT for any non-finite value): no round trip, no bisection
        bad = next((name for name, value in features.items() if not math.isfinite(value)), None)
        if bad is not None:
            where = f"row {i}: " if len(rows) > 1 else ""
            raise jobs.BadJob(f"{where}feature {bad!r} is {features[bad]}; send a finite number")
    return _Job(d, request, rows)


def _chunks(members: list[tuple[int, _Job]], max_rows: int) -> Iterable[list[tuple[int, _Job]]]:
    """Consecutive groups of whole jobs with at most max_rows rows (a bigger job goes alone)."""
    chunk: list[tuple[int, _Job]] = []
    rows = 0
    for member in members:
        n = len(member[1].rows)
        if chunk and rows + n > max_rows:
            yield chunk
            chunk, rows = [], 0
        chunk.append(member)
        rows += n
    if chunk:
        yield chunk


def _score_chunk(model: str, chunk: list[tuple[int, _Job]], scorer: Scorer,
                 topology: jobs.Topology) -> dict[int, Outcome]:
    rows = [row for _, job in chunk for row in job.rows]
    try:
        predictions = scorer.predict_batch(model, rows)
    except PredmeshError as err:
        # INVALID_ARGUMENT (or INTERNAL) may come from one job of several: bisect on job boundaries to find which
        # (a refused call is cheap, the server validates before it scores; about 2·log2(n) calls per bad job).
        # NOT_FOUND (the model is unknown) and the transient codes are true of every job in the chunk.
        if len(chunk) > 1 and err.code in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL):
            half = len(chunk) // 2
            return {**_score_chunk(model, chunk[:half], scorer, topology),
                    **_score_chunk(model, chunk[half:], scorer, topology)}
        return {i: failed(job, err, topology) for i, job in chunk}
    out, at = {}, 0
    for i, job in chunk:
        n = len(job.rows)
        out[i] = answered(job, predictions[at:at + n], topology)
        at += n
    return out


def answered(job: _Job, predictions: list, topology: jobs.Topology) -> Outcome:
    """ACK, publishing the result: to reply_to when set, else to the results exchange by model and label."""
    d = job.delivery
    result = jobs.result_of(job.request, predictions)
    content_type = d.content_type or jobs.PROTOBUF
    if d.reply_to:
        exchange, key = "", d.reply_to
    else:
        exchange, key = topology.results_exchange, jobs.routing_key(job.request, result)
    return Outcome(Action.ACK, Publish(
        exchange=exchange, routing_key=key, body=jobs.encode(result, content_type), content_type=content_type,
        type=jobs.type_name(result), correlation_id=d.correlation_id or d.message_id, message_id=d.message_id))


def failed(job: _Job, err: PredmeshError, topology: jobs.Topology) -> Outcome:
    if err.code in PERMANENT:
        return reject(job.delivery, err.code, err.message, topology, err.code.name)
    return Outcome(Action.RETRY, code=err.code, reason=err.code.name)


def reject(d: Delivery, code: grpc.StatusCode, message: str, topology: jobs.Topology, reason: str) -> Outcome:
    """REJECT: the job itself, unchanged, to the dead-letter exchange with headers saying why."""
    deliveries = int((d.headers or {}).get("x-delivery-count", 0) or 0) + 1
    headers = {**(d.headers or {}), jobs.HEADER_STATUS: code.name, jobs.HEADER_STATUS_CODE: code.value[0],
               jobs.HEADER_ERROR: message[:1000], jobs.HEADER_REASON: "rejected", jobs.HEADER_DELIVERIES: deliveries}
    return Outcome(Action.REJECT, Publish(
        exchange=topology.dead_exchange, routing_key=topology.work_queue, body=d.body,
        content_type=d.content_type or "", type=d.type or "", correlation_id=d.correlation_id,
        message_id=d.message_id, headers=headers), code=code, reason=reason)
