"""`predmesh batch score --wait-stored`: wait until every row the run scored is queryable in the server's
database, through the public API only.

The server answers a row once its record is durable (in its spool, with PREDMESH_PERSISTENCE=durable); its writer
stores it in the database shortly after. The run's rows have request ids `batch-<hash>-<row number>`. The check
first waits until the run's last row (its highest row number, answered last) is queryable: one ListPredictions by
that request id per PROBE_S, an index probe, while the writers still store the run's tail (a count over a million
rows costs the database about a second, which polling took from those writers). It then asks the server how many
stored predictions of the model carry this run's prefix (AnalyticsService.CountPredictions, one indexed count,
however many rows), again until that reaches the number of rows scored or the wait ends. Against a server without
CountPredictions (UNIMPLEMENTED) it lists this model's batch predictions created since the run began
(ListPredictions, newest first, 1000 a page) and marks this run's rows (one bit per row number), again until every
row is seen; that costs a full listing per pass (~5,000 rows/s on a busy 2-core
machine). A rerun stores nothing new (the rows were stored when the file was first scored): the window then starts
when the first run of this file began (its run record: ListBatchRuns)."""
from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import grpc

from batch.scoring import Clients
from predmesh import PredmeshError

SKEW = timedelta(minutes=2)  # the server's clock against ours, and the time between scoring and recording
PAGE = 1000
PROBE_S = 0.1  # between probes for the run's last row (each is one index lookup)


class Expected:
    """The row numbers a run scored, as a bit array; seen() marks the ones found stored."""

    def __init__(self, prefix: str, numbers: Sequence[int] = ()):
        self.prefix = prefix
        self.missing = bytearray()
        self.left = 0
        self.total = 0
        self.last = -1  # the highest row number added (-1: none)
        self.add(numbers)

    def add(self, numbers: Sequence[int]) -> None:
        if not len(numbers):
            return
        top = max(numbers)
        self.last = max(self.last, top)
        if top >= len(self.missing):
            self.missing.extend(bytes(top + 1 - len(self.missing)))
        for n in numbers:
            if not self.missing[n]:
                self.missing[n] = 1
                self.left += 1
                self.total += 1

    def seen(self, request_id: str) -> None:
        if not request_id.startswith(self.prefix):
            return
        tail = request_id[len(self.prefix):]
        if tail.isdigit():
            n = int(tail)
            if n < len(self.missing) and self.missing[n]:
                self.missing[n] = 0
                self.left -= 1


def window_start(clients: Clients, model: str, run_key: str, began: datetime) -> datetime:
    """Where this run's rows can be in time: its start, or the start of the first run of the same file."""
    start = began
    try:
        for run in clients.first.list_batch_runs(model=model, kind="score", page_size=1000):
            if run.run_key == run_key and run.started_at is not None:
                start = min(start, run.started_at - timedelta(seconds=run.duration_seconds))
    except PredmeshError:  # no record: this run's own window
        pass
    return start - SKEW


def wait_stored(clients: Clients, model: str, expected: Expected, since: datetime, wait_s: float,
                poll_s: float = 0.5) -> tuple[bool, float]:
    """Wait until every expected row is stored (at most wait_s seconds); returns (all stored, seconds waited).
    expected.left is then the number of rows not stored yet."""
    started = time.monotonic()
    try:
        _last_row(clients, model, expected, started + wait_s)
        return _counted(clients, model, expected, since, started + wait_s, poll_s), time.monotonic() - started
    except PredmeshError as exc:
        if exc.code != grpc.StatusCode.UNIMPLEMENTED:
            raise
    return _listed(clients, model, expected, since, started + wait_s, poll_s), time.monotonic() - started


def _last_row(clients: Clients, model: str, expected: Expected, deadline: float) -> None:
    """Wait (until deadline) until the run's last row is stored, probing it by request id; the count decides after
    (rows of other chunks may still come: the server's processes store on their own)."""
    if expected.last < 0:
        return
    request_id = expected.prefix + str(expected.last)
    while time.monotonic() + PROBE_S <= deadline:
        try:
            page = clients.first.list_predictions(model=model, request_id=request_id, page_size=1)
            if next(iter(page), None) is not None:
                return
        except PredmeshError as exc:
            if exc.code != grpc.StatusCode.UNIMPLEMENTED:
                raise
            return
        time.sleep(PROBE_S)


def _counted(clients: Clients, model: str, expected: Expected, since: datetime, deadline: float,
             poll_s: float) -> bool:
    """CountPredictions of the run's prefix until it reaches the rows scored. Request ids are unique, so the count
    is the number of this file's row numbers stored; the polls take at most about a third of the time (a count
    over a million rows is not free)."""
    while True:
        t0 = time.monotonic()
        stored = clients.first.count_predictions(model, expected.prefix, start_time=since)
        if stored >= expected.total:
            expected.missing = bytearray()
            expected.left = 0
            return True
        expected.left = expected.total - stored
        pause = max(poll_s, 2 * (time.monotonic() - t0))
        if time.monotonic() + pause > deadline:
            return False
        time.sleep(pause)


def _listed(clients: Clients, model: str, expected: Expected, since: datetime, deadline: float,
            poll_s: float) -> bool:
    """ListPredictions of the window until every expected row is seen. Each pass lists the window again: rows are
    stored late with their scoring time."""
    while expected.left:
        token = ""
        while expected.left:
            page = clients.first.list_predictions(model=model, transport="batch", start_time=since,
                                                  page_size=PAGE, page_token=token)
            for p in page:
                expected.seen(p.prediction.request_id)
            token = page.next_page_token
            if not token or time.monotonic() > deadline:
                break
        if not expected.left or time.monotonic() + poll_s > deadline:
            break
        time.sleep(poll_s)
    return not expected.left


def now() -> datetime:
    return datetime.now(UTC)
