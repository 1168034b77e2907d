"""PostgreSQL: the predictions table is range-partitioned by created_at (migration m0008), one partition per UTC
day (predictions_pYYYYMMDD) plus a DEFAULT partition (predictions_default) that takes any row outside the created
ones, so an insert never fails for want of a partition. Partitions are created ahead of time (ensure_partitions:
at server start, by the server's periodic maintenance and by `predmesh retention`).

What the layout keeps (docs/persistence.md "Partitions and retention"):
- prediction_id is unique across partitions through prediction_keys (prediction_id PRIMARY KEY, created_at; a
  BRIN index on created_at for retention, m0010), filled by a statement-level trigger on predictions from the
  inserted rows: an id held already raises unique_violation (23505) as the old UNIQUE (request_id) did, so COPY
  falls back to repo's staging insert, which skips rows whose id is held. predictions itself has no primary key
  (m0012: its random uuid keys cost a btree descent per row, the claim another);
- request_id (the idempotency key) is unique with it: prediction_id is database.records.prediction_id_of(request_id),
  so a request_id is looked up as its prediction_id (and, for rows stored before ordered ids, its uuid5 id: m0013,
  legacy_until);
- a prediction_id is looked up in prediction_keys first, whose created_at names the row's partition: the probe of
  predictions is then pruned to that partition and served by predictions_page (created_at, prediction_id);
- feedback has no foreign key to a partitioned table (it would need the partition key and would stop a partition
  from being dropped): the write path stores feedback only for predictions it found and locked, and retention
  deletes the feedback of the predictions it drops.

SQLite keeps its plain table: nothing here applies to it (retention there deletes rows, see database/retention).
"""
from __future__ import annotations

import bisect
import itertools
import logging
import re
import time
import weakref
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

import peewee
from peewee import Database

from database.connect import advisory_lock
from database.records import ordered, prediction_id_of, uuid5_id

log = logging.getLogger(__name__)

TABLE = "predictions"
DEFAULT = "predictions_default"
KEYS = "prediction_keys"
LEGACY = "prediction_id_legacy"  # m0013: until when uuid5 ids of ordered request ids were stored (none: never)
LEGACY_RECHECK_SECONDS = 600.0  # legacy_until reads it again after this long
KEYS_INDEX = f"{KEYS}_created_brin"  # BRIN on created_at (m0010): retention finds the keys of removed days by it
PREFIX = "predictions_p"  # + YYYYMMDD: the partition of that UTC day
DAYS_AHEAD = 7  # partitions kept created ahead of today: a week without maintenance still inserts into its day
DAYS_BEHIND = 1  # and behind today (a record answered just before midnight, stored after)
MAINTENANCE_LOCK = 0x7072_6571  # pg advisory lock (transaction): one maintainer per schema (next to migrate's)
LOCK_TIMEOUT_MS = 2000  # DDL waits at most this for its lock (then gives up and tries again): a DDL waiting behind
LOCK_ATTEMPTS = 5  # a long query would otherwise queue every insert behind it

CLAIM_TRIGGER = f"{KEYS}_claim"  # m0008's statement trigger on predictions (dropped by m0014: the writer claims)


def partition_name(day: date) -> str:
    return f"{PREFIX}{day:%Y%m%d}"


def partition_day(name: str) -> date | None:
    """The day of a daily partition's name (None for any other table)."""
    match = re.fullmatch(rf"{PREFIX}(\d{{8}})", name)
    return date.fromisoformat(f"{match.group(1)[:4]}-{match.group(1)[4:6]}-{match.group(1)[6:]}") if match else None


def today(now: float | None = None) -> date:
    return (datetime.now(UTC) if now is None else datetime.fromtimestamp(now, UTC)).date()


def is_partitioned(database: Database) -> bool:
    """True when predictions is a partitioned table (PostgreSQL after m0008)."""
    from database.connect import is_postgres
    if not is_postgres(database):
        return False
    row = database.execute_sql("SELECT relkind FROM pg_class WHERE oid = to_regclass(%s)", (TABLE,)).fetchone()
    return bool(row) and row[0] == "p"


def partitions(database: Database) -> dict[str, tuple[datetime | None, datetime | None]]:
    """The partitions of predictions by name: (lower, upper) bounds, (None, None) for the DEFAULT partition."""
    rows = database.execute_sql(
        "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = to_regclass(%s)", (TABLE,)).fetchall()
    out: dict[str, tuple[datetime | None, datetime | None]] = {}
    for name, bound in rows:
        found = re.findall(r"'([^']+)'", bound)
        out[name] = ((datetime.fromisoformat(found[0]), datetime.fromisoformat(found[1])) if len(found) == 2
                     else (None, None))
    return out


BOUNDS_MAX_AGE_S = 60.0  # daily_bounds is read from the catalog again after this
_BOUNDS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def daily_bounds(database: Database, max_age_s: float = BOUNDS_MAX_AGE_S) -> list[tuple[datetime, datetime]]:
    """The (lower, upper) bounds of the daily partitions, oldest first (the DEFAULT partition left out), as read
    from the catalog at most max_age_s ago (per database: 0.3-1.3 ms a read at 40 partitions). repo's paging stays
    exact with an older list: a partition created or dropped since only makes its statements prune less."""
    now = time.monotonic()
    cached = _BOUNDS.get(database)
    if cached is None or now - cached[0] > max_age_s:
        bounds = sorted((lower, upper) for lower, upper in partitions(database).values()
                        if lower is not None and upper is not None)
        cached = _BOUNDS[database] = (now, bounds)
    return cached[1]


def page_spans(bounds: list[tuple[datetime, datetime]], top: datetime,
               bottom: datetime | None = None) -> list[tuple[datetime, datetime]]:
    """The time ranges [lower, upper) a page of repo.list_predictions reads one after another, newest first, until
    it is full; bounds are daily_bounds (oldest first), top the newest time a row of the page can have (its token,
    the window's end or now: the first range also covers every partition above it, which holds no row older than
    top and is pruned by the planner or empty), bottom the window's start.

    Each range is covered wholly by adjacent daily partitions, so the planner prunes the DEFAULT partition and can
    read the partitions one after another in order (an ordered Append, which stops in the first partition that
    fills the page) instead of merging all of them (a Merge Append opens every partition at or before the token).
    The ranges grow: the partitions from top's up, then the 2 older ones, 4, 8, ..., so a page that top's
    partition fills plans that one (and the empty ones ahead of today), and a rare filter or the last page needs
    about log2(partitions) statements; a range never spans a missing day (whose rows are in DEFAULT, which
    repo._partitioned_page reads with the ranges of gaps())."""
    first = bisect.bisect_right([lower for lower, _ in bounds], top) - 1
    if first < 0:
        return []  # every partition is newer than top
    groups, end, size = [bounds[first:]], first, 2
    while end > 0 and (bottom is None or bounds[end - 1][1] > bottom):
        groups.append(bounds[max(0, end - size):end])
        end, size = max(0, end - size), size * 2
    spans: list[tuple[datetime, datetime]] = []
    for group in groups:
        kept = [b for b in group if bottom is None or b[1] > bottom]
        runs: list[list[datetime]] = []
        for lower, upper in kept:
            if runs and runs[-1][1] == lower:
                runs[-1][1] = upper
            else:
                runs.append([lower, upper])
        spans += [(lower, upper) for lower, upper in reversed(runs)]
    return spans


def gaps(bounds: list[tuple[datetime, datetime]]) -> list[tuple[datetime | None, datetime | None]]:
    """The time ranges [lower, upper) no daily partition covers (None: unbounded), oldest first: where the rows of
    the DEFAULT partition lie. bounds: daily_bounds."""
    if not bounds:
        return [(None, None)]
    out: list[tuple[datetime | None, datetime | None]] = [(None, bounds[0][0])]
    for (_, upper), (lower, _) in itertools.pairwise(bounds):
        if upper != lower:
            out.append((upper, lower))
    out.append((bounds[-1][1], None))
    return out


def create_partition(database: Database, day: date) -> bool:
    """Create the partition of a UTC day (in the caller's transaction); False when it exists. Rows of that day in
    the DEFAULT partition (stored while it did not exist) are moved into it first."""
    name = partition_name(day)
    if database.execute_sql("SELECT to_regclass(%s)", (name,)).fetchone()[0]:
        return False
    lower, upper = day.isoformat(), (day + timedelta(days=1)).isoformat()
    held = database.execute_sql(f"SELECT EXISTS (SELECT 1 FROM {DEFAULT} WHERE created_at >= %s AND created_at < %s)",
                                (lower, upper)).fetchone()[0]
    if not held:
        database.execute_sql(f"CREATE TABLE {name} PARTITION OF {TABLE} FOR VALUES FROM ('{lower}') TO ('{upper}')")
        return True
    # the DEFAULT partition holds rows of that day: move them into a new table, then attach it (a partition
    # created over them would violate the DEFAULT partition's new bound)
    database.execute_sql(f"LOCK TABLE {DEFAULT} IN ACCESS EXCLUSIVE MODE")
    database.execute_sql(f"CREATE TABLE {name} (LIKE {TABLE} INCLUDING DEFAULTS)")
    moved = database.execute_sql(
        f"WITH moved AS (DELETE FROM {DEFAULT} WHERE created_at >= %s AND created_at < %s RETURNING *) "
        f"INSERT INTO {name} SELECT * FROM moved", (lower, upper)).rowcount
    database.execute_sql(f"ALTER TABLE {TABLE} ATTACH PARTITION {name} FOR VALUES FROM ('{lower}') TO ('{upper}')")
    log.info("partition %s created with %d rows moved from %s", name, moved, DEFAULT)
    return True


def with_lock_timeout(database: Database, what: str, work, attempts: int = LOCK_ATTEMPTS,
                      timeout_ms: int = LOCK_TIMEOUT_MS):
    """Run work() in a transaction whose statements wait at most timeout_ms for a lock, trying again up to
    `attempts` times (a DDL waiting long for its lock would hold every insert queued behind it)."""
    for attempt in range(1, attempts + 1):
        try:
            with database.atomic():
                database.execute_sql(f"SET LOCAL lock_timeout = {int(timeout_ms)}")
                return work()
        except peewee.OperationalError as exc:
            code = getattr(getattr(exc, "orig", None), "pgcode", None)
            if code not in ("55P03", "40P01") or attempt == attempts:  # lock_not_available, deadlock_detected
                raise
            log.info("%s: lock not available (attempt %d of %d), trying again", what, attempt, attempts)
    return None


def ensure_partitions(database: Database, now: float | None = None, ahead: int = DAYS_AHEAD,
                      behind: int = DAYS_BEHIND) -> list[str]:
    """Create the daily partitions from `behind` days before today to `ahead` days after (UTC) that do not exist
    yet; returns their names. A no-op on SQLite or an unpartitioned table. One maintainer at a time."""
    if not is_partitioned(database):
        return []
    first = today(now)
    created: list[str] = []

    def work() -> None:
        advisory_lock(database, "pg_advisory_xact_lock", MAINTENANCE_LOCK)
        created.clear()  # a try that ran out of lock time created nothing (rolled back)
        existing = partitions(database)
        for offset in range(-behind, ahead + 1):
            day = first + timedelta(days=offset)
            if partition_name(day) not in existing and create_partition(database, day):
                created.append(partition_name(day))

    with_lock_timeout(database, "creating partitions", work)
    if created:
        log.info("created partitions %s", ", ".join(created))
    return created


_LAYOUT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_LEGACY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # legacy_until's (when read, what it read)


def _target(database: Database | None) -> Database:
    from database.models import db
    return database or db.obj


def _layout(database: Database | None) -> tuple[bool, bool]:
    """(keyed, claimed by the writer) of a database, cached (a migration that changes the layout calls forget)."""
    target = _target(database)
    found = _LAYOUT.get(target)
    if found is None:
        keyed_ = is_partitioned(target)
        trigger = keyed_ and target.execute_sql(
            "SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(%s) AND tgname = %s", (TABLE, CLAIM_TRIGGER)
        ).fetchone() is not None
        found = _LAYOUT[target] = (keyed_, keyed_ and not trigger)
    return found


def keyed(database: Database | None = None) -> bool:
    """True when prediction ids are claimed in prediction_keys (a partitioned predictions table); cached per
    database (a migration that changes the layout calls forget)."""
    return _layout(database)[0]


def writer_claims(database: Database | None = None, *, locked: bool = False) -> bool:
    """True when the writer claims the ids it stores in prediction_keys itself, in the same transaction (m0014),
    instead of the trigger m0008 made: a statement trigger with a transition table on a partitioned table makes
    PostgreSQL's COPY insert row by row instead of a page of rows at a time.

    locked (the writer, in its transaction): while the cached layout says the trigger claims, take predictions'
    lock (the one every insert takes, held to the end of the transaction) and read the layout again, so m0014
    cannot drop the trigger between this answer and the insert (a process that read the layout before another
    applied m0014 would otherwise store rows unclaimed). Once the writer claims, nothing brings the trigger back."""
    keyed_, writer = _layout(database)
    if locked and keyed_ and not writer:
        target = _target(database)
        target.execute_sql(f"LOCK TABLE ONLY {TABLE} IN ROW EXCLUSIVE MODE")
        _LAYOUT.pop(target, None)
        writer = _layout(target)[1]
    return writer


def keys_copy_sql() -> str:
    """The writer's COPY of its claims (copy_text.claims_text: prediction_id, created_at per row)."""
    return f"COPY {KEYS} (prediction_id, created_at) FROM STDIN"


def _first_of_each(staging: str) -> str:
    """The staged rows, the first of each prediction_id (as the old UNIQUE (request_id) let ON CONFLICT keep it)."""
    return f"SELECT DISTINCT ON (prediction_id) * FROM {staging} ORDER BY prediction_id, ctid"


def claim_and_insert(staging: str, columns: str, returning: str) -> str:
    """SQL for repo's staging insert when the writer claims (m0014): each staged id not held yet is claimed (the
    first row of each, as fresh), and only the rows whose claim this statement made are inserted. ON CONFLICT DO
    NOTHING waits for a concurrent writer claiming the same id and skips it once that one commits, so an id is
    stored once whoever races for it."""
    return (f"WITH s AS ({_first_of_each(staging)}), "
            f"claimed AS (INSERT INTO {KEYS} (prediction_id, created_at) SELECT prediction_id, created_at FROM s "
            f"ON CONFLICT DO NOTHING RETURNING prediction_id) "
            f"INSERT INTO {TABLE} ({columns}) SELECT {columns} FROM s JOIN claimed USING (prediction_id) "
            f"RETURNING {returning}")


def forget(database: Database) -> None:
    """Drop the cached layout of a database (its table was just converted) and what legacy_until read."""
    _LAYOUT.pop(database, None)
    _LEGACY.pop(database, None)


def fresh(staging: str) -> str:
    """SQL for repo (partitioned layout): the rows of a staging table whose prediction_id is not stored yet, the
    first of each (as the old UNIQUE (request_id) let ON CONFLICT DO NOTHING keep it): a row whose id is held is
    skipped here, since its claim in prediction_keys would raise. Every record carries a request_id (a fresh one
    when the client sent none) and its prediction_id is that key's prediction_id_of, so this also skips a record stored
    already whatever its created_at (one stored before ordered ids under its uuid5 id is found by the lookups before
    it: stored_by_key)."""
    return (f"({_first_of_each(staging)}) s "
            f"WHERE NOT EXISTS (SELECT 1 FROM {KEYS} k WHERE k.prediction_id = s.prediction_id)")


def claims(database: Database, prediction_ids: Sequence[str]) -> list[tuple[str, datetime]]:
    """(prediction_id, created_at) of the stored ones among these ids, in their order: one probe each of
    prediction_keys' primary key (LATERAL ... LIMIT 1 keeps it a nested loop of probes; = ANY is planned as a scan
    of the whole table beyond a few ids). A call of new ids, the usual case, ends here. The ids go as one text split
    by newlines (an array parameter of thousands costs far more to quote and parse); an id holding one (a caller's
    garbage: a stored id is a UUID) is left out rather than split into others."""
    ids = [pid for pid in prediction_ids if "\n" not in pid]
    if not ids:
        return []
    return database.execute_sql(
        f"SELECT k.id, pk.created_at FROM unnest(string_to_array(%s, E'\\n')) k(id) CROSS JOIN LATERAL "
        f"(SELECT created_at FROM {KEYS} WHERE prediction_id = k.id LIMIT 1) pk",
        ("\n".join(ids),)).fetchall()


def by_claims(columns: str, found: Sequence[tuple[str, datetime]], lock: bool = False) -> tuple[str, tuple]:
    """SQL (and its parameters) reading `columns` of the rows of these claims ((prediction_id, created_at) pairs,
    as claims returns them; predictions aliased p), in their order; with lock, each row locked FOR NO KEY UPDATE.

    A nested loop of index probes on predictions_page (created_at, prediction_id), one per pair (LATERAL ... LIMIT
    1, pruned to its partition at run time), over the partitions of the pairs' time range (given as constants:
    pruned when planned; a join with prediction_keys would plan every partition on each call)."""
    times = [created for _, created in found]
    locking = " FOR NO KEY UPDATE" if lock else ""
    query = (f"SELECT {columns} FROM unnest(%s::text[], %s::timestamp[]) c(prediction_id, created_at) "
             f"CROSS JOIN LATERAL (SELECT * FROM {TABLE} p WHERE p.created_at = c.created_at AND p.prediction_id = "
             f"c.prediction_id AND p.created_at >= %s AND p.created_at <= %s LIMIT 1{locking}) p")
    return query, ([pid for pid, _ in found], times, min(times), max(times))


def by_id(database: Database, columns: str, prediction_ids: Sequence[str], lock: bool = False) -> list[tuple]:
    """`columns` of the stored predictions among these ids (predictions aliased p; missing ones are absent): their
    claims, then their rows (by_claims)."""
    found = claims(database, prediction_ids)
    if not found:
        return []
    return database.execute_sql(*by_claims(columns, found, lock)).fetchall()


def legacy_until(database: Database) -> datetime | None:
    """While rows stored before ordered ids (m0013) may hold an ordered request id under its uuid5 id: the time
    (naive UTC) before which they were stored; None when none can be (a database made with ordered ids, or retention
    dropped the last key created before then: the record is deleted then, by whichever process sees it first).
    Read again every LEGACY_RECHECK_SECONDS: one row, and then one probe of the keys' BRIN index."""
    now = time.monotonic()
    cached = _LEGACY.get(database)
    if cached is not None and now - cached[0] < LEGACY_RECHECK_SECONDS:
        return cached[1]
    until = None
    if database.execute_sql("SELECT to_regclass(%s)", (LEGACY,)).fetchone()[0] is not None:  # m0013 applied
        until = database.execute_sql(f"SELECT min(until) FROM {LEGACY}").fetchone()[0]
    if until is not None and until < datetime.now(UTC).replace(tzinfo=None) and not database.execute_sql(
            f"SELECT 1 FROM {KEYS} WHERE created_at < %s LIMIT 1", (until,)).fetchone():
        database.execute_sql(f"DELETE FROM {LEGACY} WHERE until <= %s", (until,))
        log.info("no prediction stored before ordered prediction ids is left: request ids are looked up by one id")
        until = None
    _LEGACY[database] = (now, until)
    return until


def legacy_ids(database: Database, request_ids: Sequence[str]) -> dict[str, str]:
    """{uuid5 id: request id} of those of these request ids that may be stored under their uuid5 id (ordered ones,
    while legacy_until says such rows may exist); empty otherwise."""
    if legacy_until(database) is None:
        return {}
    return {uuid5_id(rid): rid for rid in request_ids if ordered(rid)}


def stored_by_key(database: Database, ids: list[str], prediction_ids: Sequence[str] | None = None) -> list[tuple]:
    """repo.answered's rows for these keys: (request_id, request_hash, prediction_id, model,
    model_version, label, probabilities, latency_ms, transport, features when request_hash is NULL). Each key is
    looked up as its prediction_id (prediction_id_of; or prediction_ids, the keys' own, one per key in their order,
    when the caller has them), through prediction_keys (by_id), and while rows stored before ordered ids may hold
    it, as its uuid5 id too (legacy_ids), in the same query."""
    key_of = (dict(zip(prediction_ids, ids)) if prediction_ids is not None
              else {prediction_id_of(rid): rid for rid in ids})
    key_of.update(legacy_ids(database, ids))
    rows = by_id(database, "p.prediction_id, request_hash, model, model_version, label, probabilities, latency_ms, "
                 "transport, CASE WHEN request_hash IS NULL THEN features END", list(key_of))
    return [(key_of[pid], rhash, pid, *rest) for pid, rhash, *rest in rows]


def conflicting(database: Database, staging: str) -> list[str]:
    """repo's staging insert (partitioned layout): the request_ids of staged rows whose key is stored for a request
    with another fingerprint (so not stored now). Only the staged rows whose id is in prediction_keys (a replay's)
    are looked up in predictions; the id's claim names the row's partition."""
    offered = dict(database.execute_sql(
        f"SELECT s.request_id, s.request_hash FROM {staging} s JOIN {KEYS} k ON k.prediction_id = s.prediction_id "
        "WHERE s.request_hash IS NOT NULL").fetchall())
    if not offered:
        return []
    return [rid for rid, rhash, *_ in stored_by_key(database, list(offered))
            if rhash is not None and rhash != offered[rid]]
