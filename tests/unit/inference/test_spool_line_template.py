"""to_line's row template (durable mode's per-row encoding) writes exactly what encoding the record's document
with the spool's JSON encoder writes, for every kind of record: the template is only a faster way to the same
bytes, and records it cannot format (anything but finite numbers, names that are no strings) take the encoder."""
from __future__ import annotations

import itertools
import math
import random

import numpy as np
import pytest

from database.records import PredictionRecord
from inference.recording.documents import to_doc
from inference.recording.prediction_log import to_line
from inference.recording.spool import encode

TEXTS = ["p-1", 'say "hi"', "back\\slash", "tab\there", "new\nline", "Zürich – 東京 🐧", "per%cent %s %r", "\u2028", ""]
VALUES = [5.1, 0.0, -0.0, 1e-310, 1.7976931348623157e308, 3, -7, 2**70, True, None, "a %s category", np.float64(0.5)]


def record(features, probabilities, *, ids=("p", "r"), model="iris", version="1", label="setosa", transport="grpc",
           latency_ms=1.25, created_at=1700000000.5):
    return PredictionRecord(prediction_id=ids[0], request_id=ids[1], model=model, model_version=version,
                            features=features, label=label, probabilities=probabilities, transport=transport,
                            latency_ms=latency_ms, created_at=created_at)


def reference(r: PredictionRecord) -> bytes:
    """What to_line wrote before its template: the document through the spool's encoder (values made plain when
    the encoder refuses them)."""
    try:
        return encode(to_doc(r))
    except (ValueError, TypeError):
        from database.records import plain
        doc = to_doc(r)
        doc["features"] = {name: plain(value, name) for name, value in r.features.items()}
        return encode(doc)


@pytest.mark.parametrize("text", TEXTS)
def test_names_and_ids_of_any_kind(text):
    r = record({text or "x": 1.5, "b": 2.0}, {text or "y": 0.25, "z": 0.75}, ids=(text, text), model=text,
               version=text, label=text, transport=text)
    assert to_line(r) == reference(r)
    assert to_line(r) == to_line(r)  # the second time from the kept template


def test_every_kind_of_value_in_every_position():
    for a, b in itertools.product(VALUES, repeat=2):
        r = record({"a": a, "b": b}, {"x": 0.5, "y": 0.5})
        assert to_line(r) == reference(r), (a, b)


def test_missing_and_non_finite_numbers_take_the_encoder():
    assert to_line(record({"a": math.nan}, {"x": 1.0})) == reference(record({"a": math.nan}, {"x": 1.0}))
    with pytest.raises(ValueError):
        to_line(record({"a": math.inf}, {"x": 1.0}))
    with pytest.raises(ValueError):
        to_line(record({"a": 1.0}, {"x": math.nan}))
    with pytest.raises(ValueError):
        to_line(record({"a": 1.0}, {"x": 1.0}, latency_ms=math.inf))


def test_random_float_records_match_byte_for_byte():
    rng = random.Random(27)
    for _ in range(2000):
        n = rng.randint(0, 6)
        features = {f"f{i}": rng.choice([rng.uniform(-1e6, 1e6), rng.random(), float(rng.randint(-9, 9)),
                                         rng.randint(-10**6, 10**6)]) for i in range(n)}
        probabilities = {f"c{i}": rng.random() for i in range(rng.randint(1, 4))}
        r = record(features, probabilities, latency_ms=rng.uniform(0, 50), created_at=1.7e9 + rng.random() * 1e6)
        assert to_line(r) == reference(r)


def test_a_keyed_record_writes_its_fingerprint_and_an_unkeyed_one_none():
    import dataclasses

    keyed = dataclasses.replace(record({"a": 1.5}, {"x": 0.5, "y": 0.5}), request_hash="ab" * 16)
    assert to_line(keyed) == reference(keyed) and b'"request_hash":"' + b"ab" * 16 + b'"' in to_line(keyed)
    unkeyed = record({"a": 1.5}, {"x": 0.5, "y": 0.5})
    assert to_line(unkeyed) == reference(unkeyed) and b"request_hash" not in to_line(unkeyed)
