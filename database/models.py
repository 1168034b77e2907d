"""peewee models of the current schema; `db` is bound to a real database by the entry point (connect.open_database)."""
from __future__ import annotations

import json
from datetime import UTC, datetime

from peewee import (
    AutoField,
    BigIntegerField,
    BooleanField,
    CharField,
    DatabaseProxy,
    DateTimeField,
    DoubleField,
    Field,
    ForeignKeyField,
    IntegerField,
    Model,
    TextField,
)

db = DatabaseProxy()


def to_datetime(epoch: float) -> datetime:
    """UTC naive datetime (the columns hold UTC without zone)."""
    return datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def to_epoch(value: datetime) -> float:
    return value.replace(tzinfo=UTC).timestamp()


class JSONField(Field):
    """A JSON document: jsonb on PostgreSQL, text on SQLite; dicts and lists in Python."""

    field_type = "JSONB"

    def db_value(self, value):
        return None if value is None else json.dumps(value, separators=(",", ":"), allow_nan=False)

    def python_value(self, value):
        if value is None or not isinstance(value, (str, bytes)):
            return value  # psycopg2 already decodes jsonb
        return json.loads(value)


class JSONTextField(JSONField):
    """A JSON document kept as written: json on PostgreSQL (checked for syntax, not parsed into jsonb: cheaper to
    store, migration m0010), text on SQLite; dicts and lists in Python."""

    field_type = "JSON"


class BaseModel(Model):
    class Meta:
        database = db


class ModelVersion(BaseModel):
    """A model version the server has activated (trained metadata plus when it last started serving)."""

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


class Prediction(BaseModel):
    """One answered prediction; request_id is the idempotency key."""

    prediction_id = CharField(max_length=36, primary_key=True)
    request_id = TextField(unique=True)
    model = TextField()
    model_version = TextField()
    features = JSONTextField()
    label = TextField()
    probabilities = JSONTextField()
    transport = CharField(max_length=16)
    latency_ms = DoubleField()
    created_at = DateTimeField()
    request_hash = TextField(null=True)  # the request's fingerprint (database/fingerprint.py); NULL: a fresh id

    class Meta:
        table_name = "predictions"
        # one per ListPredictions filter, then its keyset order (migration m0006)
        indexes = ((("created_at", "prediction_id"), False),
                   (("model", "created_at", "prediction_id"), False),
                   (("model", "model_version", "created_at", "prediction_id"), False),
                   (("model_version", "created_at", "prediction_id"), False),
                   (("label", "created_at", "prediction_id"), False),
                   (("transport", "created_at", "prediction_id"), False))


class Feedback(BaseModel):
    """The true label of a prediction (one per prediction; a second submission overwrites)."""

    id = AutoField()
    prediction = ForeignKeyField(Prediction, column_name="prediction_id", unique=True, on_delete="CASCADE")
    label = TextField()
    created_at = DateTimeField()

    class Meta:
        table_name = "feedback"


class BatchRun(BaseModel):
    """One attempt of a batch pipeline run; `name` is its kind ("nightly", "score"); (run_key, attempt) is unique."""

    id = AutoField()
    name = TextField()
    params = JSONField(default=dict)
    status = CharField(max_length=16)
    rows = IntegerField(default=0)
    output = TextField(null=True)
    error = TextField(null=True)
    started_at = DateTimeField()
    finished_at = DateTimeField(null=True)
    run_key = TextField(null=True)
    run_date = TextField(default="")
    model = TextField(default="")
    model_version = TextField(default="")
    rejected = IntegerField(default=0)
    accuracy = DoubleField(null=True)
    duration_s = DoubleField(default=0.0)
    message = TextField(default="")
    updated_at = DateTimeField(null=True)
    attempt = IntegerField(default=1)
    input = TextField(default="")

    class Meta:
        table_name = "batch_runs"
        indexes = ((("name", "started_at"), False), (("model", "started_at"), False),
                   (("run_key", "attempt"), True))


class DesiredState(BaseModel):
    """The version of a model every replica serves (and a recorded rollout candidate with its traffic share)."""

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


class DesiredStateChange(BaseModel):
    """One change of a model's desired state (rollout, pin, rollback), oldest first by id."""

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


class CanaryRun(BaseModel):
    """One canary of a model (database/canary.py): a candidate taking a share of traffic beside the baseline, the
    operator's criteria (JSON text), the replicas' tallies and the decision with its figures (JSON text)."""

    id = AutoField()
    model = TextField()
    baseline = TextField()
    candidate = TextField()
    share = DoubleField(default=0.0)
    criteria = TextField(default="{}")
    started_at = DateTimeField()
    started_by = TextField(default="")
    status = TextField(default="running")  # running, promoted, rolled_back, ended
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


TABLES = (ModelVersion, Prediction, Feedback, BatchRun, DesiredState, DesiredStateChange, CanaryRun)
