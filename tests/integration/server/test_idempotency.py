"""Idempotency keys on a real server process storing in PostgreSQL and in SQLite (issue #23): a request_id answers
only the request it was first used for. A retry of the same request (same model, same features) gets the
original answer as stored and stores nothing; the same key with another request is ALREADY_EXISTS; the same key
twice in one call is INVALID_ARGUMENT; a retry after a reload, or on a new server process, gets the stored answer."""
from __future__ import annotations

import time

import grpc
import pytest

from database import repo
from database.connect import open_database, session
from inference.models.store import ModelStore
from inference.models.train import train
from predmesh import AlreadyExists, Client, InvalidArgument
from predmesh.oip import grpc_predict_v2_pb2 as oip_pb
from predmesh.oip import grpc_predict_v2_pb2_grpc as oip_grpc
from tests.conftest import IRIS_ROW
from tests.support.procs import ADMIN_TOKEN, ServerProc, wait_for

NAMES = ["sepal_length", "sepal_width", "petal_length", "petal_width"]
OTHER_ROW = {"sepal_length": 6.0, "sepal_width": 2.7, "petal_length": 4.2, "petal_width": 1.3}
VIRGINICA = {"sepal_length": 7.7, "sepal_width": 3.0, "petal_length": 6.1, "petal_width": 2.3}


@pytest.fixture
def db_url(empty_db_url):
    return empty_db_url


@pytest.fixture
def store(model_store):
    train(ModelStore(model_store), "iris2", "lr")  # a second model: one key for two models
    return model_store


def start(store, tmp_path, db_url) -> ServerProc:
    return ServerProc(store, tmp_path / "server.log", env={"PREDMESH_DATABASE_URL": db_url,
                                                           "PREDMESH_DB_FLUSH_MS": "20"}).start()


@pytest.fixture
def served(store, tmp_path, db_url):
    proc = start(store, tmp_path, db_url)
    try:
        yield proc
    finally:
        proc.close()


def stored(db_url: str, request_id: str) -> repo.PredictionRecord | None:
    open_database(db_url)
    with session():
        return repo.answered([request_id]).get(request_id)


def wait_stored(db_url: str, request_id: str) -> repo.PredictionRecord:
    wait_for(lambda: stored(db_url, request_id) is not None, 10, what=f"{request_id} stored")
    answer = stored(db_url, request_id)
    assert answer is not None
    return answer


def rows_stored(db_url: str) -> int:
    open_database(db_url)
    with session():
        return repo.count_predictions()


def test_one_key_for_two_models_or_other_features_is_refused_and_the_first_answer_stays(served, db_url):
    with Client(served.target) as client:
        first = client.predict("iris", IRIS_ROW, request_id="order-1")
        with pytest.raises(AlreadyExists) as other_model:
            client.predict("iris2", IRIS_ROW, request_id="order-1")
        assert str(other_model.value.message) == (
            "request_id 'order-1' was already used for a different request (model iris); use a new request_id "
            "for a new request")
        with pytest.raises(AlreadyExists, match=r"'order-1' was already used .*\(model iris, other features\)"):
            client.predict("iris", OTHER_ROW, request_id="order-1")
        again = client.predict("iris", IRIS_ROW, request_id="order-1")  # a retry of the same request
        assert (again.prediction_id, again.model_version, again.probabilities) == (
            first.prediction_id, first.model_version, first.probabilities)
        # the same rules on every path: PredictBatch (all or nothing), partial_success rows, PredictStream
        with pytest.raises(AlreadyExists, match="order-1"):
            client.predict_batch("iris", [(OTHER_ROW, "order-2"), (OTHER_ROW, "order-1")])
        each = client.predict_each("iris", [(OTHER_ROW, "order-3"), (OTHER_ROW, "order-1")])
        assert each[0].prediction is not None and each[0].request_id == "order-3"
        assert isinstance(each[1].error, AlreadyExists) and each[1].prediction is None
        [retried] = client.predict_each("iris", [(IRIS_ROW, "order-1")])
        assert retried.prediction is not None and retried.prediction.prediction_id == first.prediction_id
        streamed = list(client.predict_stream("iris", [(OTHER_ROW, "order-1"), (IRIS_ROW, "order-1")]))
        assert isinstance(streamed[0].error, AlreadyExists)
        assert streamed[1].prediction is not None and streamed[1].prediction.prediction_id == first.prediction_id
        with grpc.insecure_channel(served.target) as channel:
            infer = oip_grpc.GRPCInferenceServiceStub(channel).ModelInfer
            request = oip_pb.ModelInferRequest(model_name="iris", id="order-1")
            request.inputs.add(name="input", datatype="FP64", shape=[1, 4]).contents.fp64_contents.extend(
                [OTHER_ROW[n] for n in NAMES])
            with pytest.raises(grpc.RpcError) as refused:
                infer(request, timeout=5)
            assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
    row = wait_stored(db_url, "order-1")
    assert (row.model, row.prediction_id, row.probabilities) == ("iris", first.prediction_id, first.probabilities)
    wait_stored(db_url, "order-3")
    time.sleep(0.3)  # a second row for a key, if there were one, would have arrived by now
    assert rows_stored(db_url) == 2  # order-1 and order-3: the refused and the retried rows stored nothing


def test_a_key_twice_in_one_call_is_invalid_argument_naming_both_positions(served):
    with Client(served.target) as client:
        with pytest.raises(InvalidArgument, match=r"request_id 'k' is used twice in this call \(rows\[0\] and "
                                                  r"rows\[2\]\)"):
            client.predict_batch("iris", [(IRIS_ROW, "k"), (OTHER_ROW, "j"), (IRIS_ROW, "k")])
        each = client.predict_each("iris", [(IRIS_ROW, "k"), (OTHER_ROW, "j"), (OTHER_ROW, "k")])
        assert each[0].prediction is not None and each[1].prediction is not None
        assert isinstance(each[2].error, InvalidArgument) and "rows[0] and rows[2]" in str(each[2].error)
        values = [v for r in (IRIS_ROW, OTHER_ROW, VIRGINICA) for v in (r[n] for n in NAMES)]
        with pytest.raises(InvalidArgument, match=r"'m-7' is used twice in this call \(matrix.row_numbers\[0\] "
                                                  r"\(7\) and matrix.row_numbers\[2\] \(7\)\)"):
            client.predict_matrix("iris", NAMES, values, request_id_prefix="m-", row_numbers=[7, 8, 7])
        partly = client.predict_matrix("iris", NAMES, values, request_id_prefix="m-", row_numbers=[7, 8, 7],
                                       partial_success=True)
        assert sorted(partly.errors) == [2] and isinstance(partly.errors[2], InvalidArgument)
        assert partly.prediction_ids[0] and partly.prediction_ids[1] and not partly.prediction_ids[2]


def test_a_retry_after_a_reload_gets_the_stored_answer_of_the_version_that_answered(served, db_url):
    with Client(served.target) as client, Client(served.target, admin_token=ADMIN_TOKEN) as admin:
        admin.reload_model("iris", "1")
        first = client.predict("iris", OTHER_ROW, request_id="reload-1")
        values = [v for r in (OTHER_ROW, VIRGINICA) for v in (r[n] for n in NAMES)]
        matrix = client.predict_matrix("iris", NAMES, values, request_id_prefix="reload-m-", row_numbers=[0, 1])
        assert first.model_version == matrix.model_version == "1"
        admin.reload_model("iris", "2")
        fresh = client.predict("iris", OTHER_ROW, request_id="reload-2")
        assert fresh.model_version == "2" and fresh.probabilities != first.probabilities  # v2 answers otherwise
        again = client.predict("iris", OTHER_ROW, request_id="reload-1")
        assert (again.prediction_id, again.model_version, again.label, again.probabilities) == (
            first.prediction_id, "1", first.label, first.probabilities)
        twice = client.predict_matrix("iris", NAMES, values, request_id_prefix="reload-m-", row_numbers=[0, 1])
        assert (twice.model_version, list(twice.prediction_ids), list(twice.probabilities), list(twice.labels)) == (
            "1", list(matrix.prediction_ids), list(matrix.probabilities), list(matrix.labels))
        # a call mixing a row answered by v1 with a new row cannot hold both versions in one answer
        mixed = client.predict_matrix("iris", NAMES, values, request_id_prefix="reload-m-", row_numbers=[0, 9],
                                      partial_success=True)
        assert mixed.model_version == "2" and sorted(mixed.errors) == [0] and "version 1" in str(mixed.errors[0])
    row = wait_stored(db_url, "reload-1")
    assert (row.prediction_id, row.model_version, row.label, row.probabilities) == (
        first.prediction_id, "1", first.label, first.probabilities)
    assert wait_stored(db_url, "reload-m-1").model_version == "1"


def test_a_retry_on_a_new_server_process_gets_the_answer_stored_by_the_last(store, tmp_path, db_url):
    proc = start(store, tmp_path, db_url)
    try:
        with Client(proc.target) as client, Client(proc.target, admin_token=ADMIN_TOKEN) as admin:
            admin.reload_model("iris", "1")
            first = client.predict("iris", OTHER_ROW, request_id="restart-1")
            values = [OTHER_ROW[n] for n in NAMES]
            matrix = client.predict_matrix("iris", NAMES, values, request_id_prefix="restart-m-", row_numbers=[0])
        wait_stored(db_url, "restart-1")
        wait_stored(db_url, "restart-m-0")
    finally:
        proc.close()
    proc = start(store, tmp_path, db_url)  # a new process: nothing in its memory, serving v2
    try:
        with Client(proc.target) as client:
            again = client.predict("iris", OTHER_ROW, request_id="restart-1")
            assert (again.prediction_id, again.model_version, again.label, again.probabilities) == (
                first.prediction_id, "1", first.label, first.probabilities)
            twice = client.predict_matrix("iris", NAMES, values, request_id_prefix="restart-m-", row_numbers=[0])
            assert (twice.model_version, list(twice.probabilities)) == ("1", list(matrix.probabilities))
            with pytest.raises(AlreadyExists, match="restart-1"):
                client.predict("iris", IRIS_ROW, request_id="restart-1")
            with pytest.raises(AlreadyExists, match="restart-m-0"):
                client.predict_batch("iris2", [(OTHER_ROW, "restart-m-0")])
    finally:
        proc.close()
    assert rows_stored(db_url) == 2


def counter(proc: ServerProc, name: str) -> float:
    return proc.metric(name) or 0.0


def test_keys_vouched_new_are_not_looked_up_and_still_stored_once(store, tmp_path, db_url):
    """FeatureMatrix.new_keys (what `batch score` sends on a first run): the server does not look the keys up in the
    database. Were the caller wrong, nothing stored is replaced or doubled: the stored row stays, the writer counts
    the conflict; the same call without new_keys is refused as before."""
    values = [IRIS_ROW[n] for n in NAMES] + [VIRGINICA[n] for n in NAMES]
    other = [OTHER_ROW[n] for n in NAMES] * 2
    proc = start(store, tmp_path, db_url)
    try:
        with Client(proc.target) as client:
            first = client.predict_matrix("iris", NAMES, values, request_id_prefix="run-", row_numbers=[1, 2],
                                          new_keys=True)
        assert counter(proc, "predmesh_idempotency_vouched_total") == 2
        wait_stored(db_url, "run-2")
    finally:
        proc.close()
    proc = start(store, tmp_path, db_url)  # a new process: nothing cached, only the database knows the keys
    try:
        with Client(proc.target) as client:
            wrong = client.predict_matrix("iris", NAMES, other, request_id_prefix="run-", row_numbers=[1, 2],
                                          new_keys=True)  # the caller's word, wrongly given: answered anew
            assert wrong.prediction_ids == first.prediction_ids and wrong.labels != first.labels
            wait_for(lambda: counter(proc, "predmesh_idempotency_conflicts_total") == 2, 10,
                     what="the writer counting the two stored keys as conflicts")
            assert counter(proc, "predmesh_idempotency_vouched_total") == 2
            # the writer dropped the unstored answers from this process's cache: looked up, refused
            with pytest.raises(AlreadyExists, match="run-1"):
                client.predict_matrix("iris", NAMES, other, request_id_prefix="run-", row_numbers=[1, 2])
            again = client.predict_matrix("iris", NAMES, values, request_id_prefix="run-", row_numbers=[1, 2])
            assert again.labels == first.labels  # looked up: the stored answers
    finally:
        proc.close()
    assert rows_stored(db_url) == 2
    assert wait_stored(db_url, "run-1").label == first.classes[first.labels[0]]  # the first answer stays
