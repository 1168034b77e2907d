"""The prediction writer on real PostgreSQL: rows the database refuses are quarantined alone, the rest of their
batch is stored, and later rows keep flowing (a client must not be able to stop all prediction logging)."""
from __future__ import annotations

import json
import random
import string
import time
import uuid

import pytest
from prometheus_client import CollectorRegistry

from database import repo
from database.connect import open_database, session
from database.migrate import migrate
from database.records import PredictionRecord
from inference.process.persistence import PersistenceMetrics, insert_records
from inference.recording.prediction_log import PredictionLog
from inference.recording.spool import Spool
from predmesh.values import encode
from tests.support.pg import TempSchema

pytestmark = pytest.mark.postgres


def good(i: int, tag: str) -> PredictionRecord:
    return PredictionRecord(
        prediction_id=str(uuid.uuid4()), request_id=f"{tag}-{i}", model="iris", model_version="1",
        features={"a": 1.0 + i, "b": 2.0}, label="setosa", probabilities={"setosa": 0.9, "virginica": 0.1},
        transport="grpc", latency_ms=1.5, created_at=time.time())


def poisoned() -> list[PredictionRecord]:
    """Rows PostgreSQL refuses, each for a different reason (SQLSTATE classes 54, 22 and 22 via jsonb)."""
    rng = random.Random(7)
    huge = "".join(rng.choice(string.ascii_letters + string.digits) for _ in range(9000))  # incompressible
    base = good(0, "poison")
    return [
        # too large for a btree row: the model name leads two page indexes (the request id, a plain column since
        # m0012, no longer sits in one)
        PredictionRecord(**{**_fields(base), "prediction_id": str(uuid.uuid4()), "request_id": "huge-model",
                            "model": huge}),
        PredictionRecord(**{**_fields(base), "prediction_id": str(uuid.uuid4()), "request_id": "nul\x00id"}),
        PredictionRecord(**{**_fields(base), "prediction_id": str(uuid.uuid4()), "request_id": "json-nul",
                            "features": {"a\x00": 1.0}}),
    ]


def _fields(r: PredictionRecord) -> dict:
    return {f: getattr(r, f) for f in r.__dataclass_fields__}


@pytest.mark.parametrize("durable", [True, False], ids=["durable", "async"])
def test_poisoned_rows_are_quarantined_alone_and_logging_goes_on(tmp_path, durable):
    with TempSchema() as schema:
        database = open_database(schema.url)
        with session():
            migrate(database)
        registry = CollectorRegistry()
        metrics = PersistenceMetrics(registry)
        spool = Spool(tmp_path / "spool", 16 * 1024 * 1024)
        plog = PredictionLog(spool, insert_records, durable=durable, metrics=metrics, batch_size=64,
                             flush_interval_s=0.05, retry_interval_s=0.2)
        try:
            first = [good(i, "a") for i in range(40)]
            bad = poisoned()
            batch = first[:20] + bad[:2] + first[20:] + bad[2:]
            plog.record(batch)  # one hand-off: the poisoned rows share a batch with the good ones
            assert plog.flush(30), "the writer is stuck on the poisoned batch"
            later = [good(i, "b") for i in range(25)]
            for r in later:
                plog.record([r])
            assert plog.flush(30), "rows after the poisoned batch do not flow"
            with session():
                stored = {p.request_id for p, _ in _all()}
            assert stored == {r.request_id for r in first + later}
            quarantined = [json.loads(p.read_bytes().split(b" ", 1)[1]) for p in spool.quarantine_dir.iterdir()]
            assert sorted(q["record"]["request_id"][:8] for q in quarantined) == sorted(
                r.request_id[:8] for r in bad)
            assert all(q["reason"] for q in quarantined)
            assert registry.get_sample_value("predmesh_db_rows_quarantined_total") == 3
            assert registry.get_sample_value("predmesh_prediction_rows_written_total") == len(first) + len(later)
            assert spool.unconsumed_bytes() == 0
        finally:
            plog.close()


@pytest.mark.parametrize("durable", [True, False], ids=["durable", "async"])
def test_a_poisoned_row_of_a_bulk_batch_is_quarantined_alone(tmp_path, durable):
    import numpy as np

    from database.records import PredictionBatch
    with TempSchema() as schema:
        database = open_database(schema.url)
        with session():
            migrate(database)
        registry = CollectorRegistry()
        spool = Spool(tmp_path / "spool", 16 * 1024 * 1024)
        plog = PredictionLog(spool, insert_records, durable=durable, metrics=PersistenceMetrics(registry),
                             batch_size=64, flush_interval_s=0.05, retry_interval_s=0.2)
        try:
            n = 200
            rids = [f"bulk-{i}" if i != 77 else "nul\x00bulk" for i in range(n)]
            probabilities = np.full((n, 2), 0.5)
            plog.record([PredictionBatch(
                prediction_ids=[str(uuid.uuid4()) for _ in range(n)], request_ids=rids, model="iris",
                model_version="1", feature_names=("a", "b"), features=np.ones((n, 2)), classes=("x", "y"),
                labels=np.zeros(n, dtype=int), probabilities=probabilities, transport="batch", latency_ms=1.0,
                created_at=time.time())])
            assert plog.flush(30), "the writer is stuck on the poisoned batch"
            with session():
                assert repo.count_predictions() == n - 1
            [quarantined] = [json.loads(p.read_bytes().split(b" ", 1)[1]) for p in spool.quarantine_dir.iterdir()]
            assert quarantined["record"]["request_id"] == "nul\x00bulk"
            assert registry.get_sample_value("predmesh_db_rows_quarantined_total") == 1
            assert registry.get_sample_value("predmesh_prediction_rows_written_total") == n - 1
        finally:
            plog.close()


def _all():
    rows, token = repo.list_predictions(repo.PredictionFilter(), 1000)
    assert not token
    return [(r.record, r.feedback_label) for r in rows]


def test_through_the_server_hostile_ids_are_refused_and_every_answered_row_is_stored(model_store, tmp_path):
    """The reported attack end to end: ids PostgreSQL would refuse are INVALID_ARGUMENT at the edge (never an OK
    whose row cannot be stored), and the rows of the calls answered OK around them all reach the database."""
    import grpc
    import psycopg2

    from predmesh.v1 import inference_pb2, inference_pb2_grpc
    from tests.conftest import IRIS_ROW
    from tests.support.pg import test_pg_url as pg_url
    from tests.support.procs import ServerProc, wait_for

    hostile = ["x" * 9000, "nul\x00id", "tab\tid", "r" * 129]
    with TempSchema() as schema:
        env = {"PREDMESH_DATABASE_URL": schema.url, "PREDMESH_SPOOL_DIR": str(tmp_path / "spool")}
        with ServerProc(model_store, tmp_path / "server.log", env=env) as proc:
            with grpc.insecure_channel(proc.target) as channel:
                stub = inference_pb2_grpc.InferenceServiceStub(channel)
                answered = []
                for i, rid in enumerate(hostile):
                    stub.Predict(inference_pb2.PredictRequest(model="iris", features=encode(IRIS_ROW),
                                                              request_id=f"ok-{i}"), timeout=10)
                    answered.append(f"ok-{i}")
                    with pytest.raises(grpc.RpcError) as info:
                        stub.Predict(inference_pb2.PredictRequest(model="iris", features=encode(IRIS_ROW),
                                                                  request_id=rid), timeout=10)
                    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                    assert "request_id" in (info.value.details() or "")

            def stored():
                with psycopg2.connect(pg_url()) as conn, conn.cursor() as cur:
                    cur.execute(f"SELECT request_id FROM {schema.name}.predictions")
                    return {r for (r,) in cur.fetchall()}
            wait_for(lambda: stored() == set(answered), 20, what="every answered row stored")
            assert proc.terminate() == 0
