"""What the REST API enforces beyond the protos' types, for the OpenAPI document: the server's bounds on fields
(inference/bounds.py, inference/rpc/*.py; the gateway may not import them, tests/unit/gateway compares the
values), who must authenticate, and the answers Envoy itself gives (provoked through a real Envoy by
tests/integration/envoy/test_openapi_truth.py; 409 is the idempotency rule of issue #23: a request_id reused
for a different request)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

MAX_NAME = 64  # model, version and run-kind names (inference.bounds.MAX_NAME)
MAX_ID = 128  # request ids and prediction ids (inference.bounds.MAX_ID)
MAX_LABEL = 128  # class labels (inference.bounds.MAX_LABEL)
MAX_TOKEN = 512  # page tokens (inference.bounds.MAX_TOKEN)
MAX_PAGE = 1000  # page_size (inference.rpc.analytics.MAX_PAGE)
MAX_FEEDBACK_ITEMS = 1000  # per SubmitFeedbackBatch (inference.rpc.analytics.MAX_FEEDBACK_ITEMS)
SERIES_STEP = 60  # GetStats bucket_seconds is a multiple of this (inference.rpc.analytics.SERIES_STEP)
MAX_SERIES_BUCKETS = 2000  # buckets of one GetStats series (database.repo.MAX_SERIES_BUCKETS)
MAX_RUN_KEY, MAX_RUN_MESSAGE = 128, 1024  # inference.rpc.analytics
MAX_RUN_DURATION_S = 1e9
MAX_REASON = 1024  # a fleet change's reason (inference.rpc.servicer.MAX_REASON); changed_by: MAX_ID
DEFAULT_MAX_BATCH_ROWS = 1000  # the server's PREDMESH_MAX_BATCH_ROWS default (inference.settings)
# inference.bounds.check_name without a look-ahead (generators handle it): 1-64 of letters, digits, '_', '-', '.',
# starting with a letter or digit, never two dots in a row
NAME_PATTERN = r"^[A-Za-z0-9](\.?[A-Za-z0-9_-])*\.?$"
OPTIONAL_NAME_PATTERN = r"^([A-Za-z0-9](\.?[A-Za-z0-9_-])*\.?)?$"
NAME = {"type": "string", "minLength": 1, "maxLength": MAX_NAME, "pattern": NAME_PATTERN,
        "description": "A name: 1-64 letters, digits, '_', '-', '.', starting with a letter or digit, no '..'."}
OPTIONAL_NAME = {"type": "string", "maxLength": MAX_NAME, "pattern": OPTIONAL_NAME_PATTERN}
PRINTABLE = "Printable characters only (no control characters)."

# RPCs whose callers must present a bearer token (inference.rpc.auth.WRITE_METHODS; the admin service: every RPC)
WRITE_METHODS = frozenset({"predmesh.v1.AnalyticsService.SubmitFeedback",
                           "predmesh.v1.AnalyticsService.SubmitFeedbackBatch",
                           "predmesh.v1.AnalyticsService.RecordBatchRun"})
AUTH_SERVICES = frozenset({"predmesh.v1.ModelAdminService"})
# RPCs that write a prediction under a caller's idempotency key (a key reused with another request is refused)
KEYED_METHODS = frozenset({"predmesh.v1.InferenceService.Predict", "predmesh.v1.InferenceService.PredictBatch"})
BEARER = "bearer"


@dataclass(frozen=True)
class ApiLimits:
    """The deployment's limits the document states (the gateway's settings and the server's batch limit)."""

    max_batch_rows: int = DEFAULT_MAX_BATCH_ROWS
    max_body_bytes: int = 64 * 1024
    max_header_kb: int = 32
    rate_limit_rps: int = 2000
    route_timeout_s: float = 5.0


def field_rules(limits: ApiLimits) -> dict[str, dict[str, Any]]:
    """Extra JSON-schema keywords per "package.Message.field" (request bodies and query parameters)."""
    text = {"description": PRINTABLE}
    return {
        "predmesh.v1.PredictRequest.request_id": {"maxLength": MAX_ID, **text},
        "predmesh.v1.PredictRequest.features": {"minProperties": 1},
        "predmesh.v1.FeatureRow.request_id": {"maxLength": MAX_ID, **text},
        "predmesh.v1.FeatureRow.features": {"minProperties": 1},
        "predmesh.v1.PredictBatchRequest.rows": {"maxItems": limits.max_batch_rows},
        "predmesh.v1.FeatureMatrix.request_id_prefix": {"maxLength": MAX_ID - 1, **text},
        "predmesh.v1.FeatureMatrix.row_numbers": {"maxItems": limits.max_batch_rows},
        "predmesh.v1.SubmitFeedbackRequest.label": {"minLength": 1, "maxLength": MAX_LABEL, **text},
        "predmesh.v1.FeedbackItem.prediction_id": {"minLength": 1, "maxLength": MAX_ID, **text},
        "predmesh.v1.FeedbackItem.label": {"minLength": 1, "maxLength": MAX_LABEL, **text},
        "predmesh.v1.SubmitFeedbackBatchRequest.items": {"minItems": 1, "maxItems": MAX_FEEDBACK_ITEMS},
        "predmesh.v1.BatchRun.run_key": {"minLength": 1, "maxLength": MAX_RUN_KEY, **text},
        "predmesh.v1.BatchRun.kind": dict(NAME),
        "predmesh.v1.BatchRun.model": dict(NAME),
        "predmesh.v1.BatchRun.model_version": dict(OPTIONAL_NAME),
        "predmesh.v1.BatchRun.run_date": {"pattern": r"^(\d{4}-\d{2}-\d{2})?$"},
        "predmesh.v1.BatchRun.accuracy": {"minimum": 0, "maximum": 1},
        "predmesh.v1.BatchRun.duration_seconds": {"minimum": 0, "maximum": MAX_RUN_DURATION_S},
        "predmesh.v1.BatchRun.message": {"maxLength": MAX_RUN_MESSAGE, **text},
        "predmesh.v1.ReloadModelRequest.version": dict(OPTIONAL_NAME),
        **{f"predmesh.v1.{request}.{field}": {"maxLength": limit, **text}
           for request in ("RolloutModelRequest", "PinModelRequest", "RollbackModelRequest")
           for field, limit in (("reason", MAX_REASON), ("changed_by", MAX_ID))},
        # filters (query parameters)
        "predmesh.v1.ListPredictionsRequest.model": dict(OPTIONAL_NAME),
        "predmesh.v1.ListPredictionsRequest.model_version": dict(OPTIONAL_NAME),
        "predmesh.v1.ListPredictionsRequest.label": {"maxLength": MAX_LABEL, **text},
        "predmesh.v1.ListPredictionsRequest.page_size": {"minimum": 0, "maximum": MAX_PAGE},
        "predmesh.v1.ListPredictionsRequest.page_token": {"maxLength": MAX_TOKEN},
        "predmesh.v1.ListPredictionsRequest.request_id": {"maxLength": MAX_ID, **text},
        "predmesh.v1.CountPredictionsRequest.model": dict(NAME),
        "predmesh.v1.CountPredictionsRequest.request_id_prefix": {"minLength": 1, "maxLength": MAX_ID, **text},
        "predmesh.v1.GetStatsRequest.model": dict(OPTIONAL_NAME),
        "predmesh.v1.GetStatsRequest.bucket_seconds": {"minimum": 0, "multipleOf": SERIES_STEP},
        "predmesh.v1.ListBatchRunsRequest.model": dict(OPTIONAL_NAME),
        "predmesh.v1.ListBatchRunsRequest.kind": dict(OPTIONAL_NAME),
        "predmesh.v1.ListBatchRunsRequest.page_size": {"minimum": 0, "maximum": MAX_PAGE},
        "predmesh.v1.ListBatchRunsRequest.page_token": {"maxLength": MAX_TOKEN},
    }


# Path parameters by name (every path parameter of the contract is a model name or a prediction id)
PATH_RULES: dict[str, dict[str, Any]] = {
    "model": dict(NAME),
    "prediction_id": {"type": "string", "minLength": 1, "maxLength": MAX_ID, "description": PRINTABLE},
}

# Fields a request must carry, per message (the server refuses the request without them)
REQUIRED: dict[str, list[str]] = {
    "predmesh.v1.PredictRequest": ["features"],
    "predmesh.v1.FeatureRow": ["features"],
    "predmesh.v1.SubmitFeedbackRequest": ["label"],
    "predmesh.v1.SubmitFeedbackBatchRequest": ["items"],
    "predmesh.v1.FeedbackItem": ["prediction_id", "label"],
    "predmesh.v1.BatchRun": ["run_key", "kind", "model", "status"],
    "predmesh.v1.CountPredictionsRequest": ["model", "request_id_prefix"],
}

# Request messages with fields of which exactly one must be set, though the proto has no oneof for them
EITHER: dict[str, dict[str, Any]] = {
    "predmesh.v1.PredictBatchRequest": {
        "description": "Exactly one of rows (at least one row) or matrix.",
        "oneOf": [{"required": ["rows"], "properties": {"rows": {"minItems": 1}}},
                  {"required": ["matrix"]}]},
}

STATUS_REF = {"$ref": "#/components/schemas/google.rpc.Status"}
TEXT = {"type": "string"}


def _status(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": STATUS_REF}}}


def _text(description: str) -> dict:
    return {"description": description, "content": {"text/plain": {"schema": TEXT}}}


def _both(description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": STATUS_REF},
                                                    "text/plain": {"schema": TEXT}}}


def error_responses(limits: ApiLimits, *, has_body: bool, auth: bool, keyed: bool = False) -> dict[str, dict]:
    """Every status other than 200 an operation can answer, with the body each comes with: the gRPC status as
    google.rpc.Status JSON, or Envoy's own text/plain line."""
    out = {
        "400": _both("INVALID_ARGUMENT (also FAILED_PRECONDITION, OUT_OF_RANGE) as google.rpc.Status JSON: a field "
                     "out of its bounds, a bad name, features the model refuses. Or Envoy's transcoder, in "
                     "text/plain, before the server sees the request: malformed JSON, a value of the wrong type, "
                     "an unknown enum name, an unknown or malformed query parameter (the line names the field); or "
                     "'Bad Request' for a header name with an underscore."),
        "404": _both("NOT_FOUND (no such model, version or prediction) as google.rpc.Status JSON; a path or method "
                     "that is no operation: text/plain from Envoy."),
        "415": _text("A Content-Type other than application/json (text/plain, from Envoy)."),
        "429": _both("RESOURCE_EXHAUSTED as google.rpc.Status JSON (the server is overloaded, or the message is "
                     "over its size limit)"
                     + (f"; or Envoy's rate limit ({limits.rate_limit_rps} requests per second per listener): "
                        "text/plain 'local_rate_limited' with x-local-rate-limit: true" if limits.rate_limit_rps
                        else "")
                     + ". Retry later."),
        "431": _text(f"Request headers over {limits.max_header_kb} KiB (text/plain, from Envoy)."),
        "503": _both("UNAVAILABLE as google.rpc.Status JSON (model not loaded, database unreachable, draining); or, "
                     "from Envoy in text/plain, no replica reachable or the gateway's connection limits reached. "
                     "Retry later."),
        "504": _both(f"The call took longer than the gateway's timeout ({limits.route_timeout_s:g} s): "
                     "DEADLINE_EXCEEDED as google.rpc.Status JSON from the server, or 'upstream request timeout' "
                     "in text/plain from Envoy."),
    }
    if has_body:
        out["413"] = _text(f"Request body over {limits.max_body_bytes} bytes (text/plain, from Envoy's "
                           "transcoder).")
    if auth:
        out["401"] = _status("UNAUTHENTICATED: no 'Authorization: Bearer <token>' header, an unknown token, or "
                             "the server has no token for this role.")
        out["403"] = _status("PERMISSION_DENIED: a valid token whose role may not make this call.")
    if keyed:
        out["409"] = _status("ALREADY_EXISTS: a request_id (the idempotency key) was already used for a different "
                             "request (another model or other features); a retry of the same request gets the "
                             "original answer instead. Use a new request_id for a new request.")
    return dict(sorted(out.items()))


SECURITY_SCHEMES = {
    BEARER: {"type": "http", "scheme": "bearer",
             "description": "Authorization: Bearer <token>. Writes of monitoring data (feedback, batch runs) need "
                            "the writer or admin token (PREDMESH_WRITER_TOKEN, PREDMESH_ADMIN_TOKEN) unless the "
                            "server runs with PREDMESH_OPEN_WRITES; the admin listener's operations need the admin "
                            "token (reload, rollout, pin, rollback) or the read-only, writer or admin token (list "
                            "versions, desired state)."},
}
