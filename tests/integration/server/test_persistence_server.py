"""A real server process storing predictions in PostgreSQL and in SQLite (same tests): idempotent retries,
the analytics API, feedback quality in GetStats and Prometheus, activation records, migration refusal."""
from __future__ import annotations

import itertools
import re
import time
import urllib.request

import pytest

from database import repo
from database.connect import open_database, session
from predmesh import Client, InvalidArgument, NotFound
from tests.conftest import IRIS_ROW
from tests.support.procs import WRITER_TOKEN, ServerProc, wait_for

VERSICOLOR = {"sepal_length": 6.0, "sepal_width": 2.7, "petal_length": 4.2, "petal_width": 1.3}


@pytest.fixture
def stored_server(model_store, tmp_path, empty_db_url):
    with ServerProc(model_store, tmp_path / "server.log", env={"PREDMESH_DATABASE_URL": empty_db_url}) as proc:
        yield proc


def metrics_text(proc: ServerProc) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.metrics_port}/metrics", timeout=5) as r:
        return r.read().decode()


def gauge(text: str, name: str, version: str) -> float | None:
    match = re.search(rf'{name}\{{model="iris",version="{version}"\}} ([0-9.e+-]+)', text)
    return float(match.group(1)) if match else None


def stored_count(client: Client) -> int:
    return client.get_stats().total


def test_a_retried_request_makes_one_row_and_transports_are_recorded(stored_server):
    with Client(stored_server.target) as grpc_client, \
            Client(stored_server.target, transport="rest") as rest_client:
        first = grpc_client.predict("iris", IRIS_ROW, request_id="order-42")
        again = grpc_client.predict("iris", IRIS_ROW, request_id="order-42")  # the client retries
        assert again.prediction_id == first.prediction_id
        rest_client.predict_batch("iris", [(VERSICOLOR, "order-43"), (IRIS_ROW, "order-44")])
        wait_for(lambda: stored_count(grpc_client) >= 3, 10, what="3 rows stored")
        time.sleep(0.3)  # a duplicate row, if there were one, would have arrived by now
        stats = grpc_client.get_stats()
        assert stats.total == 3
        assert dict(stats.by_transport) == {"grpc": 1, "rest": 2}
        assert dict(stats.by_label) == {"setosa": 2, "versicolor": 1}
        assert stats.latency.p50_ms > 0
        page = grpc_client.list_predictions(transport="rest")
        assert sorted(p.prediction.request_id for p in page) == ["order-43", "order-44"]
        [stored] = grpc_client.list_predictions(label="setosa", transport="grpc").items
        assert stored.prediction.prediction_id == first.prediction_id
        assert dict(stored.features) == IRIS_ROW and stored.transport == "grpc"
        assert stored.prediction.model_version == first.model_version


def test_request_id_filter_and_the_stats_series(stored_server):
    """ListPredictions finds a prediction by its request id (exact match); GetStats with bucket_seconds answers
    the window's buckets in one call, oldest first, empty ones included, summing to the window's totals."""
    from datetime import UTC, datetime, timedelta
    with Client(stored_server.target) as client, Client(stored_server.target, transport="rest") as rest:
        first = client.predict("iris", IRIS_ROW, request_id="series-1")
        rest.predict("iris", VERSICOLOR, request_id="series-2")
        rest.predict("iris", IRIS_ROW, request_id="series-10")
        wait_for(lambda: stored_count(client) == 3, 10, what="3 rows stored")
        [found] = client.list_predictions(request_id="series-1").items
        assert found.prediction.prediction_id == first.prediction_id
        assert client.list_predictions(request_id="series").items == ()  # exact, not a prefix
        now = datetime.now(UTC)
        stats = client.get_stats(start_time=now - timedelta(minutes=10), bucket_seconds=60)
        assert stats.total == 3 and 10 <= len(stats.series) <= 11
        starts = [b.start for b in stats.series if b.start is not None]
        assert len(starts) == len(stats.series)
        assert starts == sorted(starts) and all(s.second == 0 and s.microsecond == 0 for s in starts)
        assert all(b - a == timedelta(minutes=1) for a, b in itertools.pairwise(starts))
        assert sum(b.total for b in stats.series) == 3
        assert sum(b.by_transport.get("rest", 0) for b in stats.series) == 2
        assert sum(b.by_label.get("setosa", 0) for b in stats.series) == 2
        busy = [b for b in stats.series if b.total]
        assert all(b.latency.p50_ms > 0 and set(b.latency_by_transport) == set(b.by_transport) for b in busy)
        assert client.get_stats().series == ()
        with pytest.raises(InvalidArgument, match="bucket_seconds 30"):
            client.get_stats(bucket_seconds=30)
        with pytest.raises(InvalidArgument, match="limit is 2000"):
            client.get_stats(start_time=now - timedelta(days=3), bucket_seconds=60)


def test_feedback_moves_accuracy_in_stats_and_prometheus(stored_server):
    with Client(stored_server.target, writer_token=WRITER_TOKEN) as client:
        preds = [client.predict("iris", row, request_id=f"fb-{i}")
                 for i, row in enumerate([IRIS_ROW, IRIS_ROW, VERSICOLOR, VERSICOLOR])]
        version = preds[0].model_version
        wait_for(lambda: stored_count(client) == 4, 10, what="4 rows stored")
        for p in preds:
            assert client.submit_feedback(p.prediction_id, p.label).correct
        [q] = client.get_stats().quality
        assert (q.model_version, q.feedback_count, q.accuracy) == (version, 4, 1.0)
        assert gauge(metrics_text(stored_server), "predmesh_feedback_accuracy", version) == 1.0
        # one versicolor answer was really virginica: accuracy 3/4; overwriting keeps one feedback per prediction
        response = client.submit_feedback(preds[3].prediction_id, "virginica")
        assert not response.correct
        [q] = client.get_stats().quality
        assert (q.feedback_count, q.accuracy) == (4, 0.75)
        assert q.macro_precision == pytest.approx((1 + 0.5 + 0) / 3)
        assert q.macro_recall == pytest.approx((1 + 1 + 0) / 3)
        text = metrics_text(stored_server)
        assert gauge(text, "predmesh_feedback_accuracy", version) == 0.75
        assert gauge(text, "predmesh_feedback_macro_recall", version) == pytest.approx(2 / 3)
        assert client.list_predictions(label="versicolor").items[0].feedback_label in ("versicolor",
                                                                                              "virginica")
        with pytest.raises(NotFound):
            client.submit_feedback("00000000-0000-0000-0000-000000000000", "setosa")
        with pytest.raises(InvalidArgument, match="not a class"):
            client.submit_feedback(preds[0].prediction_id, "dog")
        with pytest.raises(InvalidArgument, match="page_token"):
            client.list_predictions(page_token="not-a-token")
        with pytest.raises(InvalidArgument, match="page_size"):
            client.list_predictions(page_size=5000)


def test_activations_are_recorded(stored_server, empty_db_url):
    with Client(stored_server.target) as client:
        serving = client.get_model("iris").version
    database = open_database(empty_db_url)
    try:
        with session():
            versions = repo.model_versions("iris")
    finally:
        database.close()
    assert [v.version for v in versions] == [serving]
    assert versions[0].sha256 and versions[0].activated_at


def test_server_refuses_an_unmigrated_database_when_auto_migrate_is_off(model_store, tmp_path, empty_db_url):
    proc = ServerProc(model_store, tmp_path / "refuse.log",
                      env={"PREDMESH_DATABASE_URL": empty_db_url, "PREDMESH_AUTO_MIGRATE": "0"})
    with pytest.raises(RuntimeError, match="exited with 2"):
        proc.start()
    assert "run `predmesh migrate`" in proc.log()
    proc.close()
