"""The spool never replays into the wrong database, nor replays what is stored: a graceful stop leaves it empty,
and a spool holding records is bound to the identity of the database they were answered for."""
from __future__ import annotations

import signal

import grpc
import psycopg2
import pytest

from predmesh.v1 import inference_pb2, inference_pb2_grpc
from predmesh.values import encode
from tests.conftest import IRIS_ROW
from tests.support.pg import TempSchema
from tests.support.pg import test_pg_url as pg_url
from tests.support.procs import ServerProc, wait_for

pytestmark = pytest.mark.postgres


def _predict(target: str, ids) -> None:
    with grpc.insecure_channel(target) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        for rid in ids:
            stub.Predict(inference_pb2.PredictRequest(model="iris", features=encode(IRIS_ROW), request_id=rid),
                         timeout=10)


def _stored(schema: TempSchema) -> set[str]:
    with psycopg2.connect(pg_url()) as conn, conn.cursor() as cur:
        cur.execute(f"SELECT request_id FROM {schema.name}.predictions")
        return {r for (r,) in cur.fetchall()}


def _spool_bytes(spool) -> int:
    return sum(p.stat().st_size for p in spool.glob("p*/seg-*.log"))


def _env(url: str, spool) -> dict[str, str]:
    return {"PREDMESH_DATABASE_URL": url, "PREDMESH_SPOOL_DIR": str(spool), "PREDMESH_PERSISTENCE": "durable"}


def test_a_graceful_stop_leaves_the_spool_empty_and_deleted_rows_stay_deleted(model_store, tmp_path):
    spool = tmp_path / "spool"
    with TempSchema() as a:
        with ServerProc(model_store, tmp_path / "run1.log", env=_env(a.url, spool)) as proc:
            _predict(proc.target, [f"g-{i}" for i in range(30)])
            assert proc.terminate() == 0
        assert _stored(a) == {f"g-{i}" for i in range(30)}
        assert _spool_bytes(spool) == 0
        with psycopg2.connect(pg_url()) as conn, conn.cursor() as cur:  # an operator deletes rows
            cur.execute(f"DELETE FROM {a.name}.predictions WHERE request_id LIKE 'g-1%'")
        with ServerProc(model_store, tmp_path / "run2.log", env=_env(a.url, spool)) as proc:
            _predict(proc.target, ["after-restart"])
            wait_for(lambda: "after-restart" in _stored(a), 15, what="the new row stored")
            assert proc.terminate() == 0
        deleted = {f"g-{i}" for i in range(30) if str(i).startswith("1")}
        assert _stored(a) == ({f"g-{i}" for i in range(30)} - deleted) | {"after-restart"}


def test_a_spool_holding_records_refuses_another_database_naming_both(model_store, tmp_path):
    spool = tmp_path / "spool"
    sqlite_url = f"sqlite:///{tmp_path / 'other.db'}"
    with TempSchema() as a:
        proc = ServerProc(model_store, tmp_path / "run1.log", env=_env(a.url, spool)).start()
        try:
            _predict(proc.target, [f"k-{i}" for i in range(20)])
            proc.started.send_signal(signal.SIGKILL)  # records stay in the spool (the read position is not durable)
            proc.wait()
        finally:
            proc.kill()
        assert _spool_bytes(spool) > 0
        # another database (SQLite), and another schema of the same PostgreSQL database: refused, exit code 2
        with TempSchema() as b:
            for url, other in ((sqlite_url, "SQLite file"), (b.url, f"schema '{b.name}'")):
                refused = ServerProc(model_store, tmp_path / "refused.log", env=_env(url, spool))
                with pytest.raises(RuntimeError, match="server exited with 2") as info:
                    refused.start()
                message = str(info.value)
                assert "must not be replayed into another database" in message
                assert f"schema '{a.name}'" in message and other in message, message
        # back to the right database: it starts, replays (duplicates ignored), and a graceful stop empties it
        with ServerProc(model_store, tmp_path / "run2.log", env=_env(a.url, spool)) as proc:
            assert proc.terminate() == 0
        assert _stored(a) == {f"k-{i}" for i in range(20)}
        assert _spool_bytes(spool) == 0
        # an empty spool follows the configured database
        with ServerProc(model_store, tmp_path / "run3.log", env=_env(sqlite_url, spool)) as proc:
            _predict(proc.target, ["on-sqlite"])
            assert proc.terminate() == 0
        assert _stored(a) == {f"k-{i}" for i in range(20)}
