"""ListPredictions on the partitioned table (repo._partitioned_page) reads the daily partitions newest first and
stops once the page is full, with the same pages as one statement over the whole table (repo.page_query, a Merge
Append of every partition): the same rows in the same order and the same next-page tokens, for every filter, with
rows in the DEFAULT partition (a day whose partition was missing, rows older than every partition and ahead of
them), rows sharing a timestamp, rows at midnight, a rare filter met only in old days, and a partition list read
before a partition was created or dropped."""
from __future__ import annotations

import json
import time

import pytest

from database import bounded, partitions, repo
from database.connect import session
from database.migrate import migrate
from database.models import Prediction, to_datetime, to_epoch
from tests.integration.postgres.test_database import record
from tests.support import pg
from tests.support.pg import schema_database

pytestmark = pytest.mark.postgres
DAY = 86400.0
SIZES = (4, 50)


def _rows(now: float, per_day: int) -> list:
    """per_day rows a day (4 times that today) over days -12..+10 around now: most days have a partition; day -3
    has none (its rows go to DEFAULT), nor do days before -8 or after +7. virginica only before day -5, queue only
    on days -11 and -7 (the filters a page must cross many partitions for); blocks of 5 rows share a timestamp,
    the first block of a day at midnight."""
    midnight = to_epoch(to_datetime(now).replace(hour=0, minute=0, second=0, microsecond=0))
    out = []
    for day in (-12, -11, -9, -7, -6, -5, -3, -2, -1, 0, 10):
        count = 4 * per_day if day == 0 else per_day
        for i in range(count):
            at = midnight + day * DAY + (i // 5) * (DAY / count * 5) * 0.9  # 5 rows a timestamp, the first at 00:00
            if day == 0:
                at = min(at, now - 1)
            model, version = (("wine", "1") if i % 4 == 0 else ("iris", "2" if i % 3 else "1"))
            label = "virginica" if day < -5 and i % 2 else ("setosa" if i % 3 else "versicolor")
            transport = "queue" if day in (-11, -7) and i % 10 == 0 else ("rest" if i % 2 else "grpc")
            out.append(record(f"r{day}-{i}", label, model=model, version=version, transport=transport, at=at))
    return out


FILTERS = {
    "none": repo.PredictionFilter(),
    "model": repo.PredictionFilter(model="wine"),
    "model+version": repo.PredictionFilter(model="iris", model_version="2"),
    "version": repo.PredictionFilter(model_version="1"),
    "label (old days only)": repo.PredictionFilter(label="virginica"),
    "transport": repo.PredictionFilter(transport="rest"),
    "transport (rare, old days)": repo.PredictionFilter(transport="queue"),
}


def _filters(now: float) -> dict[str, repo.PredictionFilter]:
    return {**FILTERS,
            "time window": repo.PredictionFilter(start=now - 6.5 * DAY, end=now - 1.2 * DAY),
            "window and model": repo.PredictionFilter(model="iris", start=now - 12.5 * DAY, end=now + 20 * DAY),
            "request_id in a partition": repo.PredictionFilter(request_id="r-1-7"),
            "request_id in DEFAULT": repo.PredictionFilter(request_id="r-3-8"),
            "request_id absent": repo.PredictionFilter(request_id="nope")}


def _reference_pages(flt: repo.PredictionFilter, size: int) -> list[tuple[list[tuple[str, str]], str]]:
    """The pages as one statement over the whole table reads them (page_query)."""
    pages, token = [], ""
    while True:
        rows = list(repo.page_query(flt, size, token).objects())
        token = repo._encode_token(rows[size - 1]) if len(rows) > size else ""
        pages.append(([(r.prediction_id, getattr(r, "feedback_label", None) or "") for r in rows[:size]], token))
        if not token:
            return pages


def _pages(flt: repo.PredictionFilter, size: int, now: float) -> list[tuple[list[tuple[str, str]], str]]:
    pages, token = [], ""
    while True:
        rows, token = repo.list_predictions(flt, size, token, now=now)
        pages.append(([(r.record.prediction_id, r.feedback_label) for r in rows], token))
        if not token:
            return pages


def _ordered(flt: repo.PredictionFilter) -> list[str]:
    """Every row of the filter, newest first, by one query without paging."""
    return [r.prediction_id for r in Prediction.select(Prediction.prediction_id).where(*repo._where(flt))
            .order_by(Prediction.created_at.desc(), Prediction.prediction_id.desc())]


def _check_every_page(now: float) -> None:
    for name, flt in _filters(now).items():
        ordered = _ordered(flt)
        for size in SIZES:
            pages = _pages(flt, size, now)
            assert pages == _reference_pages(flt, size), f"{name}, page size {size}"
            assert [pid for rows, _ in pages for pid, _ in rows] == ordered, f"{name}, page size {size}"


def _setup(database, now: float, per_day: int) -> list:
    partitions.ensure_partitions(database, now=now, ahead=7, behind=8)
    gap = partitions.partition_name(to_datetime(now - 3 * DAY).date())
    database.execute_sql(f"DROP TABLE {gap}")  # a day without its partition: its rows go to DEFAULT
    rows = _rows(now, per_day)
    repo.insert_predictions(rows)
    repo.upsert_feedback_many({r.prediction_id: "setosa" for r in rows[::7]}, now)
    database.execute_sql("ANALYZE predictions")
    return rows


def test_every_page_of_every_filter_is_the_one_statements_page():
    with schema_database() as (_schema, database):
        migrate(database)
        now = time.time()
        with session():
            _setup(database, now, 30)
            held = [r for (r,) in database.execute_sql(f"SELECT request_id FROM {partitions.DEFAULT}")]
            assert {r.rsplit("-", 1)[0] for r in held} == {"r-12", "r-11", "r-9", "r-3", "r10"}
            assert len(partitions.daily_bounds(database, max_age_s=0)) == 15
            _check_every_page(now)
            # a partition list read before a partition was created (taking its day's rows from DEFAULT) and
            # before one was dropped: the pages stay exact, only less pruned
            before = partitions.daily_bounds(database, max_age_s=0)
            with database.atomic():
                partitions.create_partition(database, to_datetime(now - 3 * DAY).date())
            database.execute_sql(f"DROP TABLE {partitions.partition_name(to_datetime(now - 8 * DAY).date())}")
            assert database.execute_sql(f"SELECT COUNT(*) FROM {partitions.DEFAULT}").fetchone()[0] == 120
            assert partitions.daily_bounds(database) is before  # the list cached before the change
            assert sorted(b for b in partitions.partitions(database).values() if b[0]) != before
            _check_every_page(now)
        # a page of several statements within a call's bound: each later one gets the time the call has left
        with session(), bounded.bounded(30.0):
            time.sleep(0.2)
            rows, _ = repo.list_predictions(repo.PredictionFilter(transport="queue"), 4, now=now)
            assert len(rows) == 4  # found on days -7 and -11: many ranges read
            [(left,)] = database.execute_sql(
                "SELECT setting::int FROM pg_settings WHERE name = 'statement_timeout'").fetchall()
            assert 0 < left <= 29_800


def _scans(plan: dict, out: list) -> list:
    """(partition, executed) for each scan of predictions' partitions in an EXPLAIN ANALYZE plan."""
    if plan.get("Relation Name", "").startswith("predictions"):
        out.append((plan["Relation Name"], plan.get("Actual Loops", 0) > 0))
    for child in plan.get("Plans", []):
        _scans(child, out)
    return out


def _appends(plan: dict, out: list) -> list:
    """The node type of each node whose children scan two daily partitions or more (Append, Merge Append)."""
    days = [c for c in plan.get("Plans", []) if c.get("Relation Name", "").startswith(partitions.PREFIX)]
    if len(days) > 1:
        out.append(plan["Node Type"])
    for child in plan.get("Plans", []):
        _appends(child, out)
    return out


def _explain(database, sql: str, params) -> dict:
    [(raw,)] = database.execute_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params).fetchall()
    return (raw if isinstance(raw, list) else json.loads(raw))[0]["Plan"]


def test_the_first_page_reads_only_the_partition_that_fills_it():
    """EXPLAIN ANALYZE of the statement list_predictions runs for page 1 (no filter) when today's partition holds
    enough rows: one statement, which reads DEFAULT and the daily partitions from today's up in order (an Append,
    no Merge Append), no partition older than today's run; one statement over the whole table runs all 16."""
    with schema_database() as (_schema, database):
        migrate(database)
        now = time.time()
        with session():
            _setup(database, now, 100)
            today = partitions.partition_name(to_datetime(now).date())
            older = {partitions.partition_name(to_datetime(now - k * DAY).date()) for k in range(1, 13)}
            with pg.statements(database) as sent:
                page, _ = repo.list_predictions(repo.PredictionFilter(), 50, now=now)
            assert len(page) == 50 and len(sent) == 1
            plan = _explain(database, *sent[0])
            scanned = _scans(plan, [])
            assert (partitions.DEFAULT, True) in scanned and (today, True) in scanned
            assert not {name for name, executed in scanned if executed} & older, scanned
            assert _appends(plan, []) == ["Append"]
            one = _explain(database, *repo.page_query(repo.PredictionFilter(), 50).sql())
            assert len([name for name, executed in _scans(one, []) if executed]) == 16  # 15 days, DEFAULT
            assert _appends(one, []) == ["Merge Append"]
