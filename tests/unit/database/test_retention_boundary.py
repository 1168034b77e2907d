"""Retention's boundary and the daily partitions' names (pure: no database)."""
from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from database import partitions, retention
from database.settings import DatabaseSettings
from predmesh.env import ConfigError


def naive(year: int, month: int, day: int) -> datetime:
    """A UTC midnight as the columns hold it (naive)."""
    return datetime(year, month, day, tzinfo=UTC).replace(tzinfo=None)


def test_the_boundary_is_the_utc_midnight_that_many_days_back():
    now = datetime(2026, 12, 7, 0, 30, tzinfo=UTC).timestamp()
    assert retention.boundary_of(3, now) == naive(2026, 12, 4)
    assert retention.boundary_of(0, now) == naive(2026, 12, 7)
    late = datetime(2026, 12, 7, 23, 59, 59, tzinfo=UTC).timestamp()
    assert retention.boundary_of(1, late) == naive(2026, 12, 6)


def test_a_boundary_before_year_one_keeps_everything():
    """PREDMESH_RETENTION_DAYS=99999999 (settings accept any whole number >= 0) failed `predmesh retention` with an
    OverflowError traceback, and the server's hourly maintenance with a warning, instead of keeping every row."""
    now = datetime(2026, 12, 7, 0, 30, tzinfo=UTC).timestamp()
    for days in (99_999_999, 10**12):
        assert retention.boundary_of(days, now) == retention.EARLIEST
    assert retention.boundary_of(739_000, now) == naive(3, 8, 15)  # the far side of the range still counts back
    assert retention.RetentionReport(boundary=retention.EARLIEST).summary().startswith(
        "retention: predictions before 0001-01-01 00:00 UTC removed: 0 rows")


def test_partition_names_round_trip_and_other_tables_are_not_days():
    assert partitions.partition_name(date(2026, 1, 2)) == "predictions_p20260102"
    assert partitions.partition_day("predictions_p20260102") == date(2026, 1, 2)
    for other in ("predictions_default", "predictions", "prediction_keys", "predictions_p2026010"):
        assert partitions.partition_day(other) is None


def test_retention_days_setting():
    assert DatabaseSettings.from_env({}).retention_days == 0
    assert DatabaseSettings.from_env({"PREDMESH_RETENTION_DAYS": "30"}).retention_days == 30
    with pytest.raises(ConfigError, match="PREDMESH_RETENTION_DAYS"):
        DatabaseSettings.from_env({"PREDMESH_RETENTION_DAYS": "-1"})


def test_the_summary_names_what_was_removed():
    report = retention.RetentionReport(boundary=naive(2026, 12, 4), dropped=["predictions_p20261201"], rows=12,
                                       feedback=3, keys=12)
    assert report.summary() == ("retention: predictions before 2026-12-04 00:00 UTC removed: 12 rows; dropped "
                                "partitions predictions_p20261201; 3 feedback rows, 12 idempotency keys")
    assert "off" in retention.RetentionReport().summary()
