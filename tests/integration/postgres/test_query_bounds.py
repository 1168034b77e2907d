"""Analytics SQL is bounded by the caller (a real server on PostgreSQL, and on SQLite for the statuses): a call
whose deadline passes answers DEADLINE_EXCEEDED naming what was slow and leaves no query running; a cancelled call
cancels its query; the server's cap answers RESOURCE_EXHAUSTED. The database is made slow by the fault point
analytics.query_delay_ms (pg_sleep inside the call's bounded SQL; tests only)."""
from __future__ import annotations

import time

import grpc
import psycopg2
import pytest

from predmesh.v1 import analytics_pb2, analytics_pb2_grpc, model_pb2
from tests.support.pg import TempSchema
from tests.support.pg import test_pg_url as pg_url
from tests.support.procs import ServerProc, wait_for

SLOW = {"PREDMESH_FAULTS": "analytics.query_delay_ms:20000"}  # every analytics call's SQL sleeps 20 s


def running_sleeps() -> int:
    """Queries of the fault point still active on the server (any schema; only these tests run it)."""
    with psycopg2.connect(pg_url(), connect_timeout=5) as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> pg_backend_pid() "
                    "AND query LIKE %s", ("%predmesh fault analytics.query_delay_ms%",))
        row = cur.fetchone()
        assert row is not None  # count(*) answers one row
        return row[0]


def details(error: grpc.RpcError) -> str:
    return error.details() or ""


def server(model_store, tmp_path, url: str, **env: str) -> ServerProc:
    return ServerProc(model_store, tmp_path / "server.log", env={"PREDMESH_DATABASE_URL": url, **SLOW, **env})


def stub(proc: ServerProc):
    channel = grpc.insecure_channel(proc.target)
    return channel, analytics_pb2_grpc.AnalyticsServiceStub(channel)


@pytest.fixture
def pg_schema():
    with TempSchema() as schema:
        yield schema


def test_a_deadline_ends_the_query_and_says_what_was_slow(model_store, tmp_path, pg_schema):
    with server(model_store, tmp_path, pg_schema.url) as proc:
        channel, analytics = stub(proc)
        with channel:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                analytics.GetStats(analytics_pb2.GetStatsRequest(model="iris"), timeout=3)
            took = time.monotonic() - started
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            # the server's own answer (before the client's deadline), naming the call and its filter
            assert "GetStats (model='iris') is slow" in details(caught.value)
            assert took < 3
            assert running_sleeps() == 0  # nothing left running on PostgreSQL once the call has answered
            with pytest.raises(grpc.RpcError) as listed:
                analytics.ListPredictions(analytics_pb2.ListPredictionsRequest(transport=model_pb2.TRANSPORT_GRPC),
                                          timeout=2)
            assert listed.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "ListPredictions (transport='grpc') is slow" in details(listed.value)
            assert running_sleeps() == 0


def test_a_cancelled_call_cancels_its_query(model_store, tmp_path, pg_schema):
    with server(model_store, tmp_path, pg_schema.url) as proc:
        channel, analytics = stub(proc)
        with channel:
            call = analytics.ListPredictions.future(analytics_pb2.ListPredictionsRequest(), timeout=60)
            wait_for(lambda: running_sleeps() == 1, 5, what="the call's query running on PostgreSQL")
            call.cancel()
            started = time.monotonic()
            wait_for(lambda: running_sleeps() == 0, 1.0, what="the cancelled call's query to end")
            assert time.monotonic() - started < 1.0
            assert "failed unexpectedly" not in proc.log_path.read_text()  # no INTERNAL, no traceback


def test_the_server_cap_refuses_an_expensive_call(model_store, tmp_path, pg_schema):
    with server(model_store, tmp_path, pg_schema.url, PREDMESH_ANALYTICS_MAX_SECONDS="1") as proc:
        channel, analytics = stub(proc)
        with channel:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                analytics.ListBatchRuns(analytics_pb2.ListBatchRunsRequest(model="iris"), timeout=30)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "ListBatchRuns (model='iris') is too expensive" in details(caught.value)
            assert "PREDMESH_ANALYTICS_MAX_SECONDS" in details(caught.value)
            assert time.monotonic() - started < 3
            assert running_sleeps() == 0


def test_sqlite_answers_the_same_statuses(model_store, tmp_path):
    with server(model_store, tmp_path, f"sqlite:///{tmp_path / 'p.db'}") as proc:
        channel, analytics = stub(proc)
        with channel:
            started = time.monotonic()
            with pytest.raises(grpc.RpcError) as caught:
                analytics.GetStats(analytics_pb2.GetStatsRequest(model="iris"), timeout=2)
            assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
            assert "GetStats (model='iris') is slow" in details(caught.value)
            assert time.monotonic() - started < 2
