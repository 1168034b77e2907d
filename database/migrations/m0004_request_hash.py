"""predictions.request_hash: the fingerprint of the request a client-sent request_id (the idempotency key) was
answered for (database/fingerprint.py), so a retry is told from a different request under the same key without
reading the stored features. Nullable: rows stored before it (and rows with a fresh id) hold NULL; a lookup
recomputes those from the stored features. ADD COLUMN of a nullable column without a default is instant."""
from __future__ import annotations

from peewee import TextField
from playhouse.migrate import SchemaMigrator, migrate


def apply(database) -> None:
    migrator = SchemaMigrator.from_database(database)
    migrate(migrator.add_column("predictions", "request_hash", TextField(null=True)))
