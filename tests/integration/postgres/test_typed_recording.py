"""Typed feature values through the real writer paths (#22) on PostgreSQL and SQLite: what the prediction log is
handed (records of plain values, object and float batches) is what the database holds, value for value and kind for
kind; a shape that breaks copy_text's one-check-per-shape assumption is stored through the INSERT fallback; a value
the database refuses is quarantined alone; spool lines written before typed features replay unchanged."""
from __future__ import annotations

import json
import math
import time
import uuid

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from database import repo
from database.connect import open_database, session
from database.migrate import migrate
from database.records import PredictionBatch, PredictionRecord, plain
from inference.process.persistence import PersistenceMetrics, insert_records
from inference.recording.prediction_log import PredictionLog
from inference.recording.spool import Spool
from tests.support.pg import TempSchema
from tests.support.procs import wait_for
from tests.unit.inference.test_spool_documents_typed import OLD_BATCH_LINE, OLD_RECORD_LINE

NASTY = ['say "hi"', "back\\slash", "tab\there", "new\nline", "carriage\rreturn", "Zürich – 東京 🐧", "\\N",
         "%s %r", "\u2028", ""]


def record(features: dict, rid: str, model_version: str = "1") -> PredictionRecord:
    return PredictionRecord(
        prediction_id=str(uuid.uuid4()), request_id=rid, model="churn", model_version=model_version,
        features=features, label="yes", probabilities={"no": 0.25, "yes": 0.75}, transport="grpc", latency_ms=1.5,
        created_at=time.time())


def batch(matrix: np.ndarray, names: tuple[str, ...], tag: str) -> PredictionBatch:
    n = len(matrix)
    return PredictionBatch(
        prediction_ids=[str(uuid.uuid4()) for _ in range(n)], request_ids=[f"{tag}-{i}" for i in range(n)],
        model="churn", model_version="1", feature_names=names, features=matrix, classes=("no", "yes"),
        labels=np.arange(n) % 2, probabilities=np.tile([0.25, 0.75], (n, 1)), transport="batch", latency_ms=2.0,
        created_at=time.time())


def migrated(url: str) -> None:
    database = open_database(url)
    with session():
        migrate(database)


def stored() -> dict[str, dict]:
    with session():
        rows, token = repo.list_predictions(repo.PredictionFilter(), 1000)
    assert not token
    return {r.record.request_id: r.record.features for r in rows}


def assert_exact(got: dict, want: dict) -> None:
    """Equal values of the same kinds: a boolean stays a boolean (True == 1.0 would hide a 1.0) and null null.
    A number compares as the float it reads back as: jsonb keeps numbers as numeric, so 1.7976931348623157e308
    reads back as the int of its decimal digits (the same float) and -0.0 as 0 (equal to -0.0)."""
    assert {k: float(v) if type(v) is int else v for k, v in got.items()} == want
    for name, value in want.items():
        assert (type(got[name]) is bool) == (type(value) is bool), name
        assert (got[name] is None) == (value is None), name


def typed_inputs() -> tuple[list, dict[str, dict]]:
    """Records and batches of every kind of value, and the features each request id must be stored with."""
    items: list = []
    want: dict[str, dict] = {}
    for i, s in enumerate(NASTY):
        features = {"tenure": float(i), "contract": s, "senior": i % 2 == 0, "note": None}
        items.append(record(features, f"rec-{i}"))
        want[f"rec-{i}"] = features
    odd = {"tenure": math.nan, "contract": np.str_("np"), "senior": np.bool_(True), "note": np.int64(7)}
    items.append(record(odd, "rec-np"))
    want["rec-np"] = {"tenure": None, "contract": "np", "senior": True, "note": 7.0}
    names = ("tenure", "contract", "senior")
    rows = [[float(i), s, i % 2 == 1] for i, s in enumerate(NASTY)]
    rows += [[None, None, None], [math.nan, "x", False], [np.int64(5), np.str_("y"), np.bool_(True)], [3, "z", None]]
    matrix = np.empty((len(rows), 3), dtype=object)
    matrix[:] = rows
    items.append(batch(matrix, names, "tb"))
    want.update({f"tb-{i}": {n: plain(v, n) for n, v in zip(names, row)} for i, row in enumerate(rows)})
    floats = np.array([[0.1, 1e-310], [math.nan, 2.0], [1.7976931348623157e308, -0.0]])
    items.append(batch(floats, ("a", "b"), "fb"))
    want.update({"fb-0": {"a": 0.1, "b": 1e-310}, "fb-1": {"a": None, "b": 2.0},
                 "fb-2": {"a": 1.7976931348623157e308, "b": -0.0}})
    for i in range(3):
        items.append(record({"a": 0.5 + i, "b": 2.0}, f"flt-{i}"))
        want[f"flt-{i}"] = {"a": 0.5 + i, "b": 2.0}
    return items, want


@pytest.mark.parametrize("durable", [True, False], ids=["durable", "async"])
def test_typed_records_and_batches_are_stored_exactly(empty_db_url, tmp_path, durable):
    migrated(empty_db_url)
    items, want = typed_inputs()
    spool = Spool(tmp_path / "spool", 16 * 1024 * 1024)
    plog = PredictionLog(spool, insert_records, durable=durable, batch_size=64, flush_interval_s=0.05,
                         retry_interval_s=0.2)
    try:
        plog.record(items)
        assert plog.flush(30)
    finally:
        plog.close()
    got = stored()
    assert set(got) == set(want)
    for rid, features in want.items():
        assert_exact(got[rid], features)
    assert not spool.quarantine_dir.exists() or not list(spool.quarantine_dir.iterdir())


def test_a_bool_after_numbers_in_one_shape_is_stored_through_the_insert_fallback(empty_db_url, tmp_path):
    """copy_text checks a shape's kinds once, on its first row of numbers only; a later bool in that shape makes
    COPY text PostgreSQL refuses (tests/unit/database/test_copy_text_typed.py), and insert_predictions INSERTs
    the batch through the JSON encoder instead: every row stored exactly, none quarantined, on a fresh insert
    and on a retry where some rows are stored already (COPY's unique violation, then the staging table)."""
    migrated(empty_db_url)
    first, odd, last = (record({"flag": 1.0, "x": 2.0}, "shape-0"), record({"flag": True, "x": 2.0}, "shape-1"),
                        record({"flag": 0.0, "x": 3.0}, "shape-2"))
    if empty_db_url.startswith("postgresql"):  # COPY itself refuses that text: the fallback is what stores it
        import psycopg2

        from database.copy_text import copy_text
        from database.models import Prediction, db
        with session(), pytest.raises(psycopg2.Error) as refused, db.atomic():
            db.cursor().copy_expert(f"COPY {Prediction._meta.table_name} ({', '.join(repo._COLUMNS)}) FROM STDIN",
                                    copy_text([first, odd, last]))
        assert refused.value.pgcode == "22P02"  # invalid input syntax for type json
    with session():
        repo.insert_predictions([first, odd, last])
    got = stored()
    assert_exact(got["shape-1"], {"flag": True, "x": 2.0})
    assert_exact(got["shape-0"], {"flag": 1.0, "x": 2.0})
    assert_exact(got["shape-2"], {"flag": 0.0, "x": 3.0})
    # again through the prediction log, with the first row already stored
    registry = CollectorRegistry()
    spool = Spool(tmp_path / "spool", 16 * 1024 * 1024)
    plog = PredictionLog(spool, insert_records, durable=False, metrics=PersistenceMetrics(registry), batch_size=64,
                         flush_interval_s=0.05, retry_interval_s=0.2)
    retried = [record({"flag": 1.0, "x": 2.0}, "retry-0"), record({"flag": False, "x": 2.0}, "retry-1"),
               record({"flag": 4.0, "x": 2.0}, "retry-2")]
    with session():
        repo.insert_predictions(retried[:1])
    try:
        plog.record(retried)
        assert plog.flush(30)
    finally:
        plog.close()
    got = stored()
    assert_exact(got["retry-1"], {"flag": False, "x": 2.0})
    assert_exact(got["retry-2"], {"flag": 4.0, "x": 2.0})
    assert len(got) == 6
    assert not (registry.get_sample_value("predmesh_db_rows_quarantined_total") or 0)


@pytest.mark.parametrize("durable", [True, False], ids=["durable", "async"])
def test_a_typed_row_postgresql_refuses_is_quarantined_alone(tmp_path, durable):
    """A category with U+0000 (the edge refuses it; a writer handed one must not block), a list, and ±inf."""
    with TempSchema() as schema:
        migrated(schema.url)
        registry = CollectorRegistry()
        spool = Spool(tmp_path / "spool", 16 * 1024 * 1024)
        plog = PredictionLog(spool, insert_records, durable=durable, metrics=PersistenceMetrics(registry),
                             batch_size=64, flush_interval_s=0.05, retry_interval_s=0.2)
        good = [record({"contract": s, "senior": True, "tenure": None}, f"good-{i}") for i, s in enumerate(NASTY)]
        bad = [record({"contract": "nul\x00inside", "senior": True, "tenure": None}, "bad-nul"),
               record({"contract": "a", "senior": [True], "tenure": None}, "bad-list"),
               record({"contract": "a", "senior": True, "tenure": -math.inf}, "bad-inf")]
        names = ("contract", "senior")
        matrix = np.array([["ok", True], ["nul\x00batch", False], ["ok2", None]], dtype=object)
        try:
            if durable:  # a line cannot hold ±inf: refused before it is answered, as before typed features
                with pytest.raises(ValueError, match="feature 'tenure' is -inf"):
                    plog.record([bad[2]])
                bad = bad[:2]
            plog.record([*good[:4], bad[0], *good[4:7], bad[1], batch(matrix, names, "tb"), *good[7:], *bad[2:]])
            assert plog.flush(30), "the writer is stuck on a refused typed row"
        finally:
            plog.close()
        got = stored()
        assert set(got) == {r.request_id for r in good} | {"tb-0", "tb-2"}
        for r in good:
            assert_exact(got[r.request_id], r.features)
        assert_exact(got["tb-2"], {"contract": "ok2", "senior": None})
        quarantined = {q["record"]["request_id"]: q["record"] for q in
                       (json.loads(p.read_bytes().split(b" ", 1)[1]) for p in spool.quarantine_dir.iterdir())}
        assert set(quarantined) == {r.request_id for r in bad} | {"tb-1"}
        assert quarantined["bad-nul"]["features"]["contract"] == "nul\x00inside"
        assert quarantined["tb-1"]["features"] == {"contract": "nul\x00batch", "senior": False}
        assert registry.get_sample_value("predmesh_db_rows_quarantined_total") == len(bad) + 1


def test_spool_lines_written_before_typed_features_replay_unchanged(empty_db_url, tmp_path):
    """Lines of 6a1dc7a^ (a float record, a float batch with a NaN) left in a spool by the old version, replayed
    by this one after an upgrade."""
    migrated(empty_db_url)
    spool = Spool(tmp_path / "spool", 16 * 1024 * 1024)
    spool.append([OLD_RECORD_LINE, OLD_BATCH_LINE])
    plog = PredictionLog(spool, insert_records, durable=False, batch_size=64, flush_interval_s=0.05,
                         retry_interval_s=0.2)
    try:
        wait_for(lambda: len(stored()) == 3, 20, what="the old spool replayed")
        wait_for(lambda: spool.unconsumed_bytes() == 0, 10, what="the old spool consumed")
    finally:
        plog.close()
    got = stored()
    assert_exact(got["r-old"], {"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2})
    assert_exact(got["br0"], {"a": 0.1, "b": 2.0})
    assert_exact(got["br1"], {"a": None, "b": 4.0})
    with session():
        [old] = [r for r in repo.list_predictions(repo.PredictionFilter(), 10)[0] if r.record.request_id == "r-old"]
    assert (old.record.prediction_id, old.record.label, old.record.created_at) == ("p-old", "setosa", 1700000000.5)


def test_postgresql_copy_takes_the_typed_copy_text_as_it_is():
    """The COPY text itself (not the INSERT fallback, which would hide a COPY defect) holds every typed value
    exactly: COPY straight into the table, then read back."""
    from database.copy_text import copy_text
    from database.models import Prediction, db
    from database.repo import _COLUMNS

    items, want = typed_inputs()
    with TempSchema() as schema:
        migrated(schema.url)
        with session(), db.atomic():
            db.cursor().copy_expert(f"COPY {Prediction._meta.table_name} ({', '.join(_COLUMNS)}) FROM STDIN",
                                    copy_text(items))
        got = stored()
    assert set(got) == set(want)
    for rid, features in want.items():
        assert_exact(got[rid], features)
