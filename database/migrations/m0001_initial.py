"""Initial schema: model versions, predictions, feedback, batch runs (a frozen snapshot, not the live models)."""
from __future__ import annotations

from peewee import (
    AutoField,
    CharField,
    DateTimeField,
    DoubleField,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

from database.models import JSONField


def apply(database) -> None:
    class Base(Model):
        class Meta:
            pass

    class ModelVersion(Base):
        id = AutoField()
        name = TextField()
        version = TextField()
        sha256 = CharField(max_length=64)
        metrics = JSONField(default=dict)
        created_at = DateTimeField()
        activated_at = DateTimeField(null=True)

        class Meta:
            table_name = "model_versions"
            indexes = ((("name", "version"), True),)

    class Prediction(Base):
        prediction_id = CharField(max_length=36, primary_key=True)
        request_id = TextField(unique=True)
        model = TextField()
        model_version = TextField()
        features = JSONField()
        label = TextField()
        probabilities = JSONField()
        transport = CharField(max_length=16)
        latency_ms = DoubleField()
        created_at = DateTimeField(index=True)

        class Meta:
            table_name = "predictions"
            indexes = ((("model", "model_version", "created_at"), False),)

    class Feedback(Base):
        id = AutoField()
        prediction = ForeignKeyField(Prediction, column_name="prediction_id", unique=True, on_delete="CASCADE")
        label = TextField()
        created_at = DateTimeField()

        class Meta:
            table_name = "feedback"

    class BatchRun(Base):
        id = AutoField()
        name = TextField()
        params = JSONField(default=dict)
        status = CharField(max_length=16)
        rows = IntegerField(default=0)
        output = TextField(null=True)
        error = TextField(null=True)
        started_at = DateTimeField()
        finished_at = DateTimeField(null=True)

        class Meta:
            table_name = "batch_runs"
            indexes = ((("name", "started_at"), False),)

    tables = [ModelVersion, Prediction, Feedback, BatchRun]
    database.bind(tables, bind_refs=False, bind_backrefs=False)
    database.create_tables(tables, safe=False)
