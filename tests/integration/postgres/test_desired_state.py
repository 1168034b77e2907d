"""The desired-state table on PostgreSQL: changes recorded with their history; rollback walks back through it."""
from __future__ import annotations

import pytest

from database import desired
from database.connect import open_database, session
from database.migrate import migrate
from tests.support.pg import TempSchema


@pytest.fixture
def database():
    with TempSchema() as schema:
        db = open_database(schema.url)
        with session():
            migrate(db)
        yield db
        db.close()


def test_rollback_goes_back_through_the_history_not_to_and_fro(database):
    with session():
        assert desired.all_desired() == {}
        with pytest.raises(desired.NoPreviousVersion):
            desired.rollback_target("iris")
        # the first change records what served before it (no row yet): it can be rolled back
        desired.set_desired("iris", "2", "rollout", 100.0, serving="1", by="ops", reason="r1")
        assert desired.rollback_target("iris") == "1"
        desired.set_desired("iris", "3", "rollout", 101.0)
        assert desired.rollback_target("iris") == "2"
        desired.set_desired("iris", "2", "rollback", 102.0)
        assert desired.rollback_target("iris") == "1"  # a second rollback goes further back, not to 3
        desired.set_desired("iris", "1", "rollback", 103.0)
        with pytest.raises(desired.NoPreviousVersion):
            desired.rollback_target("iris")
        desired.set_desired("iris", "3", "pin", 104.0, pinned=True, by="ops", reason="hold")
        assert desired.rollback_target("iris") == "1"
        state = desired.get_desired("iris")
        assert state is not None
        assert (state.version, state.pinned, state.updated_by, state.reason, state.updated_at) == (
            "3", True, "ops", "hold", 104.0)
        assert [(c["action"], c["version"], c["previous_version"]) for c in desired.history("iris")] == [
            ("pin", "3", "1"), ("rollback", "1", "2"), ("rollback", "2", "3"), ("rollout", "3", "2"),
            ("rollout", "2", "1")]
        assert set(desired.all_desired()) == {"iris"}


def test_an_unknown_action_is_refused(database):
    with session(), pytest.raises(ValueError):
        desired.set_desired("iris", "2", "deploy", 1.0)  # promote is a canary's decision now
