"""The Quality tab's batch runs table shows every attempt of a run: a failed attempt and the one that followed are
two rows, each with its number, status, start and end, counts, input and its own message or error."""
from __future__ import annotations

from datetime import UTC, datetime

from predmesh.types import BatchRun
from ui.views import _batch_table

START = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)


def attempt(number: int, status: str, rows: int, message: str, minute: int) -> BatchRun:
    return BatchRun("nightly/iris/2026-11-25", "nightly", "2026-11-25", "iris", "1" if rows else "", rows,
                    2 if rows else 0, None, 3.0, status, message, START.replace(minute=minute),
                    START.replace(minute=minute + 1), number, "/data/day <b>1</b>.csv",
                    START.replace(minute=minute + 1))


def test_both_attempts_are_rows_with_their_own_outcome():
    table = _batch_table([attempt(2, "succeeded", 300, "300 rows scored", 10),
                          attempt(1, "failed", 0, "Score failed: Unavailable *server down*", 0)], True, "iris")
    lines = table.splitlines()
    assert lines[0].startswith("| started (UTC) | ended | run | attempt | status |")
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [(r[3], r[4], r[6], r[7]) for r in rows] == [("2", "succeeded", "300", "2"), ("1", "failed", "0", "0")]
    assert rows[0][0] == "2026-11-25 01:10:00" and rows[0][1] == "2026-11-25 01:11:00"
    assert "server down" in rows[1][-1] and "300 rows scored" in rows[0][-1]
    assert all("<b>" not in line for line in lines)  # the input is outside text: escaped, never markup
    assert all("day" in r[-2] and ".csv" in r[-2] for r in rows)


def test_a_running_attempt_has_no_end():
    running = BatchRun("score/iris/abc", "score", "", "iris", "", 0, 0, None, 0.5, "running", "scoring", START,
                       START, 1, "/data/x.csv", None)
    [row] = _batch_table([running], True, "iris").splitlines()[2:]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1] == "" and cells[3] == "1" and cells[4] == "running" and cells[-2].endswith("csv")
