"""The RabbitMQ message contract: a job is a predmesh.v1 PredictRequest or PredictBatchRequest, a result its response.

- The AMQP `type` property names the job's message (`predmesh.v1.PredictRequest` / `predmesh.v1.PredictBatchRequest`);
  the body is binary protobuf (`content_type` application/x-protobuf) or its proto3 JSON mapping (application/json).
- `message_id` is the idempotency key: a row without its own request_id gets `message_id` (batch rows
  `message_id-<row>`), so a redelivered job is stored once, with the same prediction_id.
- A result is the matching PredictResponse / PredictBatchResponse, in the job's encoding, with the job's
  correlation_id (the message_id when the job has none); to `reply_to` when set, else to the results exchange with
  routing key `<model>.<label>` (batch: `<model>.batch`).
- A batch job is all or nothing: one refused row dead-letters it. A batch job with `partial_success` set is answered
  row by row instead: its result holds one BatchRowResult per row (`results`: the prediction or that row's error).
- A batch job sent as a `matrix` (FeatureMatrix, the columnar form) is answered in columns: a PredictBatchResponse
  whose `matrix` holds the scores (with partial_success, its `row_errors` name the refused rows). Its rows get the
  request ids `<request_id_prefix><row_number>`; without a prefix `message_id-` is the prefix and the row numbers
  default to 0, 1, ...
- A dead-lettered job keeps its body and properties (oversized headers are dropped, see HEADER_DROPPED) and gains
  headers saying why (the gRPC status and message). A job that asked for a reply (`reply_to`) also gets an error
  result there: a google.rpc.Status (`type` google.rpc.Status, the job's encoding, its correlation_id) with the
  gRPC status code and message.
This module has no AMQP dependency: any producer with the protos can build jobs; pika lives in predmesh.publisher.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError, Message
from google.protobuf.struct_pb2 import Value
from google.protobuf.unknown_fields import UnknownFieldSet
from google.rpc import status_pb2

from predmesh import calls
from predmesh.v1 import inference_pb2, model_pb2
from predmesh.values import Features, fill, unreadable_features, upgrade_message

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
CONTENT_TYPES = (PROTOBUF, JSON)

PREDICT = "predmesh.v1.PredictRequest"
PREDICT_BATCH = "predmesh.v1.PredictBatchRequest"
PREDICT_RESULT = "predmesh.v1.PredictResponse"
PREDICT_BATCH_RESULT = "predmesh.v1.PredictBatchResponse"
ERROR_RESULT = "google.rpc.Status"  # the result of a rejected job, sent to its reply_to
JOB_TYPES: dict[str, type[inference_pb2.PredictRequest] | type[inference_pb2.PredictBatchRequest]] = {
    PREDICT: inference_pb2.PredictRequest, PREDICT_BATCH: inference_pb2.PredictBatchRequest}

# Headers of a dead letter: why the consumer rejected the job.
HEADER_STATUS = "x-predmesh-status"          # gRPC status name, e.g. INVALID_ARGUMENT
HEADER_STATUS_CODE = "x-predmesh-status-code"  # its number, e.g. 3
HEADER_ERROR = "x-predmesh-error"            # the server's (or the decoder's) message
HEADER_REASON = "x-predmesh-death-reason"    # "rejected" (the consumer refused it)
HEADER_DELIVERIES = "x-predmesh-deliveries"  # how many times the consumer had received it (1 = first delivery)
HEADER_DROPPED = "x-predmesh-dropped-headers"  # names of the job's headers left out of the dead letter (too large)


@dataclass(frozen=True)
class Topology:
    """Names of the exchanges and queues; the prefix lets several deployments (or tests) share one broker."""

    prefix: str = "predmesh"

    @property
    def work_queue(self) -> str:
        return f"{self.prefix}.predict"

    @property
    def dead_exchange(self) -> str:
        return f"{self.prefix}.dlx"

    @property
    def dead_queue(self) -> str:
        return f"{self.prefix}.predict.dead"

    @property
    def results_exchange(self) -> str:
        return f"{self.prefix}.results"

    def work_queue_arguments(self, delivery_limit: int = 10) -> dict[str, Any]:
        """Durable quorum queue, delivery limit, at-least-once dead-lettering (needs overflow reject-publish)."""
        return {"x-queue-type": "quorum", "x-delivery-limit": delivery_limit,
                "x-dead-letter-exchange": self.dead_exchange, "x-dead-letter-strategy": "at-least-once",
                "x-overflow": "reject-publish"}

    @staticmethod
    def dead_queue_arguments() -> dict[str, Any]:
        return {"x-queue-type": "quorum"}


class BadJob(Exception):
    """A message that can never be scored as it is; carries the gRPC status it would get."""

    def __init__(self, message: str, code: grpc.StatusCode = grpc.StatusCode.INVALID_ARGUMENT):
        super().__init__(message)
        self.message = message
        self.code = code


Job = inference_pb2.PredictRequest | inference_pb2.PredictBatchRequest


def predict_job(model: str, features: Features, request_id: str = "") -> inference_pb2.PredictRequest:
    """A predict job; features as for Client.predict (a number, a string for a category, a bool, or None)."""
    out = inference_pb2.PredictRequest(model=model, request_id=request_id)
    fill(out.features, features)
    return out


def batch_job(model: str, rows: Sequence[Features | tuple[Features, str]], *,
              partial_success: bool = False) -> inference_pb2.PredictBatchRequest:
    """A batch job; a row is a features mapping or a (features, request_id) pair. partial_success: answer each
    row on its own (a refused row does not dead-letter the job)."""
    out = inference_pb2.PredictBatchRequest(model=model, partial_success=partial_success)
    for i, row in enumerate(rows):
        features, request_id = row if isinstance(row, tuple) else (row, "")
        fill(out.rows.add(request_id=request_id).features, features, f"rows[{i}]")
    return out


def matrix_job(model: str, feature_names: Sequence[str], values: Iterable[float], *,
               string_columns: Mapping[str, Sequence[str | None]] | None = None, request_id_prefix: str = "",
               row_numbers: Sequence[int] = (), partial_success: bool = False) -> inference_pb2.PredictBatchRequest:
    """A batch job in columns, as Client.predict_matrix sends it: numbers and booleans (1.0/0.0, NaN for missing)
    in feature_names/values, each categorical feature in string_columns (None for missing)."""
    request: inference_pb2.PredictBatchRequest = calls.predict_matrix(
        model, feature_names, values, string_columns=string_columns, request_id_prefix=request_id_prefix,
        row_numbers=row_numbers, partial_success=partial_success).request
    return request


def type_name(message: Message) -> str:
    return message.DESCRIPTOR.full_name


def encode(message: Message, content_type: str = PROTOBUF) -> bytes:
    """Serialise a job or result in one of the two encodings."""
    if content_type == PROTOBUF:
        return message.SerializeToString()
    if content_type == JSON:
        return json_format.MessageToJson(message, preserving_proto_field_name=True, indent=None).encode()
    raise ValueError(f"content type {content_type!r} is not one of {', '.join(CONTENT_TYPES)}")


def decode_job(type_: str | None, content_type: str | None, body: bytes) -> Job:
    """The job in a message body; raises BadJob (INVALID_ARGUMENT) naming what is wrong."""
    cls = JOB_TYPES.get(type_ or "")
    if cls is None:
        raise BadJob(f"message type {type_!r} is not a job; set the AMQP type to {PREDICT} or {PREDICT_BATCH}")
    job = cls()
    if content_type == PROTOBUF:
        try:
            job.ParseFromString(body)
        except DecodeError as exc:
            raise BadJob(f"body is not a binary {type_}: {exc}") from None
        if len(UnknownFieldSet(job)) or _has_unknown_rows(job):
            holders = job.rows if isinstance(job, inference_pb2.PredictBatchRequest) else [job]
            old = [name for holder in holders for name in unreadable_features(holder)]
            if old:  # a job built for predmesh 0.2: its feature values are doubles
                raise BadJob(upgrade_message(old[0]))
            raise BadJob(f"body is not a {type_}: it has fields {type_} does not define")
    elif content_type == JSON:
        try:
            json_format.Parse(body, job)
        except (json_format.ParseError, UnicodeDecodeError, ValueError) as exc:
            raise BadJob(f"body is not a proto3 JSON {type_}: {exc}") from None
    else:
        raise BadJob(f"content_type {content_type!r} is not supported; use {PROTOBUF} or {JSON}")
    return job


def _has_unknown_rows(job: Job) -> bool:
    return isinstance(job, inference_pb2.PredictBatchRequest) and any(len(UnknownFieldSet(r)) for r in job.rows)


def job_rows(job: Job, message_id: str) -> list[tuple[dict[str, Value], str]]:
    """(features, request_id) per row; rows without a request_id get message_id (batch rows message_id-<row>).
    The features stay the job's google.protobuf.Values, sent on as they are (the server checks them: a Value
    without a kind, from a job built for predmesh 0.2, is refused naming the feature)."""
    if isinstance(job, inference_pb2.PredictRequest):
        rows = [(dict(job.features), job.request_id or message_id)]
    else:
        if job.HasField("matrix"):
            raise BadJob("a matrix job has no rows of maps; see matrix_rows")
        if not job.rows:
            raise BadJob("the batch job has no rows; send at least one row")
        rows = [(dict(r.features), r.request_id or (f"{message_id}-{i}" if message_id else ""))
                for i, r in enumerate(job.rows)]
    for i, (_, request_id) in enumerate(rows):
        if not request_id:
            raise BadJob(f"row {i} has no request_id and the message no message_id; set the AMQP message_id "
                         "(the job's idempotency key)")
    return rows


def is_matrix(job: Job) -> bool:
    """Whether the job is a batch job sent in columns (FeatureMatrix)."""
    return isinstance(job, inference_pb2.PredictBatchRequest) and job.HasField("matrix")


def matrix_of(job: inference_pb2.PredictBatchRequest, message_id: str) -> inference_pb2.FeatureMatrix:
    """The job's matrix with its rows' request ids made explicit: its own prefix and row numbers, else the prefix
    `message_id-` and row numbers 0..n-1 (so a redelivered job stores nothing twice); raises BadJob naming what
    is wrong with its shape."""
    m = job.matrix
    names, values = len(m.feature_names), len(m.values)
    if not names and not m.string_columns:
        raise BadJob("the matrix job has no feature_names and no string_columns; name every feature of the model "
                     "once")
    if names and values % names:
        raise BadJob(f"the matrix job has {values} values, not a multiple of its {names} feature_names")
    n = values // names if names else len(m.string_columns[0].values)
    if not n:
        raise BadJob("the matrix job has no rows; send at least one row of values")
    for column in m.string_columns:
        if len(column.values) != n:
            raise BadJob(f"the matrix job's string column {column.name!r} has {len(column.values)} values for {n} "
                         "rows; send one per row")
        if any(row >= n for row in column.missing_rows):
            raise BadJob(f"the matrix job's string column {column.name!r} lists a missing row beyond its {n} rows")
    if m.row_numbers and len(m.row_numbers) != n:
        raise BadJob(f"the matrix job has {len(m.row_numbers)} row_numbers for {n} rows; send one per row")
    out = inference_pb2.FeatureMatrix()
    out.CopyFrom(m)
    if not out.request_id_prefix:
        if not message_id:
            raise BadJob("the matrix job has no request_id_prefix and the message no message_id; set the AMQP "
                         "message_id (the job's idempotency key)")
        out.request_id_prefix = f"{message_id}-"
        if not out.row_numbers:
            out.row_numbers.extend(range(n))
    return out


def matrix_result_of(matrix: inference_pb2.PredictionMatrix) -> Message:
    """The response message answering a matrix job: its scores in columns."""
    return inference_pb2.PredictBatchResponse(matrix=matrix)


def error_result_of(code: grpc.StatusCode, message: str) -> Message:
    """The result sent to the reply_to of a rejected job: its gRPC status code and message."""
    status: Message = status_pb2.Status(code=code.value[0], message=message)
    return status


def result_of(job: Job, predictions: Sequence[model_pb2.Prediction]) -> Message:
    """The response message answering a job, from its predictions (predmesh.v1.Prediction), in row order."""
    if isinstance(job, inference_pb2.PredictRequest):
        [prediction] = predictions
        return inference_pb2.PredictResponse(prediction=prediction)
    return inference_pb2.PredictBatchResponse(predictions=predictions)


def answers_each_row(job: Job) -> bool:
    """Whether the job asked for its rows to be answered one by one (a batch job with partial_success)."""
    return isinstance(job, inference_pb2.PredictBatchRequest) and job.partial_success


def each_row_result_of(results: Sequence[inference_pb2.BatchRowResult]) -> Message:
    """The response message answering a batch job with partial_success: one BatchRowResult per row, in row
    order."""
    return inference_pb2.PredictBatchResponse(results=results)


def routing_key(job: Job, result: Message) -> str:
    """`<model>.<label>` for one row, `<model>.batch` for a batch."""
    if isinstance(result, inference_pb2.PredictResponse):
        return f"{job.model}.{result.prediction.label}"
    return f"{job.model}.batch"


def decode_result(type_: str | None, content_type: str | None, body: bytes) -> Message:
    """A result message body as PredictResponse, PredictBatchResponse or (a rejected job) google.rpc.Status."""
    results: dict[str, type[Message]] = {
        PREDICT_RESULT: inference_pb2.PredictResponse, PREDICT_BATCH_RESULT: inference_pb2.PredictBatchResponse,
        ERROR_RESULT: status_pb2.Status}
    cls = results.get(type_ or "")
    if cls is None:
        raise ValueError(f"message type {type_!r} is not a result")
    result = cls()
    if content_type == JSON:
        json_format.Parse(body, result)
    else:
        result.ParseFromString(body)
    return result
