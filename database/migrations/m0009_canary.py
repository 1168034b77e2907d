"""Canary rollouts (database/canary.py): one row per canary run of a model, with the criteria the operator set,
the tallies the replicas add (rows compared with the serving version, agreement, errors, calls per side) and the
decision taken (promoted, rolled back, or ended by another change) with the figures it was taken on."""
from __future__ import annotations

from peewee import AutoField, BigIntegerField, DateTimeField, DoubleField, Model, TextField


def apply(database) -> None:
    class CanaryRun(Model):
        id = AutoField()
        model = TextField()
        baseline = TextField()
        candidate = TextField()
        share = DoubleField(default=0.0)
        criteria = TextField(default="{}")
        started_at = DateTimeField()
        started_by = TextField(default="")
        status = TextField(default="running")
        decided_at = DateTimeField(null=True)
        decided_by = TextField(default="")
        figures = TextField(default="{}")
        summary = TextField(default="")
        compared = BigIntegerField(default=0)
        agreed = BigIntegerField(default=0)
        serving_calls = BigIntegerField(default=0)
        serving_errors = BigIntegerField(default=0)
        candidate_calls = BigIntegerField(default=0)
        candidate_errors = BigIntegerField(default=0)

        class Meta:
            table_name = "canary_runs"
            indexes = ((("model", "id"), False), (("status",), False))

    with database.bind_ctx([CanaryRun]):
        database.create_tables([CanaryRun])
