"""Repository functions over the bound database; they take and return plain dataclasses, never peewee rows."""
from __future__ import annotations

import base64
import heapq
import json
import math
import operator
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import reduce

from peewee import JOIN, SQL, IntegrityError, Tuple, Value, fn

from database import aggregates, bounded, partitions
from database.connect import REJECTED_SQLSTATE_CLASSES, is_postgres, write_transaction
from database.copy_text import claims_text, copy_text, features_json, to_json
from database.fingerprint import stored_hash
from database.models import BatchRun, Feedback, ModelVersion, Prediction, db, to_datetime, to_epoch
from database.quality import Quality
from database.records import PredictionRecord, Stored, as_rows, prediction_id_of, row_count


class InvalidPageToken(Exception):
    """The page token was not issued by list_predictions."""


@dataclass(frozen=True)
class StoredPrediction:
    """A stored prediction with its feedback label ("" when none); key: its place in the listing order (created_at
    as stored, prediction_id), for token_after."""

    record: PredictionRecord
    feedback_label: str = ""
    key: tuple[datetime, str] | None = field(default=None, repr=False, compare=False)


@dataclass(frozen=True)
class PredictionFilter:
    """Filters for list and stats; None or "" does not filter. Times are Unix epoch seconds."""

    model: str = ""
    model_version: str = ""
    label: str = ""
    transport: str = ""
    start: float | None = None
    end: float | None = None
    request_id: str = ""


MAX_SERIES_BUCKETS = 2000  # buckets of one GetStats series


class TooManyBuckets(ValueError):
    """The window holds more series buckets than MAX_SERIES_BUCKETS."""


@dataclass(frozen=True)
class Stats:
    """Aggregates over a window (latency percentiles p50, p95, p99 in ms), the window they cover (epoch seconds;
    start None for the beginning) and, when asked for, its series of buckets."""

    total: int = 0
    by_label: dict[str, int] = field(default_factory=dict)
    by_version: dict[str, int] = field(default_factory=dict)
    by_transport: dict[str, int] = field(default_factory=dict)
    latency_ms: tuple[float, float, float] = (0.0, 0.0, 0.0)
    quality: list[Quality] = field(default_factory=list)
    series: list[aggregates.Bucket] = field(default_factory=list)  # start: epoch seconds
    window_start: float | None = None
    window_end: float = 0.0


_COLUMNS = ("prediction_id", "request_id", "model", "model_version", "features", "label", "probabilities",
            "transport", "latency_ms", "created_at", "request_hash")


UNIQUE_VIOLATION = "23505"
_STAGING = "predictions_incoming"  # a temporary table per connection: rows offered again go through it


def insert_predictions(records: Sequence[Stored], conflicts: list[str] | None = None) -> int:
    """Insert records in one transaction, ignoring request_ids already stored; returns how many were offered.
    conflicts, when given, gets the request_ids of offered rows that were not stored because the key is stored
    already for a different request (another fingerprint: possible only when the server answered without being
    able to check the key, during a database outage); the stored row stays.

    Idempotent: a retried request, or a spool replayed twice, never makes a second row. This is the hot write
    path, so it bypasses the query builder. PostgreSQL: COPY (the cheapest bulk load) inside a savepoint; if
    any row is already stored the batch goes again by COPY into a temporary staging table and one INSERT ...
    SELECT ... ON CONFLICT DO NOTHING; if the data is refused, as a multi-row INSERT ... ON CONFLICT DO NOTHING
    (psycopg2 execute_values), which raises for the refused value. SQLite: executemany with ON CONFLICT DO
    NOTHING.
    """
    if not records:
        return 0
    table = Prediction._meta.table_name
    columns = ", ".join(_COLUMNS)
    postgres = is_postgres()
    # SQLite: the keys are looked up (_conflicting) before the insert, so the write lock is taken at BEGIN: begun
    # deferred, another process's commit in between made the insert fail at once with "database is locked"
    with write_transaction():
        cursor = db.cursor()
        writer_claims = postgres and partitions.writer_claims(locked=True)  # m0014: this transaction claims its ids
        if postgres:
            import psycopg2
            claims: list[str] | None = [] if writer_claims else None
            text = copy_text(records, claims)
            try:
                with db.atomic():  # a savepoint: a failed COPY leaves the transaction usable
                    if claims is not None:  # m0014: the ids' claims first (a held one raises at once)
                        cursor.copy_expert(partitions.keys_copy_sql(), claims_text(claims))
                    cursor.copy_expert(f"COPY {table} ({columns}) FROM STDIN", text)
                aggregates.add_records(records)  # COPY stored every row: all are new
                return row_count(records)
            except psycopg2.Error as exc:
                if (exc.pgcode or "")[:2] not in REJECTED_SQLSTATE_CLASSES:
                    raise
                if exc.pgcode == UNIQUE_VIOLATION:
                    # some rows are stored already (a retry, a spool replay, a rerun of a batch input): COPY into
                    # a session-local staging table, then one INSERT ... SELECT that skips the stored ones, at
                    # close to COPY's speed. A value the database refuses raises here (the caller isolates it).
                    text.seek(0)
                    keyed = partitions.keyed()
                    with db.atomic():
                        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {_STAGING} (LIKE {table}) "
                                       "ON COMMIT DELETE ROWS")
                        cursor.copy_expert(f"COPY {_STAGING} ({columns}) FROM STDIN", text)
                        if writer_claims:  # m0014: claim the ids not held, insert what was claimed
                            cursor.execute(partitions.claim_and_insert(_STAGING, columns, aggregates.RETURNING))
                        else:
                            # partitioned (m0008): an id another row holds is skipped here (its claim in
                            # prediction_keys would raise), as the old UNIQUE (request_id) skipped it
                            source = partitions.fresh(_STAGING) if keyed else _STAGING
                            cursor.execute(f"INSERT INTO {table} ({columns}) SELECT {columns} FROM {source} "
                                           f"ON CONFLICT DO NOTHING RETURNING {aggregates.RETURNING}")
                        aggregates.add_rows(cursor.fetchall())  # only the rows inserted now
                        if conflicts is not None and keyed:
                            conflicts.extend(partitions.conflicting(db.obj, _STAGING))
                        elif conflicts is not None:
                            cursor.execute(f"SELECT s.request_id FROM {_STAGING} s JOIN {table} p "
                                           "ON p.request_id = s.request_id WHERE s.request_hash IS NOT NULL "
                                           "AND p.request_hash IS NOT NULL AND p.request_hash <> s.request_hash")
                            conflicts.extend(r[0] for r in cursor.fetchall())
                    return row_count(records)
                # a value COPY refuses: the INSERT below raises for it (the caller isolates that row)
        rows = [(r.prediction_id, r.request_id, r.model, r.model_version, features_json(r.features), r.label,
                 to_json(r.probabilities), r.transport, float(r.latency_ms),
                 to_datetime(r.created_at) if postgres else str(to_datetime(r.created_at)), r.request_hash)
                for r in as_rows(records)]
        if conflicts is not None:
            conflicts.extend(_conflicting(rows))
        if postgres:
            from psycopg2.extras import execute_values
            new = rows
            if partitions.keyed():  # no primary key arbitrates (m0012): rows whose id is claimed are left out here
                held = {pid for pid, _ in partitions.claims(db.obj, [r[0] for r in rows])}
                new = list({r[0]: r for r in reversed(rows) if r[0] not in held}.values())[::-1]  # first of each
                if new and writer_claims:  # m0014: claimed here (a racing writer's ids are skipped)
                    claimed = {pid for (pid,) in execute_values(
                        cursor, f"INSERT INTO {partitions.KEYS} (prediction_id, created_at) VALUES %s "
                        "ON CONFLICT DO NOTHING RETURNING prediction_id", [(r[0], r[9]) for r in new],
                        page_size=1000, fetch=True)}
                    new = [r for r in new if r[0] in claimed]
            inserted = execute_values(
                cursor, f"INSERT INTO {table} ({columns}) VALUES %s ON CONFLICT DO NOTHING "
                f"RETURNING {aggregates.RETURNING}", new,
                template="(%s, %s, %s, %s, %s::json, %s, %s::json, %s, %s, %s, %s)", page_size=1000, fetch=True)
            aggregates.add_rows(inserted)
        else:
            marks = ", ".join("?" * len(_COLUMNS))
            _insert_new_sqlite(cursor, f"INSERT INTO {table} ({columns}) VALUES ({marks}) ON CONFLICT DO NOTHING",
                               rows, records)
    return len(rows)


class _SomeStored(Exception):
    """Some rows of an SQLite batch were stored already."""


def _insert_new_sqlite(cursor, sql: str, rows: list[tuple], records: Sequence[Stored]) -> None:
    """SQLite: insert rows (ignoring those stored already) and count the new ones in the aggregates: all at once
    when every row is new, else (a retry, a replay) again row by row to tell which are."""
    try:
        with db.atomic():  # a savepoint
            cursor.executemany(sql, rows)
            if cursor.rowcount != len(rows):
                raise _SomeStored
        aggregates.add_records(records)
        return
    except _SomeStored:
        pass
    new = []
    for row in rows:
        cursor.execute(sql, row)
        if cursor.rowcount == 1:
            new.append(tuple(row[i] for i in aggregates.ROW_FIELDS))
    aggregates.add_rows(new)


def _conflicting(rows: list[tuple]) -> list[str]:
    """The request_ids among rows to insert (tuples in _COLUMNS order) stored already with another fingerprint."""
    offered = {r[1]: r[-1] for r in rows if r[-1] is not None}
    if not offered:
        return []
    return [rid for rid, answer in answered(list(offered)).items()
            if answer.request_hash is not None and answer.request_hash != offered[rid]]


def answered(request_ids: Sequence[str], prediction_ids: Sequence[str] | None = None
             ) -> dict[str, PredictionRecord]:
    """The stored answers of these request_ids (idempotency keys), by request_id; ids not stored are absent. Each
    answer has its request_hash (recomputed from the stored features for a row stored without one), and neither
    features nor created_at (0). PostgreSQL: a key is looked up as its prediction_id (partitions.stored_by_key;
    prediction_ids, one per request id when the caller has them, spare deriving them again); SQLite: by
    request_id, in chunks of 500 (IN).

    The one place that knows where answered keys live (a later prediction_keys table changes only this)."""
    ids = list(dict.fromkeys(request_ids))
    if not ids:
        return {}
    if len(ids) != len(request_ids):  # a key twice: prediction_ids (aligned with request_ids) no longer line up
        prediction_ids = None
    table = Prediction._meta.table_name
    columns = ("request_id, request_hash, prediction_id, model, model_version, label, probabilities, latency_ms, "
               "transport, CASE WHEN request_hash IS NULL THEN features END")
    select = f"SELECT {columns} FROM {table} "
    rows: list = []
    if is_postgres() and partitions.keyed():
        # partitioned: as prediction ids, through their claims (m0012)
        rows = partitions.stored_by_key(db.obj, ids, prediction_ids)
    elif is_postgres() and not any("\n" in i for i in ids):
        # the ids as one text split by the server (a 5,000-element array parameter costs ~30 ms to quote and parse;
        # a request id is printable: no newline in it, inference.bounds), each looked up in the unique index on
        # request_id: the LATERAL ... LIMIT 1 keeps it a nested loop of index probes, O(keys); = ANY or a plain join
        # is planned as a scan of the whole table (0.1-0.4 s per call at 90,000 rows, growing with the table)
        lateral = columns.replace("request_id, request_hash", "k.id, p.request_hash", 1)
        rows = db.execute_sql(f"SELECT {lateral} FROM unnest(string_to_array(%s, E'\\n')) k(id) CROSS JOIN LATERAL "
                              f"(SELECT * FROM {table} WHERE request_id = k.id LIMIT 1) p",
                              ("\n".join(ids),)).fetchall()
    else:
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            rows += db.execute_sql(select + f"WHERE request_id IN ({', '.join('?' * len(chunk))})",
                                   chunk).fetchall()
    out = {}
    for rid, rhash, pid, model, version, label, probabilities, latency, transport, features in rows:
        if isinstance(probabilities, str):  # SQLite: JSON text
            probabilities = json.loads(probabilities)
        if rhash is None:
            features = json.loads(features) if isinstance(features, str) else features
            rhash = stored_hash(model, features or {})
        out[rid] = PredictionRecord(
            prediction_id=pid, request_id=rid, model=model, model_version=version, features={}, label=label,
            probabilities=probabilities, transport=transport, latency_ms=latency, created_at=0.0, request_hash=rhash)
    return out


def _record(row: Prediction) -> PredictionRecord:
    return PredictionRecord(
        prediction_id=row.prediction_id, request_id=row.request_id, model=row.model,
        model_version=row.model_version, features=row.features, label=row.label,
        probabilities=row.probabilities, transport=row.transport, latency_ms=row.latency_ms,
        created_at=to_epoch(row.created_at))


def get_prediction(prediction_id: str) -> PredictionRecord | None:
    if partitions.keyed():  # partitioned (m0012): the id's claim names the row's partition
        found = partitions.claims(db.obj, [prediction_id])
        if not found:
            return None
        [(_, created)] = found
        row = Prediction.get_or_none(Prediction.created_at == created, Prediction.prediction_id == prediction_id)
    else:
        row = Prediction.get_or_none(Prediction.prediction_id == prediction_id)
    return _record(row) if row else None


def count_predictions(flt: PredictionFilter = PredictionFilter()) -> int:
    return Prediction.select().where(*_where(flt)).count()


def _where(flt: PredictionFilter) -> list:
    conds = [Prediction.prediction_id.is_null(False)]
    if flt.model:
        conds.append(Prediction.model == flt.model)
    if flt.model_version:
        conds.append(Prediction.model_version == flt.model_version)
    if flt.label:
        conds.append(Prediction.label == flt.label)
    if flt.transport:
        conds.append(Prediction.transport == flt.transport)
    if flt.request_id and partitions.keyed():
        # partitioned (m0012): its prediction_id's claim names one partition, given as a constant so the others are
        # left out when the query is planned (none is scanned for a key not stored: created_at IS NULL)
        pid = prediction_id_of(flt.request_id)
        found = partitions.claims(db.obj, [pid])
        if not found and (legacy := partitions.legacy_ids(db.obj, [flt.request_id])):
            pid = next(iter(legacy))  # stored before ordered ids (m0013): under its uuid5 id
            found = partitions.claims(db.obj, [pid])
        conds += [Prediction.created_at == (found[0][1] if found else None), Prediction.prediction_id == pid]
    elif flt.request_id:
        conds.append(Prediction.request_id == flt.request_id)
    if flt.start is not None:
        conds.append(Prediction.created_at >= to_datetime(flt.start))
    if flt.end is not None:
        conds.append(Prediction.created_at < to_datetime(flt.end))
    return conds


def list_predictions(flt: PredictionFilter, page_size: int, page_token: str = "",
                     now: float | None = None) -> tuple[list[StoredPrediction], str]:
    """One page, newest first (keyset paging on created_at, prediction_id); returns (rows, next token or "").
    On the partitioned table (PostgreSQL after m0008) the page is read partition by partition, newest first
    (_partitioned_page); `now` (epoch seconds, default the clock) tells it where the newest rows are. A request_id
    names one row at most, found in one statement through its key's claim (pruned to its partition when run)."""
    token = _decode_token(page_token) if page_token else None
    if partitions.keyed() and not flt.request_id:
        rows = _partitioned_page(flt, page_size + 1, token, to_datetime(time.time() if now is None else now))
    else:
        rows = list(_page_select(flt, page_size + 1, token).objects())
    # .objects() puts the joined Feedback.label on each row as `feedback_label` (absent from the model's type)
    page = [StoredPrediction(_record(r), getattr(r, "feedback_label", None) or "", (r.created_at, r.prediction_id))
            for r in rows[:page_size]]
    next_token = _encode_token(rows[page_size - 1]) if len(rows) > page_size else ""
    return page, next_token


def page_query(flt: PredictionFilter, page_size: int, page_token: str = ""):
    """A page of list_predictions as one statement over the whole table (page_size + 1 rows: the extra one says a
    next page exists): what SQLite and an unpartitioned table run, and what the partitioned read must equal."""
    return _page_select(flt, page_size + 1, _decode_token(page_token) if page_token else None)


def _page_select(flt: PredictionFilter, limit: int, token: tuple[datetime, str] | None, within: Sequence = ()):
    conds = [*_where(flt), *within]
    if token:
        created, pid = token
        # a row comparison, which both databases turn into one seek on the (filter, created_at, prediction_id)
        # indexes (the OR of its expansion would scan from the newest row on: listing N rows read O(N^2 / page))
        conds.append(Tuple(Prediction.created_at, Prediction.prediction_id) < Tuple(created, pid))
        if partitions.keyed():  # partitioned (m0008): the planner leaves out the partitions newer than the token
            conds.append(Prediction.created_at <= created)
    return (Prediction.select(Prediction, Feedback.label.alias("feedback_label"))
            .join(Feedback, JOIN.LEFT_OUTER, on=(Feedback.prediction == Prediction.prediction_id))
            .where(*conds)
            .order_by(Prediction.created_at.desc(), Prediction.prediction_id.desc())
            .limit(limit))


def _partitioned_page(flt: PredictionFilter, want: int, token: tuple[datetime, str] | None,
                      now: datetime) -> list[Prediction]:
    """The first `want` rows of a page on the partitioned table, newest first, read so that it stops once full.

    One statement over the whole table is a Merge Append of every partition at or before the token (the DEFAULT
    partition may hold rows of any time, so the planner cannot read the daily ones one after another): one index
    seek per partition, each planned, whatever the page needs. Here instead the time ranges of
    partitions.page_spans, newest first, each covered by daily partitions only (an ordered Append that stops in
    the partition that fills the page), until no later range can hold a row of the page; the first statement also
    reads the rows outside every daily partition's range (the DEFAULT partition, normally empty: that part is
    pruned to it). Each statement's rows are in the database's order and different statements' rows lie in
    different times, so they are merged by time; a row read twice (a partition created or dropped since the
    partition list was read) counts once. The same rows in the same order as one statement (page_query)."""
    bounds = partitions.daily_bounds(db.obj)
    outside = [reduce(operator.and_, [*([Prediction.created_at >= lower] if lower else []),
                                      *([Prediction.created_at < upper] if upper else [])], SQL("TRUE"))
               for lower, upper in partitions.gaps(bounds)]
    query = _page_select(flt, want, token, [reduce(operator.or_, outside)])
    top = min([now, *([token[0]] if token else []), *([to_datetime(flt.end)] if flt.end is not None else [])])
    spans = partitions.page_spans(bounds, top, None if flt.start is None else to_datetime(flt.start))
    if not spans:
        return list(query.objects())
    rows: list[Prediction] = []
    for i, (lower, upper) in enumerate(spans):
        newer = sum(1 for r in rows if r.created_at >= upper)  # rows of the page before this range
        within = _page_select(flt, want - newer, token, [Prediction.created_at >= lower, Prediction.created_at < upper])
        if i == 0:  # one statement: the rows outside the partitions' ranges and the newest range's
            query = (query + within).order_by(SQL("created_at DESC, prediction_id DESC"))
        else:
            bounded.refresh()  # this statement gets the time the call has left, not what it had at its start
            query = within
        rows = list(heapq.merge(rows, query.objects(), key=lambda r: r.created_at, reverse=True))
        if i + 1 == len(spans) or sum(1 for r in rows if r.created_at >= spans[i + 1][1]) >= want:
            break  # no older range can hold a row of the page
    unique = {(r.created_at, r.prediction_id): r for r in rows}  # dicts keep the merged order
    return list(unique.values())[:want]


def count_by_request_prefix(model: str, request_id_prefix: str, start: float | None = None) -> int:
    """How many stored predictions of model have a request id starting with request_id_prefix (created at or after
    start, epoch seconds, when given: the (model, model_version, created_at) index bounds the rows read)."""
    conds = [Prediction.model == model,
             fn.SUBSTR(Prediction.request_id, 1, len(request_id_prefix)) == request_id_prefix]
    if start is not None:
        conds.append(Prediction.created_at >= to_datetime(start))
    return Prediction.select().where(*conds).count()


def _encode_token(row: Prediction) -> str:
    return _token(row.created_at, row.prediction_id)


def _token(created_at: datetime, prediction_id: str) -> str:
    raw = json.dumps([created_at.isoformat(), prediction_id]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def token_after(row: StoredPrediction) -> str:
    """The page token that lists on after this row of a page from list_predictions: for a page cut short."""
    if row.key is None:
        raise ValueError("token_after needs a row from list_predictions")
    return _token(*row.key)


def _decode_token(token: str) -> tuple[datetime, str]:
    try:
        created, pid = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        if not isinstance(pid, str) or len(pid) > 64 or not pid.isprintable():
            raise ValueError("not a prediction id")
        return datetime.fromisoformat(created), pid
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidPageToken(f"page_token {token[:40]!r} is not valid; pass next_page_token unchanged") from exc


def series_starts(start: float | None, end: float, first: float | None, width: int) -> list[int]:
    """The starts of the width-second buckets (aligned to multiples of width since the epoch) that cover
    [start, end); an unset start begins at `first` (the oldest data; no buckets when there is none)."""
    begin = start if start is not None else first
    if begin is None or begin >= end:
        return []
    lo, hi = math.floor(begin / width), math.ceil(end / width)
    if hi - lo > MAX_SERIES_BUCKETS:
        raise TooManyBuckets(f"the window holds {hi - lo} buckets of {width} s; the limit is {MAX_SERIES_BUCKETS}: "
                             "use wider buckets or a shorter window")
    return [k * width for k in range(lo, hi)]


def stats(flt: PredictionFilter, bucket_seconds: int = 0, now: float | None = None) -> Stats:
    """Counts per label, model version ("model@version") and transport, latency percentiles and quality over the
    window (its edges rounded out to whole minutes), read from the aggregates (database.aggregates); with
    bucket_seconds (a multiple of 60), also the window's series of buckets of that width (TooManyBuckets beyond
    the limit). Filters other than model and the window are not supported here (ValueError)."""
    if flt.model_version or flt.label or flt.transport or flt.request_id:
        raise ValueError("stats filters by model and time only")
    start, end = aggregates.window(flt.start, flt.end if flt.end is not None else
                                   (time.time() if now is None else now))
    found = aggregates.totals(start, end, flt.model)
    series: list[aggregates.Bucket] = []
    if bucket_seconds:
        first = aggregates.first_minute(flt.model) if start is None else start
        starts = series_starts(start, end, first, bucket_seconds)
        series = aggregates.series(starts, bucket_seconds, start, end, flt.model)
    return Stats(total=found.total, by_label=found.by_label, by_version=found.by_version,
                 by_transport=found.by_transport, latency_ms=found.latency_ms,
                 quality=aggregates.version_quality(start, end, flt.model), series=series,
                 window_start=None if start is None else float(start), window_end=float(end))


def version_quality(flt: PredictionFilter = PredictionFilter()) -> list[Quality]:
    """Accuracy, macro precision and recall per model version, over predictions in the filter (model, version and
    a window rounded out to whole minutes) with feedback, read from the aggregates."""
    if flt.label or flt.transport or flt.request_id:
        raise ValueError("version_quality filters by model, version and time only")
    if flt.start is None and flt.end is None:
        return aggregates.version_quality(None, None, flt.model, flt.model_version)
    start, end = aggregates.window(flt.start, flt.end if flt.end is not None else 2.0**40)
    return aggregates.version_quality(start, end, flt.model, flt.model_version)


def upsert_feedback(prediction_id: str, label: str, at: float) -> None:
    """Record (or overwrite) the true label of a stored prediction."""
    with write_transaction():
        if not aggregates.record_feedback({prediction_id: label}):
            return  # no such prediction (any more: retention dropped it); feedback has no foreign key (m0008)
        Feedback.insert(prediction=prediction_id, label=label, created_at=to_datetime(at)).on_conflict(
            conflict_target=[Feedback.prediction],
            update={Feedback.label: label, Feedback.created_at: to_datetime(at)}).execute()


def record_activation(name: str, version: str, sha256: str, metrics: dict, created_at: float,
                      activated_at: float) -> None:
    """Store a model version, or update when it (re)started serving."""
    ModelVersion.insert(name=name, version=version, sha256=sha256, metrics=metrics,
                        created_at=to_datetime(created_at), activated_at=to_datetime(activated_at)).on_conflict(
        conflict_target=[ModelVersion.name, ModelVersion.version],
        update={ModelVersion.activated_at: to_datetime(activated_at), ModelVersion.sha256: sha256,
                ModelVersion.metrics: metrics}).execute()


@dataclass(frozen=True)
class ModelVersionRow:
    name: str
    version: str
    sha256: str
    metrics: dict
    created_at: float
    activated_at: float | None


def model_versions(name: str = "") -> list[ModelVersionRow]:
    query = ModelVersion.select().order_by(ModelVersion.name, ModelVersion.activated_at.desc())
    if name:
        query = query.where(ModelVersion.name == name)
    return [ModelVersionRow(r.name, r.version, r.sha256, r.metrics, to_epoch(r.created_at),
                            to_epoch(r.activated_at) if r.activated_at else None) for r in query]


# -- batch pipeline runs (RecordBatchRun / ListBatchRuns): every attempt of a run key is kept ------------------
@dataclass(frozen=True)
class PipelineRun:
    """One attempt of a batch pipeline run as RecordBatchRun stores it (epoch seconds; accuracy None when labels
    are unknown; finished_at 0 while it runs). In a request, attempt 0 means "a new one / the latest running"."""

    run_key: str
    kind: str
    run_date: str = ""
    model: str = ""
    model_version: str = ""
    rows: int = 0
    rejected: int = 0
    accuracy: float | None = None
    duration_s: float = 0.0
    status: str = "running"
    message: str = ""
    started_at: float = 0.0
    updated_at: float = 0.0
    attempt: int = 0
    input: str = ""
    finished_at: float = 0.0


TERMINAL_STATUSES = frozenset({"succeeded", "failed"})
# RUNNING attempts whose process recorded nothing for this long are marked abandoned (mark_abandoned)
DEFAULT_STALE_S = 180.0


class AttemptNotFound(Exception):
    """The run key has no attempt of that number."""


class AttemptFinished(Exception):
    """The attempt has already finished; a finished attempt is never changed."""


class AttemptConflict(Exception):
    """Concurrent starts of one run key kept taking the number this start chose; the caller may retry."""


def _pipeline_run(row: BatchRun) -> PipelineRun:
    return PipelineRun(
        run_key=row.run_key or "", kind=row.name, run_date=row.run_date or "", model=row.model or "",
        model_version=row.model_version or "", rows=row.rows or 0, rejected=row.rejected or 0,
        accuracy=row.accuracy, duration_s=row.duration_s or 0.0, status=row.status, message=row.message or "",
        started_at=to_epoch(row.started_at),
        updated_at=to_epoch(row.updated_at) if row.updated_at else to_epoch(row.started_at),
        attempt=row.attempt or 1, input=row.input or "",
        finished_at=to_epoch(row.finished_at) if row.finished_at else 0.0)


def record_batch_run(run: PipelineRun, now: float) -> tuple[PipelineRun, bool]:
    """Record one attempt of run.run_key; returns (stored attempt, created).

    attempt 0 and RUNNING: a new attempt numbered max + 1 (a racing start retries on the unique index).
    attempt 0 and SUCCEEDED/FAILED: finishes the latest running attempt, or stores a new finished one.
    attempt n: updates attempt n while it runs, or one marked abandoned (its own process was not gone after all:
    its record brings it back); AttemptNotFound / AttemptFinished otherwise. The update is one conditional
    UPDATE ... WHERE status IN ('running', 'abandoned'), so of two finishers one wins and the other is refused.
    started_at and input are kept from the start unless the caller states them."""
    terminal = run.status in TERMINAL_STATUSES
    values = {
        "name": run.kind, "status": run.status, "rows": run.rows, "rejected": run.rejected,
        "run_date": run.run_date, "model": run.model, "model_version": run.model_version,
        "accuracy": run.accuracy, "duration_s": run.duration_s, "message": run.message,
        "error": run.message if run.status == "failed" else None, "updated_at": to_datetime(now),
        "finished_at": to_datetime(now) if terminal else None,
    }
    if run.started_at:
        values["started_at"] = to_datetime(run.started_at)
    if run.input:
        values["input"] = run.input
    attempt = run.attempt
    with write_transaction():  # reads the latest attempt, then writes
        if not attempt and terminal:
            latest = (BatchRun.select(BatchRun.attempt)
                      .where(BatchRun.run_key == run.run_key, BatchRun.status == "running")
                      .order_by(BatchRun.attempt.desc()).first())
            attempt = latest.attempt if latest else 0
        if attempt:
            changed = (BatchRun.update({getattr(BatchRun, k): v for k, v in values.items()})
                       .where(BatchRun.run_key == run.run_key, BatchRun.attempt == attempt,
                              BatchRun.status.in_(("running", "abandoned"))).execute())
            stored = BatchRun.get_or_none(BatchRun.run_key == run.run_key, BatchRun.attempt == attempt)
            if stored is None:
                raise AttemptNotFound(f"run {run.run_key!r} has no attempt {attempt}; send attempt 0 to start one")
            if not changed:
                raise AttemptFinished(f"attempt {attempt} of run {run.run_key!r} has already finished "
                                      f"({stored.status}); a finished attempt is never changed")
            return _pipeline_run(stored), False
    return _new_attempt(run, values, now), True


def mark_abandoned(now: float, stale_s: float = DEFAULT_STALE_S) -> int:
    """Mark every RUNNING attempt whose last record (updated_at, else started_at) is older than stale_s seconds
    as abandoned: its process is taken as gone (a live one records a heartbeat well within that). finished_at is
    its last record, the message says so. Returns how many were marked."""
    cutoff = to_datetime(now - stale_s)
    last = fn.COALESCE(BatchRun.updated_at, BatchRun.started_at)
    return (BatchRun.update({BatchRun.status: "abandoned", BatchRun.finished_at: last,
                             BatchRun.message: Value(f"abandoned: no record from its process for over {stale_s:g}s "
                                                       "(killed, or its machine lost); last: ").concat(
                                                           BatchRun.message)})
            .where(BatchRun.status == "running", last < cutoff).execute())


def _new_attempt(run: PipelineRun, values: dict, now: float) -> PipelineRun:
    row = {**values, "run_key": run.run_key, "params": {}, "started_at": values.get("started_at", to_datetime(now)),
           "input": run.input}
    # one INSERT numbering itself (a subquery), so SQLite takes its write lock at once instead of upgrading a read
    # lock (two such upgrades deadlock); on PostgreSQL two racing starts may pick one number: the unique index
    # refuses the second, which tries again
    Old = BatchRun.alias()
    number = Old.select(fn.COALESCE(fn.MAX(Old.attempt), 0) + 1).where(Old.run_key == run.run_key)
    for _ in range(5):
        try:
            with db.atomic():
                row_id = BatchRun.insert({**row, "attempt": number}).execute()
                return _pipeline_run(BatchRun.get_by_id(row_id))
        except IntegrityError:
            continue  # another recorder took this number first
    raise AttemptConflict(f"run {run.run_key!r}: could not number a new attempt (too many concurrent starts); "
                          "retry")


def list_batch_runs(model: str = "", kind: str = "", page_size: int = 50,
                    page_token: str = "", run_key: str = "") -> tuple[list[PipelineRun], str]:
    """One page of the attempts recorded through record_batch_run, newest first (keyset paging on started_at,
    id); run_key limits it to one run's attempts."""
    conds = [BatchRun.run_key.is_null(False)]
    if run_key:
        conds.append(BatchRun.run_key == run_key)
    if model:
        conds.append(BatchRun.model == model)
    if kind:
        conds.append(BatchRun.name == kind)
    if page_token:
        started, run_id = _decode_run_token(page_token)
        conds.append((BatchRun.started_at < started) | ((BatchRun.started_at == started) & (BatchRun.id < run_id)))
    rows = list(BatchRun.select().where(*conds).order_by(BatchRun.started_at.desc(), BatchRun.id.desc())
                .limit(page_size + 1))
    token = ""
    if len(rows) > page_size:
        last = rows[page_size - 1]
        raw = json.dumps([last.started_at.isoformat(), last.id]).encode()
        token = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return [_pipeline_run(r) for r in rows[:page_size]], token


def _decode_run_token(token: str) -> tuple[datetime, int]:
    try:
        started, run_id = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        # an id the database can compare: SQLite refuses an integer beyond 64 bits (OverflowError, INTERNAL)
        if type(run_id) is not int or not 0 <= run_id < 2 ** 63:
            raise TypeError("not a batch run id")
        return datetime.fromisoformat(started), run_id
    except (ValueError, TypeError, RecursionError) as exc:
        raise InvalidPageToken(f"page_token {token[:40]!r} is not valid; pass next_page_token unchanged") from exc


def predictions_by_id(prediction_ids: Sequence[str]) -> dict[str, PredictionRecord]:
    """The stored predictions among these ids (missing ones are absent), in one query per 1000 ids (partitioned:
    through their claims, partitions.by_id)."""
    found: dict[str, PredictionRecord] = {}
    ids = list(dict.fromkeys(prediction_ids))
    keyed = partitions.keyed()
    for start in range(0, len(ids), 1000):
        chunk = ids[start:start + 1000]
        if keyed:
            rows = partitions.by_id(db.obj, "p.prediction_id, model, model_version, label, probabilities", chunk)
        else:
            rows = [(r.prediction_id, r.model, r.model_version, r.label, r.probabilities) for r in Prediction.select(
                Prediction.prediction_id, Prediction.model, Prediction.model_version, Prediction.label,
                Prediction.probabilities).where(Prediction.prediction_id.in_(chunk))]
        for pid, model, version, label, probabilities in rows:
            if isinstance(probabilities, str):  # SQLite: JSON text
                probabilities = json.loads(probabilities)
            found[pid] = PredictionRecord(
                prediction_id=pid, request_id="", model=model, model_version=version, features={}, label=label,
                probabilities=probabilities, transport="", latency_ms=0.0, created_at=0.0)
    return found


def upsert_feedback_many(labels: dict[str, str], at: float) -> None:
    """Record (or overwrite) the true labels of stored predictions, in one transaction."""
    if not labels:
        return
    when = to_datetime(at)
    with write_transaction():
        found = aggregates.record_feedback(labels)  # the predictions stored (and locked): only theirs is written
        rows = [{"prediction": pid, "label": label, "created_at": when} for pid, label in labels.items()
                if pid in found]
        for start in range(0, len(rows), 500):
            Feedback.insert_many(rows[start:start + 500]).on_conflict(
                conflict_target=[Feedback.prediction],
                update={Feedback.label: SQL("EXCLUDED.label"), Feedback.created_at: SQL("EXCLUDED.created_at")},
            ).execute()
