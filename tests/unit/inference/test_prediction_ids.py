"""The server's prediction ids are the ones the database looks a request id up by (m0012): ids() and the bulk
prediction_ids() both give database.records.prediction_id_of(request_id), uuid5 of the one namespace."""
from __future__ import annotations

import uuid

from database.records import PREDICTION_NAMESPACE, prediction_id_of
from inference.scoring.convert import ids, prediction_ids


def test_the_server_derives_the_id_the_database_looks_keys_up_by():
    keys = ["a", "req-1", "ünïcode ✓", "x" * 300, ids("")[0]]
    assert [ids(k)[1] for k in keys] == prediction_ids(keys) == [prediction_id_of(k) for k in keys]
    assert prediction_id_of("a") == str(uuid.uuid5(PREDICTION_NAMESPACE, "a")) != str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                                                                  "a"))
