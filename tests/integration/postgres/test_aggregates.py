"""The aggregates behind GetStats (database/aggregates.py) against a brute-force computation over the raw rows, on
PostgreSQL and SQLite: counts exact, latency percentiles within the histogram's documented 5%, series buckets,
feedback overwrites keeping the confusion exact, rows offered twice counted once, the migration's backfill, and
the two databases answering alike."""
from __future__ import annotations

import dataclasses
import importlib
import io
import json
import math
import random
import time
from collections import Counter, defaultdict
from datetime import datetime

import numpy as np
import pytest

from database import aggregates, histogram, repo
from database.connect import is_postgres, open_database, session
from database.migrate import migrate
from database.models import db, to_epoch
from database.quality import quality
from database.records import PredictionBatch, PredictionRecord, prediction_id_of
from predmesh.percentile import percentile
from tests.support.pg import TempSchema

CLASSES = ("setosa", "versicolor", "virginica")
DAY = 86400


@pytest.fixture
def database(empty_db_url):
    database = open_database(empty_db_url)
    migrate(database)
    with session():
        yield database
    database.close()


def pid(request_id: str) -> str:
    return prediction_id_of(request_id)


def record(rng: random.Random, request_id: str, at: float) -> PredictionRecord:
    label = rng.choice(CLASSES)
    return PredictionRecord(
        prediction_id=pid(request_id), request_id=request_id, model=rng.choice(("iris", "iris", "wine")),
        model_version=rng.choice(("1", "2")), features={"x": rng.random()}, label=label,
        probabilities={c: (0.8 if c == label else 0.1) for c in CLASSES}, transport=rng.choice(("grpc", "rest",
                                                                                                 "queue")),
        latency_ms=rng.lognormvariate(1.0, 1.2), created_at=at)


def batch(rng: random.Random, prefix: str, n: int, at: float) -> PredictionBatch:
    labels = np.array([rng.randrange(3) for _ in range(n)])
    probabilities = np.full((n, 3), 0.1)
    probabilities[np.arange(n), labels] = 0.8
    rids = [f"{prefix}{i}" for i in range(n)]
    return PredictionBatch(
        prediction_ids=[pid(r) for r in rids], request_ids=rids, model="iris", model_version="2",
        feature_names=("x",), features=np.zeros((n, 1)), classes=CLASSES, labels=labels,
        probabilities=probabilities, transport="batch", latency_ms=rng.uniform(0.01, 3.0), created_at=at)


def load(rng: random.Random, base: float, monkeypatch) -> None:
    """Rows over three days through every storing path, with rows offered again (a retried request: same
    request_id and prediction_id, answered again later; a replayed spool: the same rows again)."""
    records = [record(rng, f"r{i}", base + rng.uniform(0, 3 * DAY)) for i in range(1500)]
    for start in range(0, 1000, 250):
        repo.insert_predictions(records[start:start + 250])  # all new: COPY / executemany
    batches = [batch(rng, f"b{k}-", 40, base + rng.uniform(0, 3 * DAY)) for k in range(8)]
    repo.insert_predictions(batches[:4])
    retried = [dataclasses.replace(r, created_at=r.created_at + 5) for r in records[:30]]
    # replay + retries + new rows: PostgreSQL's staging INSERT ... RETURNING, SQLite's row-by-row path
    repo.insert_predictions([*records[900:1100], *retried, batches[0], batches[4]])
    repo.insert_predictions([*records[900:1100], batches[4]])  # nothing new at all
    if is_postgres():  # a batch COPY refuses: the multi-row INSERT ... ON CONFLICT DO NOTHING RETURNING
        monkeypatch.setattr(repo, "copy_text", lambda records, claims=None: io.StringIO("not\ta row\n"))
    repo.insert_predictions([*records[1050:1300], batches[5]])
    monkeypatch.undo()
    repo.insert_predictions([*records[1300:], *batches[6:]])


def raw_rows() -> list[tuple]:
    cursor = db.cursor()
    cursor.execute("SELECT p.model, p.model_version, p.transport, p.label, p.latency_ms, p.created_at, f.label "
                   "FROM predictions p LEFT JOIN feedback f ON f.prediction_id = p.prediction_id")
    out = []
    for model, version, transport, label, latency, created, truth in cursor.fetchall():
        if isinstance(created, str):
            created = datetime.fromisoformat(created)
        out.append((model, version, transport, label, latency, to_epoch(created), truth))
    return out


def brute(rows, start, end, model=""):
    """What the stats of [start, end) are, from the raw rows."""
    inside = [r for r in rows if (start is None or r[5] >= start) and r[5] < end and (not model or r[0] == model)]
    latencies = sorted(r[4] for r in inside)
    confusion: dict = defaultdict(Counter)
    for m, v, _, label, _, _, truth in inside:
        if truth is not None:
            confusion[(m, v)][(label, truth)] += 1
    q3 = (0.5, 0.95, 0.99)
    return {
        "total": len(inside), "by_label": dict(Counter(r[3] for r in inside)),
        "by_version": dict(Counter(f"{r[0]}@{r[1]}" for r in inside)),
        "by_transport": dict(Counter(r[2] for r in inside)),
        "latency": [percentile(latencies, q) for q in q3] if inside else [0.0, 0.0, 0.0],
        "latency_by_transport": {t: [percentile(sorted(r[4] for r in inside if r[2] == t), q) for q in q3]
                                 for t in {r[2] for r in inside}},
        "quality": [quality(m, v, dict(c)) for (m, v), c in sorted(confusion.items()) if sum(c.values())]}


def assert_latency(estimate, exact):
    for e, x in zip(estimate, exact, strict=True):
        assert abs(e - x) <= histogram.ALPHA * x + 1e-9, (estimate, exact)


def windows(rng: random.Random, base: float):
    yield None, None
    yield base + 3600, base + 2 * DAY + 7200  # whole hours: days in the middle
    yield base + 61, base + 3 * 3600 - 1  # rounded out to whole minutes
    yield base + DAY + 60 * 17, base + DAY + 60 * 19  # two minutes
    for _ in range(4):
        lo = base + rng.uniform(-DAY, 3 * DAY)
        yield lo, lo + rng.uniform(60, 2 * DAY)


def check_stats(rows, start, end, model=""):
    stats = repo.stats(repo.PredictionFilter(model=model, start=start, end=end), now=end or time.time())
    lo, hi = aggregates.window(start, end or time.time())
    assert (stats.window_start, stats.window_end) == (lo, hi)
    expected = brute(rows, lo, hi, model)
    assert (stats.total, stats.by_label, stats.by_version, stats.by_transport) == (
        expected["total"], expected["by_label"], expected["by_version"], expected["by_transport"])
    assert_latency(stats.latency_ms, expected["latency"])
    assert stats.quality == expected["quality"]
    return stats


def label_feedback(rng: random.Random) -> set[str]:
    """Feedback, overwritten again and again (single and batch calls, a prediction named twice in a batch, the
    same label again), so only the last label of each prediction may count."""
    cursor = db.cursor()
    cursor.execute("SELECT prediction_id FROM predictions ORDER BY prediction_id")
    ids = [r[0] for r in cursor.fetchall()]
    chosen = rng.sample(ids, 600)
    labelled = set(chosen[:100])
    for p in chosen[:100]:
        repo.upsert_feedback(p, rng.choice(CLASSES), time.time())
    for _ in range(3):
        named = rng.sample(chosen, 300)
        labels = {p: rng.choice(CLASSES) for p in named}
        labelled.update(named)
        repo.upsert_feedback_many(labels, time.time())
    for p in chosen[:50]:
        repo.upsert_feedback(p, rng.choice(CLASSES), time.time())
    return labelled


def test_stats_equal_a_brute_force_count_over_the_raw_rows(database, monkeypatch):
    rng = random.Random(26)
    base = time.time() // DAY * DAY - 4 * DAY + 1234.5
    load(rng, base, monkeypatch)
    rows = raw_rows()
    assert len(rows) == 1500 + 8 * 40 == repo.count_predictions()
    total = repo.stats(repo.PredictionFilter())
    assert total.total == len(rows)  # nothing offered twice was counted twice
    labelled = label_feedback(rng)
    rows = raw_rows()
    assert sum(r[6] is not None for r in rows) == len(labelled) > 300
    for start, end in windows(rng, base):
        check_stats(rows, start, end)
        check_stats(rows, start, end, model="wine")
    assert repo.version_quality() == brute(rows, None, math.inf)["quality"]
    # an inverted window is empty; the Timestamp range's ends hold everything
    assert repo.stats(repo.PredictionFilter(start=base + DAY, end=base)).total == 0
    assert repo.stats(repo.PredictionFilter(start=-62_135_596_800, end=253_402_300_799)).total == len(rows)
    assert repo.version_quality(repo.PredictionFilter(model="iris", model_version="2")) == [
        q for q in brute(rows, None, math.inf)["quality"] if (q.model, q.model_version) == ("iris", "2")]


@pytest.mark.parametrize("width", [60, 300, 600, 1800, 3600, 7200, DAY])
def test_series_buckets_equal_brute_force(database, monkeypatch, width):
    rng = random.Random(width)
    base = time.time() // DAY * DAY - 4 * DAY + 1234.5
    load(rng, base, monkeypatch)
    rows = raw_rows()
    start, end = base + 3600 + 30, base + (1.5 * DAY if width >= 3600 else 3 * 3600)
    stats = repo.stats(repo.PredictionFilter(start=start, end=end), width, now=end)
    lo, hi = aggregates.window(start, end)
    assert lo is not None
    assert [b.start for b in stats.series] == list(range(int(lo // width * width), int(hi), width))
    for b in stats.series:
        expected = brute(rows, max(lo, b.start), min(hi, b.start + width))
        assert (b.total, b.by_label, b.by_transport) == (expected["total"], expected["by_label"],
                                                         expected["by_transport"])
        assert_latency(b.latency_ms, expected["latency"])
        assert set(b.latency_by_transport) == set(expected["latency_by_transport"])
        for t, lat in b.latency_by_transport.items():
            assert_latency(lat, expected["latency_by_transport"][t])
    assert sum(b.total for b in stats.series) == stats.total
    # no start: the series begins at the oldest stored prediction's bucket
    everything = repo.stats(repo.PredictionFilter(), DAY, now=base + 5 * DAY)
    assert everything.series[0].start == min(r[5] for r in rows) // DAY * DAY
    assert sum(b.total for b in everything.series) == len(rows)
    with pytest.raises(repo.TooManyBuckets):
        repo.stats(repo.PredictionFilter(start=base - 30 * DAY), 60, now=base)


@pytest.mark.parametrize("width", [300, 1800])
def test_a_series_reads_the_rows_of_its_width(database, monkeypatch, width):
    """A series of 5- or 30-minute buckets reads rows of its own width, minutes only at a window edge that is not
    on a bucket's boundary (a day of 5-minute buckets: 288 rows a key instead of 1,440)."""
    read: list = []
    rows = aggregates._read

    def recording(ranges, *args, **kwargs):
        read.append(ranges)
        return rows(ranges, *args, **kwargs)

    monkeypatch.setattr(aggregates, "_read", recording)
    day = time.time() // DAY * DAY - 2 * DAY
    repo.stats(repo.PredictionFilter(start=day, end=day + DAY), width, now=day + DAY)
    assert read[-1] == [(width, day, day + DAY)]
    repo.stats(repo.PredictionFilter(start=day + 90, end=day + DAY), width, now=day + DAY)
    assert read[-1] == [(60, day + 60, day + 300), *([(300, day + 300, day + 1800)] if width == 1800 else []),
                        (width, day + width, day + DAY)]


def aggregate_tables() -> dict[str, set]:
    out = {}
    for table in aggregates.TABLES:
        cursor = db.cursor()
        cursor.execute(f"SELECT * FROM {table} WHERE n <> 0")
        rows = cursor.fetchall()
        if table == "stats_rollup":  # labels and histogram: JSON text on SQLite
            rows = [(*head, tuple(sorted((json.loads(labels) if isinstance(labels, str) else labels).items())),
                     tuple(json.loads(hist) if isinstance(hist, str) else hist)) for *head, labels, hist in rows]
        out[table] = {tuple(r) for r in rows}
    return out


def test_the_migration_backfills_what_writes_maintain(database, monkeypatch):
    """m0005 on a database holding rows and feedback builds the same aggregates the writes maintained."""
    rng = random.Random(5)
    load(rng, time.time() // DAY * DAY - 2 * DAY + 17.25, monkeypatch)
    label_feedback(rng)
    maintained = aggregate_tables()
    assert all(maintained.values())
    with db.atomic():
        for table in aggregates.TABLES:
            db.execute_sql(f"DROP TABLE {table}")
        db.execute_sql("DELETE FROM schema_migrations WHERE name = 'm0005_aggregates'")
    assert migrate(database) == ["m0005_aggregates"]
    assert aggregate_tables() == maintained


def test_m0011_builds_the_5_and_30_minute_rows_of_an_existing_database(empty_db_url, monkeypatch):
    """A database as the previous release left it (aggregates of minutes, hours and days only) gains the 5- and
    30-minute rows the writes now maintain, summed from its minute rows by m0011's SQL; running it again (or over
    wrong rows of those widths) rebuilds the same rows."""
    rng = random.Random(11)
    database = open_database(empty_db_url)
    try:
        with session():
            migrate(database, stop_before="m0011")  # the database as the previous release left it
            base = time.time() // DAY * DAY - 2 * DAY + 17.25
            load(rng, base, monkeypatch)
            zero = PredictionRecord(pid("z"), "z", "iris", "1", {}, "setosa", dict.fromkeys(CLASSES, 1 / 3), "grpc",
                                    0.0, time.time() - 3600)
            repo.insert_predictions([zero, dataclasses.replace(zero, prediction_id=pid("old"), request_id="old",
                                                               latency_ms=2.5, created_at=-90.25)])
            label_feedback(rng)
            maintained = aggregate_tables()
            assert {r[0] for r in maintained["stats_rollup"]} == set(aggregates.WIDTHS)
            with db.atomic():  # what the previous release's writers left: no rows of the two widths
                for table in aggregates.TABLES:
                    db.execute_sql(f"DELETE FROM {table} WHERE width IN (300, 1800)")
            assert aggregate_tables() != maintained
        assert migrate(database, stop_before="m0012") == ["m0011_series_widths"]
        with session():
            assert aggregate_tables() == maintained
            m0011 = importlib.import_module("database.migrations.m0011_series_widths")
            with db.atomic():
                db.execute_sql("UPDATE stats_rollup SET n = n + 7 WHERE width = 300")
                m0011.apply(database)
            assert aggregate_tables() == maintained
            rows = raw_rows()
            for width in (300, 1800):
                for lo, hi in ((-3600, 3600), (base - 60, base + 3 * DAY + 60)):
                    stats = repo.stats(repo.PredictionFilter(start=lo, end=hi), width, now=hi)
                    counts = Counter(int(r[5] // width * width) for r in rows if lo <= r[5] < hi)
                    assert {b.start: b.total for b in stats.series if b.total} == counts
    finally:
        database.close()


def test_the_backfill_bins_edge_latencies_as_writes_do(database):
    """Latencies of 0, below 0, NaN, infinite and beyond either end of the histogram land in the bins the writes
    use, and a row made before 1970 in its own minute, when the backfill rebuilds them (PostgreSQL: in SQL)."""
    at = time.time() // 60 * 60 - 59.5
    edges = [0.0, -3.0, math.inf, 1e-9, 1e13, 1.0, histogram.GAMMA ** 7, 2.5]
    if is_postgres():  # SQLite stores NaN as NULL
        edges.insert(0, math.nan)
    records = [PredictionRecord(pid(f"e{i}"), f"e{i}", "iris", "1", {}, "setosa", dict.fromkeys(CLASSES, 1 / 3),
                                "grpc", ms, at + i) for i, ms in enumerate(edges)]
    records.append(dataclasses.replace(records[-1], prediction_id=pid("old"), request_id="old", created_at=-90.25))
    repo.insert_predictions(records)
    maintained = aggregate_tables()
    with db.atomic():
        aggregates.backfill()
    assert aggregate_tables() == maintained


def test_a_feedback_overwrite_moves_one_pair(database):
    at = time.time() // 60 * 60 - 600
    r = PredictionRecord(pid("x"), "x", "iris", "1", {}, "setosa", dict.fromkeys(CLASSES, 1 / 3), "grpc", 1.0, at)
    repo.insert_predictions([r])
    repo.upsert_feedback(r.prediction_id, "setosa", time.time())
    repo.upsert_feedback(r.prediction_id, "virginica", time.time())
    repo.upsert_feedback_many({r.prediction_id: "virginica"}, time.time())
    [q] = repo.version_quality()
    assert (q.feedback_count, q.accuracy) == (1, 0.0)
    assert aggregate_tables()["stats_feedback"] == {(w, int(at) // w * w, "iris", "1", "setosa", "virginica", 1)
                                                    for w in aggregates.WIDTHS}


def test_postgresql_and_sqlite_answer_alike(tmp_path, monkeypatch):
    answers = []
    with TempSchema() as schema:
        for url in (f"sqlite:///{tmp_path / 'parity.db'}", schema.url):
            rng = random.Random(7)
            base = 1_790_000_000.5
            database = open_database(url)
            migrate(database)
            with session():
                load(rng, base, monkeypatch)
                label_feedback(rng)
                answers.append([repo.stats(repo.PredictionFilter(start=s, end=e), 3600, now=base + 4 * DAY)
                                for s, e in ((base, base + DAY), (base + 7000, base + 2 * DAY + 5))]
                               + [repo.version_quality()])
            database.close()
    assert answers[0] == answers[1]
