"""Aggregates of the stored predictions and their feedback, kept as rows are stored, so that GetStats, its series
and the quality gauges read a few thousand aggregate rows instead of the raw table.

Two tables, keyed by a time bucket at five widths (a minute, 5 and 30 minutes, an hour, a day; a row counts in one
bucket of each width), so that any window costs the same whatever the raw table holds, and a series of 5- or
30-minute buckets reads one row per bucket and key instead of one per minute (m0011 added those two widths):
- stats_rollup: per (bucket, model, version, transport) the number of predictions, their count per predicted
  label (a JSON object) and a latency histogram (database.histogram: counts per fixed logarithmic bin, as an
  array, mergeable by adding counts). One row per key keeps the write cheap: a batch of predictions touches a few
  rows per width;
- stats_feedback: the confusion counts per (bucket of the prediction's time, model, version, predicted, true).

Writers: repo.insert_predictions calls add_records (rows it knows are new: its COPY) or add_rows (rows the
database says it inserted: INSERT ... RETURNING), in its transaction, so a row offered twice (a retried request, a
replayed spool) is counted once. repo.upsert_feedback(_many) calls record_feedback before it writes the labels:
it locks the predictions concerned, reads their current feedback and moves each changed pair (minus the old
pair, plus the new one), so an overwrite keeps the confusion exact.

Readers (window [start, end) in epoch seconds): the edges are rounded out to whole minutes (window()); the
window is covered by whole days in its middle, then whole hours, half hours and 5 minutes towards the edges, and
minutes at the edges (cover()); a series covers its window with the widths that divide its bucket width.

A reader fetches the rows of its cover as they are stored (labels and histogram as text) in one query and adds
them up with numpy (database.histogram.add_up: the histograms of a series as a buckets × transports × bins
matrix, its percentiles computed for every row at once), not unnested in SQL: the cost follows the rows read,
not the bins they occupy.
"""
from __future__ import annotations

import json
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np

from database import histogram, partitions
from database.connect import is_postgres
from database.models import db, to_datetime, to_epoch
from database.quality import Quality, quality
from database.records import PredictionBatch, Stored

WIDTHS = (60, 300, 1800, 3600, 86400)  # bucket widths in seconds, finest first; each divides the next
MINUTE, DAY = WIDTHS[0], WIDTHS[-1]

ROLLUP_KEY = ("model", "model_version", "transport")
FEEDBACK_KEY = ("model", "model_version", "predicted", "actual")
TABLES = {"stats_rollup": ROLLUP_KEY, "stats_feedback": FEEDBACK_KEY}

# what INSERT ... RETURNING hands to add_rows, and where those values sit in repo.insert_predictions' row tuples
RETURNING = "model, model_version, transport, label, latency_ms, created_at"
ROW_FIELDS = (2, 3, 7, 5, 8, 9)


# -- bucketing -----------------------------------------------------------------------------------------------------
def minute_of(epoch: float) -> int:
    """The start of the minute holding a prediction made at epoch seconds, as the stored timestamp (microseconds)
    places it."""
    return (round(epoch * 1_000_000) // 60_000_000) * 60


def minutes_of(epochs: Sequence[float] | np.ndarray) -> list[int]:
    """minute_of for many (the same rounding: half to even, then floor)."""
    return (np.rint(np.asarray(epochs, dtype=np.float64) * 1_000_000).astype(np.int64) // 60_000_000 * 60).tolist()


# -- deltas --------------------------------------------------------------------------------------------------------
@dataclass
class Rollup:
    """What one key of stats_rollup gains: predictions, per label, per latency bin."""

    n: int = 0
    labels: Counter = field(default_factory=Counter)
    bins: Counter = field(default_factory=Counter)

    def merge(self, other: Rollup) -> None:
        self.n += other.n
        self.labels.update(other.labels)
        self.bins.update(other.bins)


@dataclass
class Delta:
    """Changes to the aggregates, keyed by (minute start, *key); the coarser widths follow from the minute."""

    rollup: defaultdict = field(default_factory=lambda: defaultdict(Rollup))
    feedback: Counter = field(default_factory=Counter)

    def add_columns(self, created: Sequence[float], models: Sequence[str], versions: Sequence[str],
                    transports: Sequence[str], labels: Sequence[str], latencies: Sequence[float]) -> None:
        """Count rows given column by column: the minutes and bins computed by numpy, the rows counted per (key,
        label) and per (key, bin) by Counter (in C), so the Python work is per distinct pair, not per row (the
        hot path: the server's prediction log)."""
        if not len(created):
            return
        minutes = minutes_of(created)
        rollup = self.rollup
        for (minute, model, version, transport, label), n in Counter(
                zip(minutes, models, versions, transports, labels)).items():
            r = rollup[(minute, model, version, transport)]
            r.n += n
            r.labels[label] += n
        bins = histogram.latency_bins(np.asarray(latencies, dtype=np.float64)).tolist()
        for (minute, model, version, transport, index), n in Counter(
                zip(minutes, models, versions, transports, bins)).items():
            rollup[(minute, model, version, transport)].bins[index] += n

    def add(self, items: Iterable[Stored]) -> None:
        items = list(items)
        records = [item for item in items if type(item) is not PredictionBatch]
        for item in items:
            if type(item) is PredictionBatch:
                r = self.rollup[(minute_of(item.created_at), item.model, item.model_version, item.transport)]
                for index, n in enumerate(np.bincount(item.labels, minlength=len(item.classes)).tolist()):
                    if n:
                        r.labels[item.classes[index]] += n
                r.n += len(item)
                r.bins[histogram.latency_bin(item.latency_ms)] += len(item)
        if records:
            self.add_columns([r.created_at for r in records], [r.model for r in records],
                             [r.model_version for r in records], [r.transport for r in records],
                             [r.label for r in records], [r.latency_ms for r in records])


def add_records(items: Iterable[Stored]) -> None:
    """Count stored records and batches that are all newly inserted (in the inserting transaction)."""
    delta = Delta()
    delta.add(items)
    apply(delta)


def add_rows(rows: Iterable[Sequence]) -> None:
    """Count rows the database reports inserted: (model, model_version, transport, label, latency_ms, created_at)
    with created_at a datetime (as INSERT ... RETURNING gives it) or epoch seconds."""
    delta = Delta()
    columns = list(zip(*rows))
    if columns:
        models, versions, transports, labels, latencies, created = columns
        delta.add_columns([_epoch(c) for c in created], models, versions, transports, labels, latencies)
    apply(delta)


def _epoch(created: datetime | str | float) -> float:
    if isinstance(created, datetime):
        return to_epoch(created)
    if isinstance(created, str):  # SQLite hands back the stored text
        return to_epoch(datetime.fromisoformat(created))
    return float(created)


def _levels(delta: Counter) -> list[tuple]:
    """(width, bucket start, *key, n) rows at every width, sorted (concurrent writers lock rows in one order)."""
    out: Counter = Counter()
    for (minute, *key), n in delta.items():
        if n:
            for width in WIDTHS:
                out[(width, minute - minute % width, *key)] += n
    return sorted((*k, n) for k, n in out.items() if n)


def apply(delta: Delta) -> None:
    """Add the delta to the aggregate tables (in the caller's transaction)."""
    if delta.rollup:
        # a coarser bucket holding one minute of the delta (the usual batch: made within a minute) shares that
        # minute's Rollup, so it is encoded once for its rows (one per width)
        parts: defaultdict[tuple, list[Rollup]] = defaultdict(list)
        for (minute, *key), r in delta.rollup.items():
            for width in WIDTHS:
                parts[(width, minute - minute % width, *key)].append(r)
        _upsert_rollup(sorted((key, rs[0] if len(rs) == 1 else _total(rs)) for key, rs in parts.items()))
    rows = _levels(delta.feedback)
    if rows:
        _upsert("stats_feedback", rows)


def _total(parts: Iterable[Rollup]) -> Rollup:
    out = Rollup()
    for r in parts:
        out.merge(r)
    return out


_ROLLUP_COLUMNS = "width, bucket_start, model, model_version, transport, n, labels, hist"
_ROLLUP_CONFLICT = "ON CONFLICT (width, bucket_start, model, model_version, transport) DO UPDATE SET "
# PostgreSQL adds the counts in the statement itself (concurrent writers of one row take turns on its lock)
_PG_MERGE = (
    "n = stats_rollup.n + EXCLUDED.n, "
    "labels = stats_rollup.labels || COALESCE((SELECT jsonb_object_agg(k, COALESCE((stats_rollup.labels ->> k)"
    "::bigint, 0) + v::bigint) FROM jsonb_each_text(EXCLUDED.labels) AS e(k, v)), '{}'), "
    "hist = ARRAY(SELECT COALESCE(a, 0) + COALESCE(b, 0) "
    "FROM unnest(stats_rollup.hist, EXCLUDED.hist) WITH ORDINALITY AS u(a, b, i) ORDER BY i)")


def _upsert_rollup(items: list[tuple[tuple, Rollup]]) -> None:
    cursor = db.cursor()
    if is_postgres():
        row = "(%s, %s, %s, %s, %s, %s, %s::jsonb, %s::bigint[])"
        encoded: dict[int, tuple[int, str, str]] = {}  # by id: a Rollup shared by rows is encoded once
        for start in range(0, len(items), 500):
            part = items[start:start + 500]
            params: list = []
            for key, r in part:
                if id(r) not in encoded:
                    array = ",".join(map(str, histogram.hist_array(r.bins)))
                    encoded[id(r)] = r.n, json.dumps(r.labels), "{" + array + "}"
                params.extend((*key, *encoded[id(r)]))
            cursor.execute(f"INSERT INTO stats_rollup ({_ROLLUP_COLUMNS}) VALUES {', '.join([row] * len(part))} "
                           f"{_ROLLUP_CONFLICT}{_PG_MERGE}", params)
        return
    # SQLite: the inserting transaction holds the database's write lock, so read, add and write back
    for start in range(0, len(items), 500):
        chunk: dict[tuple, Rollup] = dict(items[start:start + 500])
        marks = ", ".join(["(?, ?, ?, ?, ?)"] * len(chunk))
        cursor.execute(f"SELECT {_ROLLUP_COLUMNS} FROM stats_rollup WHERE (width, bucket_start, model, "
                       f"model_version, transport) IN (VALUES {marks})", [v for key in chunk for v in key])
        for *key, n, labels, hist in cursor.fetchall():
            stored = Rollup(n, Counter(json.loads(labels)), Counter(histogram.hist_bins(json.loads(hist))))
            chunk[tuple(key)] = _total((chunk[tuple(key)], stored))  # a new Rollup: the delta's may be shared
        cursor.executemany(
            f"INSERT INTO stats_rollup ({_ROLLUP_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) {_ROLLUP_CONFLICT}"
            "n = excluded.n, labels = excluded.labels, hist = excluded.hist",
            [(*key, r.n, json.dumps(r.labels), json.dumps(histogram.hist_array(r.bins)))
             for key, r in sorted(chunk.items())])


def _upsert(table: str, rows: list[tuple]) -> None:
    key = ("width", "bucket_start", *TABLES[table])
    columns = ", ".join((*key, "n"))
    conflict = f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET n = {table}.n + EXCLUDED.n"
    mark = "%s" if is_postgres() else "?"
    row = f"({', '.join([mark] * (len(key) + 1))})"
    cursor = db.cursor()
    for start in range(0, len(rows), 1000):  # one statement per 1000 rows (SQLite allows 32766 parameters)
        chunk = rows[start:start + 1000]
        cursor.execute(f"INSERT INTO {table} ({columns}) VALUES {', '.join([row] * len(chunk))} {conflict}",
                       [v for r in chunk for v in r])


# -- feedback ------------------------------------------------------------------------------------------------------
def record_feedback(labels: dict[str, str]) -> set[str]:
    """Move the confusion counts for feedback about to be stored ({prediction_id: true label}); call it in the
    transaction that then writes the feedback rows. Ids with no stored prediction are skipped (the caller refuses
    or reports them). The predictions are locked first, so two writers labelling one prediction take turns and
    each sees the label the other stored. Returns the ids found (locked until the transaction ends)."""
    ids = sorted(labels)
    if not ids:
        return set()
    cursor = db.cursor()
    predictions: dict[str, tuple] = {}
    old: dict[str, str] = {}
    postgres = is_postgres()
    keyed = postgres and partitions.keyed()
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        if keyed:  # partitioned: through the ids' claims, each row locked in its partition (m0012)
            predictions.update((row[0], row[1:]) for row in partitions.by_id(
                db.obj, "p.prediction_id, model, model_version, label, p.created_at", chunk, lock=True))
            continue
        if postgres:
            cursor.execute("SELECT prediction_id, model, model_version, label, created_at FROM predictions "
                           "WHERE prediction_id IN %s ORDER BY prediction_id FOR NO KEY UPDATE", (tuple(chunk),))
        else:  # the caller's transaction holds SQLite's write lock (repo begins it IMMEDIATE)
            marks = ", ".join("?" * len(chunk))
            cursor.execute("SELECT prediction_id, model, model_version, label, created_at FROM predictions "
                           f"WHERE prediction_id IN ({marks})", chunk)
        predictions.update((row[0], row[1:]) for row in cursor.fetchall())
    found = sorted(predictions)
    for start in range(0, len(found), 500):
        chunk = found[start:start + 500]
        marks = ", ".join(["%s" if postgres else "?"] * len(chunk))
        cursor.execute(f"SELECT prediction_id, label FROM feedback WHERE prediction_id IN ({marks})", chunk)
        old.update(cursor.fetchall())
    delta = Delta()
    for pid in found:
        model, version, predicted, created = predictions[pid]
        new, before = labels[pid], old.get(pid)
        if new == before:
            continue
        minute = minute_of(_epoch(created))
        if before is not None:
            delta.feedback[(minute, model, version, predicted, before)] -= 1
        delta.feedback[(minute, model, version, predicted, new)] += 1
    apply(delta)
    return set(found)


# -- windows -------------------------------------------------------------------------------------------------------
def window(start: float | None, end: float) -> tuple[int | None, int]:
    """The window the aggregates answer for [start, end): start rounded down and end rounded up to a minute."""
    return (None if start is None else math.floor(start / MINUTE) * MINUTE), math.ceil(end / MINUTE) * MINUTE


def cover(start: int, end: int, widths: Sequence[int] = WIDTHS) -> list[tuple[int, int, int]]:
    """(width, lo, hi) ranges of bucket starts that cover [start, end) exactly, both multiples of widths[0]: the
    widest buckets in the middle, narrower ones at the edges."""
    if start >= end:
        return []
    width, *finer = sorted(widths, reverse=True)
    lo, hi = -(-start // width) * width, end // width * width
    if not finer:
        return [(width, start, end)]
    if lo >= hi:
        return cover(start, end, finer)
    return [*cover(start, lo, finer), (width, lo, hi), *cover(hi, end, finer)]


def _ranges(ranges: list[tuple[int, int, int]], model: str, version: str) -> tuple[str, list]:
    mark = "%s" if is_postgres() else "?"
    parts = [f"(width = {mark} AND bucket_start >= {mark} AND bucket_start < {mark})" for _ in ranges]
    params: list = [v for r in ranges for v in r]
    where = f"({' OR '.join(parts)})" if parts else "(1 = 0)"  # an empty window
    if model:
        where += f" AND model = {mark}"
        params.append(model)
    if version:
        where += f" AND model_version = {mark}"
        params.append(version)
    return where, params


def _query(sql: str, params: list) -> list[tuple]:
    cursor = db.cursor()
    cursor.execute(sql, params)
    return cursor.fetchall()


def first_minute(model: str = "") -> int | None:
    """The start of the oldest minute with predictions (of the model), None when there are none."""
    mark = "%s" if is_postgres() else "?"
    where, params = f"width = {mark}", list[object]([MINUTE])
    if model:
        where += f" AND model = {mark}"
        params.append(model)
    [(value,)] = _query(f"SELECT MIN(bucket_start) FROM stats_rollup WHERE {where}", params)
    return None if value is None else int(value)


def _read(ranges: list[tuple[int, int, int]], model: str, version: str = "") -> list[tuple]:
    """The stats_rollup rows in the ranges (of the model, and version, when given) as stored, in one query:
    (bucket_start, model, model_version, transport, n, labels, hist, length), the labels as JSON text, the
    histogram as its text and its number of elements. The caller adds them up in numpy (histogram.add_up):
    unnesting the histograms in SQL and grouping their elements cost ~100 ms for a day of 5-minute buckets at
    1 M rows, and more where each row occupies more bins."""
    where, params = _ranges(ranges, model, version)
    if is_postgres():
        columns = "labels::text, hist::text, cardinality(hist)"
    else:  # both stored as JSON text
        columns = "labels, hist, json_array_length(hist)"
    return _query(f"SELECT bucket_start, model, model_version, transport, n, {columns} FROM stats_rollup "
                  f"WHERE {where}", params)


def _labels(rows: list[tuple]) -> list[dict[str, int]]:
    """Each row's counts per label (their JSON parsed in one call)."""
    return json.loads("[" + ",".join(r[5] for r in rows) + "]")


def _three(values: Sequence[float]) -> tuple[float, float, float]:
    p50, p95, p99 = values
    return p50, p95, p99


@dataclass(frozen=True)
class Totals:
    """Aggregates over a window."""

    total: int
    by_label: dict[str, int]
    by_version: dict[str, int]
    by_transport: dict[str, int]
    latency_ms: tuple[float, float, float]


def totals(start: int | None, end: int, model: str = "", version: str = "") -> Totals:
    """Counts and latency percentiles over [start, end) (minute multiples; start None: the beginning), of the
    model and version when given."""
    rows = _read(cover(start or 0, end), model, version)
    by_label: Counter = Counter()
    by_version: Counter = Counter()
    by_transport: Counter = Counter()
    for (_, m, v, transport, n, *_), labels in zip(rows, _labels(rows), strict=True):
        by_version[f"{m}@{v}"] += int(n)
        by_transport[transport] += int(n)
        for label, k in labels.items():
            by_label[label] += k
    first, summed = histogram.add_up([r[6] for r in rows], [r[7] for r in rows], np.zeros(len(rows), np.int64), 1)
    return Totals(sum(by_version.values()), {k: n for k, n in by_label.items() if n},
                  {k: n for k, n in by_version.items() if n}, {k: n for k, n in by_transport.items() if n},
                  _three(histogram.percentiles_of(summed, first)[0].tolist()))


@dataclass(frozen=True)
class Bucket:
    """Aggregates over one bucket of a series."""

    start: int
    total: int = 0
    by_label: dict[str, int] = field(default_factory=dict)
    by_transport: dict[str, int] = field(default_factory=dict)
    latency_ms: tuple[float, float, float] = (0.0, 0.0, 0.0)
    latency_by_transport: dict[str, tuple[float, float, float]] = field(default_factory=dict)


def series(starts: Sequence[int], width: int, start: int | None, end: int, model: str = "") -> list[Bucket]:
    """One Bucket per start (multiples of width, itself a multiple of a minute), counting [start, end) only. The
    rows are added up per (bucket, transport) cell: counts and histograms by numpy, the percentiles of every cell
    and of every bucket (its transports merged) computed at once (histogram.percentiles_of)."""
    if not starts:
        return []
    lo, hi = max(starts[0], start or 0), min(starts[-1] + width, end)
    rows = _read(cover(lo, hi, [w for w in WIDTHS if width % w == 0]), model)
    names = sorted({r[3] for r in rows})  # the transports
    column = {name: i for i, name in enumerate(names)}
    buckets, size = len(starts), len(names)
    cells = [(int(r[0]) - starts[0]) // width * size + column[r[3]] for r in rows]  # bucket × transport
    counts = np.bincount(cells, weights=[int(r[4]) for r in rows], minlength=buckets * size).astype(np.int64)
    labels: list[Counter] = [Counter() for _ in starts]
    for cell, found in zip(cells, _labels(rows), strict=True):
        into = labels[cell // size]
        for label, n in found.items():  # not Counter.update: its Mapping check costs more than the adding
            into[label] += n
    first, flat = histogram.add_up([r[6] for r in rows], [r[7] for r in rows], cells, buckets * size)  # by cell
    histograms = flat.reshape(buckets, size, flat.shape[1])
    merged = histogram.percentiles_of(histograms.sum(axis=1), first).tolist()
    per_cell = histogram.percentiles_of(flat, first).reshape(buckets, size, 3).tolist()
    occupied = (histograms.sum(axis=2) > 0).tolist()
    per_bucket = counts.reshape(buckets, size).tolist()
    return [Bucket(start=s, total=sum(per_bucket[i]), by_label={k: n for k, n in labels[i].items() if n},
                   by_transport={name: n for name, n in zip(names, per_bucket[i], strict=True) if n},
                   latency_ms=_three(merged[i]),
                   latency_by_transport={name: _three(per_cell[i][j]) for j, name in enumerate(names)
                                         if occupied[i][j]})
            for i, s in enumerate(starts)]


def version_quality(start: int | None, end: int | None, model: str = "", version: str = "") -> list[Quality]:
    """Accuracy, macro precision and recall per model version over the predictions made in [start, end) that have
    feedback (end None: all of them)."""
    if start is None and end is None:
        ranges = [(DAY, -(2**62), 2**62)]  # every prediction counts in one day bucket
    else:
        ranges = cover(start or 0, end if end is not None else 2**62 // DAY * DAY)
    where, params = _ranges(ranges, model, version)
    confusion: dict[tuple[str, str], dict[tuple[str, str], int]] = defaultdict(dict)
    for m, v, predicted, actual, n in _query(
            f"SELECT model, model_version, predicted, actual, SUM(n) FROM stats_feedback WHERE {where} "
            "GROUP BY model, model_version, predicted, actual", params):
        if int(n):
            confusion[(m, v)][(predicted, actual)] = int(n)
    return [quality(m, v, c) for (m, v), c in sorted(confusion.items())]


# -- backfill ------------------------------------------------------------------------------------------------------
def backfill(chunk_seconds: int = DAY) -> int:
    """Rebuild every aggregate from the stored rows (the migration that adds them runs this); returns the rows
    read. PostgreSQL: in SQL (_backfill_postgres). SQLite: in Python, one time chunk at a time (the created_at
    index), so memory stays bounded."""
    for table in TABLES:
        db.execute_sql(f"DELETE FROM {table}")
    if is_postgres():
        return _backfill_postgres()
    cursor = db.cursor()
    cursor.execute("SELECT MIN(created_at), MAX(created_at) FROM predictions")
    first, last = cursor.fetchone()
    if first is None:
        return 0
    lo = math.floor(_epoch(first) / chunk_seconds) * chunk_seconds
    hi = _epoch(last)
    mark = "%s" if is_postgres() else "?"
    read = 0
    while lo <= hi:
        bounds: list = [to_datetime(lo), to_datetime(lo + chunk_seconds)]
        if not is_postgres():
            bounds = [str(b) for b in bounds]
        delta = Delta()
        cursor.execute("SELECT model, model_version, transport, label, latency_ms, created_at FROM predictions "
                       f"WHERE created_at >= {mark} AND created_at < {mark}", bounds)
        columns = list(zip(*cursor.fetchall()))
        if columns:
            models, versions, transports, labels, latencies, created = columns
            delta.add_columns([_epoch(c) for c in created], models, versions, transports, labels, latencies)
            read += len(created)
        cursor.execute("SELECT p.model, p.model_version, p.label, f.label, p.created_at FROM predictions p "
                       "JOIN feedback f ON f.prediction_id = p.prediction_id "
                       f"WHERE p.created_at >= {mark} AND p.created_at < {mark}", bounds)
        for model, version, predicted, actual, created in cursor.fetchall():
            delta.feedback[(minute_of(_epoch(created)), model, version, predicted, actual)] += 1
        apply(delta)
        lo += chunk_seconds
    return read



def _backfill_postgres() -> int:
    """The backfill in one pass of SQL: the rows grouped per minute first, then per bucket of each width. The
    minute is minutes_of's (created_at holds UTC microseconds; EXTRACT gives an exact numeric) and the bin
    histogram.latency_bins' (PostgreSQL orders NaN above every number, so it is tested first); ln may differ
    from numpy's log in the last bit, which can move a latency lying exactly on a bin's edge to the next bin
    (within the histogram's 5% either way)."""
    widths = ", ".join(f"({w})" for w in WIDTHS)
    key = "model, model_version, transport"
    low, high = histogram.BIN_MIN, histogram.BIN_MAX
    index = (f"CASE WHEN latency_ms = 'NaN' THEN {high - low + 1} WHEN latency_ms > 0 THEN "
             f"LEAST({high}, GREATEST({low}, ceil(ln(latency_ms) / {histogram.LOG_GAMMA!r})))::int - {low} + 1 "
             "ELSE 0 END")
    minute = "(floor(EXTRACT(EPOCH FROM {}) / 60) * 60)::bigint"
    bucket = "m.minute - ((m.minute % w.width) + w.width) % w.width"  # floored to the width (before 1970 too)
    cursor = db.cursor()
    cursor.execute(f"""
        WITH m AS (SELECT {minute.format("created_at")} AS minute, {key}, label, {index} AS idx, COUNT(*) AS n
                   FROM predictions GROUP BY 1, 2, 3, 4, 5, 6),
        c AS (SELECT w.width, {bucket} AS bucket_start, {key}, label, idx, SUM(n)::bigint AS n
              FROM m CROSS JOIN (VALUES {widths}) AS w(width) GROUP BY 1, 2, 3, 4, 5, 6, 7),
        l AS (SELECT width, bucket_start, {key}, label, SUM(n)::bigint AS n FROM c GROUP BY 1, 2, 3, 4, 5, 6),
        k AS (SELECT width, bucket_start, {key}, SUM(n)::bigint AS n, jsonb_object_agg(label, n) AS labels
              FROM l GROUP BY 1, 2, 3, 4, 5),
        h AS (SELECT width, bucket_start, {key}, idx, SUM(n)::bigint AS n FROM c GROUP BY 1, 2, 3, 4, 5, 6),
        g AS (SELECT *, lag(idx, 1, -1) OVER (PARTITION BY width, bucket_start, {key} ORDER BY idx) AS prev
              FROM h),
        a AS (SELECT width, bucket_start, {key},  -- the array literal, with the zeros between occupied bins
                     ('{{' || string_agg(repeat('0,', idx - prev - 1) || n, ',' ORDER BY idx) || '}}')::bigint[]
                     AS hist
              FROM g GROUP BY 1, 2, 3, 4, 5)
        INSERT INTO stats_rollup ({_ROLLUP_COLUMNS})
        SELECT k.width, k.bucket_start, k.model, k.model_version, k.transport, k.n, k.labels, a.hist
        FROM k JOIN a USING (width, bucket_start, {key})""")
    cursor.execute(f"""
        WITH m AS (SELECT {minute.format("p.created_at")} AS minute, p.model, p.model_version,
                          p.label AS predicted, f.label AS actual, COUNT(*) AS n
                   FROM predictions p JOIN feedback f ON f.prediction_id = p.prediction_id GROUP BY 1, 2, 3, 4, 5)
        INSERT INTO stats_feedback (width, bucket_start, {", ".join(FEEDBACK_KEY)}, n)
        SELECT w.width, {bucket}, model, model_version, predicted, actual, SUM(n)::bigint
        FROM m CROSS JOIN (VALUES {widths}) AS w(width) GROUP BY 1, 2, 3, 4, 5, 6""")
    cursor.execute("SELECT COUNT(*) FROM predictions")
    return int(cursor.fetchone()[0])
