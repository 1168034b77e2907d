"""The fleet's desired state: which version of each model every replica serves (desired_state, one row per model)
and every change to it (desired_state_history: rollouts, pins, rollbacks, with who and why)."""
from __future__ import annotations

from peewee import AutoField, BooleanField, DateTimeField, DoubleField, Model, TextField


def apply(database) -> None:
    class Base(Model):
        class Meta:
            pass

    class DesiredState(Base):
        model = TextField(primary_key=True)
        version = TextField()
        pinned = BooleanField(default=False)
        candidate = TextField(default="")
        candidate_share = DoubleField(default=0.0)
        updated_at = DateTimeField()
        updated_by = TextField(default="")
        reason = TextField(default="")

        class Meta:
            table_name = "desired_state"

    class DesiredStateChange(Base):
        id = AutoField()
        model = TextField()
        action = TextField()
        version = TextField()
        previous_version = TextField(default="")
        pinned = BooleanField(default=False)
        candidate = TextField(default="")
        candidate_share = DoubleField(default=0.0)
        changed_at = DateTimeField()
        changed_by = TextField(default="")
        reason = TextField(default="")

        class Meta:
            table_name = "desired_state_history"
            indexes = ((("model", "id"), False),)

    with database.bind_ctx([DesiredState, DesiredStateChange]):
        database.create_tables([DesiredState, DesiredStateChange])
