"""Fuzzing AnalyticsService against real databases (SQLite, PostgreSQL): whatever a client puts in the fields
(NUL bytes, unknown enum values, out-of-range timestamps, forged page tokens, huge strings), the answer is OK,
INVALID_ARGUMENT or NOT_FOUND: never INTERNAL, UNKNOWN, or UNAVAILABLE (which the SDK would retry)."""
from __future__ import annotations

import base64
import contextlib
import json
import time
import uuid
from concurrent import futures
from typing import cast

import grpc
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from database import repo
from database.connect import open_database, session
from database.migrate import migrate
from database.records import PredictionRecord
from inference.process.persistence import PersistenceMetrics
from inference.rpc.analytics import AnalyticsServicer
from inference.rpc.auth import TokenAuth  # writes open: the fuzz reaches the checks
from inference.rpc.edge import DecodeGuard
from predmesh.v1 import analytics_pb2, analytics_pb2_grpc, model_pb2

ALLOWED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
EXAMPLES = 120


@contextlib.contextmanager
def analytics_served(db_url: str, records: list[PredictionRecord], auth: TokenAuth):
    """An AnalyticsServicer (behind the edge's DecodeGuard) on a freshly migrated database holding records; yields
    its stub, on a channel with gRPC's default limits (4 MiB received)."""
    database = open_database(db_url)
    with session():
        migrate(database)
        repo.insert_predictions(records)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), interceptors=[DecodeGuard()])
    analytics_pb2_grpc.add_AnalyticsServiceServicer_to_server(
        AnalyticsServicer(PersistenceMetrics(CollectorRegistry()), auth), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield analytics_pb2_grpc.AnalyticsServiceStub(channel)
    finally:
        server.stop(0)
        database.close()


def stored(request_id: str, created_at: float, model: str, features: dict, label: str,
           probabilities: dict[str, float]) -> PredictionRecord:
    return PredictionRecord(prediction_id=str(uuid.uuid4()), request_id=request_id, model=model,
                            model_version="1", features=features, label=label, probabilities=probabilities,
                            transport="grpc", latency_ms=1.0, created_at=created_at)


@pytest.fixture
def analytics(empty_db_url):
    now = time.time()
    records = [stored(f"r{i}", now - i, "iris", {"a": float(i)}, "setosa" if i % 2 else "virginica",
                      {"setosa": 0.5, "virginica": 0.5}) for i in range(5)]
    with analytics_served(empty_db_url, records, TokenAuth(None, open_writes=True)) as stub:
        yield stub


def _code(call, request) -> grpc.StatusCode:
    try:
        call(request, timeout=10)
    except grpc.RpcError as err:
        assert len(err.details() or "") <= 512
        return err.code()
    return grpc.StatusCode.OK


texts = st.one_of(st.text(max_size=30), st.text(alphabet=st.characters(codec="utf-8"), max_size=300),
                  st.sampled_from(["", "iris", "1", "setosa", "\x00", "a\x00b", "x" * 5000, "../x", "é" * 70]))
seconds = st.one_of(st.integers(-(2 ** 63), 2 ** 63 - 1), st.integers(-62_135_596_800, 253_402_300_799),
                    st.sampled_from([-62_135_596_801, 253_402_300_800, 0]))
nanos = st.one_of(st.integers(-(2 ** 31), 2 ** 31 - 1), st.integers(0, 999_999_999))
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
                           lambda inner: st.lists(inner, max_size=3), max_leaves=6)
tokens = st.one_of(
    texts,
    json_values.map(lambda v: base64.urlsafe_b64encode(json.dumps(v).encode()).decode().rstrip("=")),
    st.tuples(st.text(max_size=40), st.text(max_size=80)).map(
        lambda p: base64.urlsafe_b64encode(json.dumps(list(p)).encode()).decode().rstrip("=")),
    st.sampled_from(["2026-01-01T00:00:00", "0001-01-01T00:00:00", "9999-12-31T23:59:59"]).map(
        lambda t: base64.urlsafe_b64encode(json.dumps([t, "a\x00"]).encode()).decode()),
)


def _timestamp(request, field, draw_seconds, draw_nanos):
    ts = getattr(request, field)
    ts.seconds, ts.nanos = draw_seconds, draw_nanos


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=texts, version=texts, label=texts, transport=st.integers(-(2 ** 31), 2 ** 31 - 1),
       page_size=st.integers(-(2 ** 31), 2 ** 31 - 1), token=tokens,
       times=st.lists(st.tuples(seconds, nanos), min_size=0, max_size=2))
def test_list_predictions_never_fails_on_the_server(analytics, model, version, label, transport, page_size, token,
                                                   times):
    request = analytics_pb2.ListPredictionsRequest(model=model, model_version=version, label=label,
                                                   transport=transport, page_size=page_size, page_token=token)
    for field, (s, n) in zip(("start_time", "end_time"), times):
        _timestamp(request, field, s, n)
    assert _code(analytics.ListPredictions, request) in ALLOWED


run_tokens = st.one_of(tokens, st.tuples(st.sampled_from(["2026-01-01T00:00:00", "0001-01-01T00:00:00+01:00"]),
                                           st.one_of(st.integers(), st.integers(-(2 ** 64), 2 ** 64))).map(
    lambda p: base64.urlsafe_b64encode(json.dumps(list(p)).encode()).decode().rstrip("=")))


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=texts, kind=texts, run_key=texts, page_size=st.integers(-(2 ** 31), 2 ** 31 - 1), token=run_tokens)
@example(model="", kind="", run_key="", page_size=0,  # a run id past 64 bits: OverflowError in SQLite
         token=base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00", 2 ** 64]).encode()).decode())
def test_list_batch_runs_never_fails_on_the_server(analytics, model, kind, run_key, page_size, token):
    request = analytics_pb2.ListBatchRunsRequest(model=model, kind=kind, run_key=run_key, page_size=page_size,
                                                 page_token=token)
    assert _code(analytics.ListBatchRuns, request) in ALLOWED


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(model=texts, times=st.lists(st.tuples(seconds, nanos), min_size=0, max_size=2))
# the window's edges are rounded out to whole minutes: past the last or before the first representable Timestamp
@example(model="", times=[(-62135596800, 0), (253402300741, 0)])
def test_get_stats_never_fails_on_the_server(analytics, model, times):
    request = analytics_pb2.GetStatsRequest(model=model)
    for field, (s, n) in zip(("start_time", "end_time"), times):
        _timestamp(request, field, s, n)
    assert _code(analytics.GetStats, request) in ALLOWED


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(prediction_id=texts, label=texts)
def test_submit_feedback_never_fails_on_the_server(analytics, prediction_id, label):
    request = analytics_pb2.SubmitFeedbackRequest(prediction_id=prediction_id, label=label)
    assert _code(analytics.SubmitFeedback, request) in ALLOWED


@pytest.mark.parametrize("request_, problem", [
    (analytics_pb2.ListPredictionsRequest(model="iris\x00"), "model"),
    (analytics_pb2.ListPredictionsRequest(label="a\x00"), "label"),
    # a value no Transport names: the generated types admit only the enum's own
    (analytics_pb2.ListPredictionsRequest(transport=cast(model_pb2.Transport, 99)), "transport 99"),
    (analytics_pb2.ListPredictionsRequest(page_token="!!!"), "page_token"),
    (analytics_pb2.ListPredictionsRequest(page_token=base64.urlsafe_b64encode(
        json.dumps(["2026-01-01T00:00:00", "a\x00"]).encode()).decode()), "page_token"),
    (analytics_pb2.ListPredictionsRequest(page_size=-1), "page_size"),
])
def test_the_classic_bad_inputs_are_invalid_argument_naming_the_field(analytics, request_, problem):
    with pytest.raises(grpc.RpcError) as info:
        analytics.ListPredictions(request_, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and problem in (info.value.details() or "")


@pytest.mark.parametrize("run_id", [10 ** 30, -(10 ** 30), 2 ** 63, -1, True, 1.5], ids=repr)
def test_a_forged_batch_runs_page_token_is_invalid_argument(analytics, run_id):
    # an id beyond 64 bits reached SQLite, which raised OverflowError: INTERNAL (HTTP 500 on GET /v1/batchRuns)
    token = base64.urlsafe_b64encode(json.dumps(["2026-01-01T00:00:00", run_id]).encode()).decode().rstrip("=")
    with pytest.raises(grpc.RpcError) as info:
        analytics.ListBatchRuns(analytics_pb2.ListBatchRunsRequest(page_token=token), timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in (info.value.details() or "")


def test_out_of_range_timestamps_are_invalid_argument(analytics):
    request = analytics_pb2.GetStatsRequest()
    request.start_time.seconds = 10 ** 15
    with pytest.raises(grpc.RpcError) as info:
        analytics.GetStats(request, timeout=10)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "start_time" in (info.value.details() or "")
    ok = analytics.GetStats(analytics_pb2.GetStatsRequest(), timeout=10)
    assert ok.total == 5


def test_a_page_of_large_stored_rows_is_cut_short_and_every_row_is_listed(empty_db_url):
    """An unseen category is stored as sent (up to the request size): five rows of 900 KB made the newest page over
    4 MiB, and ListPredictions answered RESOURCE_EXHAUSTED ("Sent message larger than max"; HTTP 429 through the
    gateway) to every caller, the dashboard's history included, whatever the filter. A page is now cut at
    MAX_PAGE_BYTES with a token for the rest, and paging returns every row once."""
    from inference.rpc.analytics import MAX_PAGE_BYTES

    now = time.time()
    records = [stored(f"big{i}", now - i, "open", {"plan": f"{i}" + "x" * (900 * 1024 if i % 3 else 10)}, "yes",
                      {"yes": 1.0}) for i in range(12)]
    with analytics_served(empty_db_url, records, TokenAuth(None)) as stub:
        seen, token, pages = [], "", 0
        while True:
            page = stub.ListPredictions(analytics_pb2.ListPredictionsRequest(page_size=1000, page_token=token),
                                        timeout=10)
            assert page.ByteSize() <= MAX_PAGE_BYTES + 1024 * 1024  # one row beyond the budget at most
            seen += [p.prediction.request_id for p in page.predictions]
            token, pages = page.next_page_token, pages + 1
            if not token:
                break
    assert seen == [f"big{i}" for i in range(12)] and pages > 1
