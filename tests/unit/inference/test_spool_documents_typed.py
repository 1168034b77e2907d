"""Spool documents of typed feature values (#22): a record or batch spooled and read back holds the plain values sent
(strings of any kind, booleans, None; NaN and numpy scalars made plain), float records and float batches are
written byte for byte as before typed features, and lines written by the earlier version read back unchanged."""
from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from database.records import PredictionBatch, PredictionRecord, plain
from inference.recording.documents import from_doc, to_doc
from inference.recording.prediction_log import to_line
from inference.recording.spool import Spool, decode, spool_line

NASTY = ['say "hi"', "back\\slash", "tab\there", "new\nline", "carriage\rreturn", "Zürich – 東京 🐧", "nul\x00inside",
         "\u2028", ""]

# Lines written by the spool before typed features (inference/recording/documents.py at 6a1dc7a^, encoded by
# spool.encode): a float record and a float batch of 2 rows whose second row has a NaN (missing) feature.
OLD_RECORD_LINE = (
    b'93f77e1f {"prediction_id":"p-old","request_id":"r-old","model":"iris","model_version":"1","features":'
    b'{"sepal_length":5.1,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2},"label":"setosa","probabilities":'
    b'{"setosa":0.98,"versicolor":0.01,"virginica":0.01},"transport":"grpc","latency_ms":1.25,"created_at":'
    b'1700000000.5}\n')
OLD_BATCH_LINE = (
    b'a9fd61c9 {"prediction_ids":["bp0","bp1"],"request_ids":["br0","br1"],"model":"iris","model_version":"1",'
    b'"feature_names":["a","b"],"features":"mpmZmZmZuT8AAAAAAAAAQAAAAAAAAPh/AAAAAAAAEEA=","classes":["x","y"],'
    b'"labels":[0,1],"probabilities":"AAAAAAAA6D8AAAAAAADQPwAAAAAAANA/AAAAAAAA6D8=","transport":"batch",'
    b'"latency_ms":2.0,"created_at":1700000100.0}\n')


def old_record() -> PredictionRecord:
    return PredictionRecord(
        prediction_id="p-old", request_id="r-old", model="iris", model_version="1",
        features={"sepal_length": 5.1, "sepal_width": 3.5, "petal_length": 1.4, "petal_width": 0.2},
        label="setosa", probabilities={"setosa": 0.98, "versicolor": 0.01, "virginica": 0.01}, transport="grpc",
        latency_ms=1.25, created_at=1700000000.5)


def old_batch() -> PredictionBatch:
    return PredictionBatch(
        prediction_ids=["bp0", "bp1"], request_ids=["br0", "br1"], model="iris", model_version="1",
        feature_names=("a", "b"), features=np.array([[0.1, 2.0], [math.nan, 4.0]]), classes=("x", "y"),
        labels=np.array([0, 1]), probabilities=np.array([[0.75, 0.25], [0.25, 0.75]]), transport="batch",
        latency_ms=2.0, created_at=1700000100.0)


def typed_record(features: dict, i: int = 0) -> PredictionRecord:
    return PredictionRecord(
        prediction_id=f"p{i}", request_id=f"r{i}", model="churn", model_version="1", features=features, label="yes",
        probabilities={"no": 0.25, "yes": 0.75}, transport="grpc", latency_ms=1.5, created_at=1_700_000_000.0 + i)


def typed_batch(matrix: np.ndarray, names: tuple[str, ...]) -> PredictionBatch:
    n = len(matrix)
    return PredictionBatch(
        prediction_ids=[f"bp{i}" for i in range(n)], request_ids=[f"br{i}" for i in range(n)], model="churn",
        model_version="1", feature_names=names, features=matrix, classes=("no", "yes"), labels=np.arange(n) % 2,
        probabilities=np.tile([0.25, 0.75], (n, 1)), transport="batch", latency_ms=2.0, created_at=1_700_000_100.0)


def read_back(r):
    line = to_line(r)
    assert line.isascii() and b"\x00" not in line and line.count(b"\n") == 1  # one safe line, whatever it holds
    doc = decode(line)
    assert doc is not None
    return from_doc(doc)


def test_a_typed_record_reads_back_with_its_plain_values():
    sent = {"s": NASTY[0], "t": NASTY[2], "n": NASTY[3], "r": NASTY[4], "u": NASTY[5], "z": NASTY[6],
            "b": True, "f": False, "none": None, "x": 2.5, "i": 3}
    back = read_back(typed_record(sent))
    assert back == typed_record(sent)
    assert type(back.features["b"]) is bool and type(back.features["i"]) is int


def test_nan_and_numpy_scalars_in_a_record_are_made_plain():
    sent = {"nan": math.nan, "f64": np.float64(1.5), "i64": np.int64(7), "b": np.bool_(False), "s": np.str_("x")}
    back = read_back(typed_record(sent))
    assert back.features == {"nan": None, "f64": 1.5, "i64": 7.0, "b": False, "s": "x"}
    assert type(back.features["b"]) is bool
    with pytest.raises(ValueError, match="feature 'inf'"):
        to_line(typed_record({"inf": math.inf}))


def test_a_typed_batch_reads_back_as_an_object_matrix_of_plain_values():
    names = ("tenure", "contract", "senior")
    rows = [[float(i), s, i % 2 == 0] for i, s in enumerate(NASTY)]
    rows += [[None, None, None], [math.nan, "x", True], [np.int64(4), np.str_("y"), np.bool_(True)]]
    matrix = np.empty((len(rows), 3), dtype=object)
    matrix[:] = rows
    sent = typed_batch(matrix, names)
    back = read_back(sent)
    assert isinstance(back, PredictionBatch) and back.features.dtype == object
    assert back.features.tolist() == [[plain(v, n) for v, n in zip(row, names)] for row in rows]
    assert [type(v) for v in back.features[:, 2]] == [bool] * len(NASTY) + [type(None), bool, bool]
    assert back.rows()[0].features == {"tenure": 0.0, "contract": NASTY[0], "senior": True}
    assert (back.prediction_ids, back.request_ids, back.labels.tolist()) == (
        sent.prediction_ids, sent.request_ids, sent.labels.tolist())
    np.testing.assert_array_equal(back.probabilities, sent.probabilities)


def test_float_records_and_batches_are_written_as_before_and_old_lines_read_back():
    assert to_line(old_record()) == OLD_RECORD_LINE
    assert to_line(old_batch()) == OLD_BATCH_LINE  # still packed: one base64 string, not rows
    assert isinstance(to_doc(old_batch())["features"], str)
    assert from_doc(decode(OLD_RECORD_LINE)) == old_record()  # type: ignore[arg-type]
    batch = from_doc(decode(OLD_BATCH_LINE))  # type: ignore[arg-type]
    assert isinstance(batch, PredictionBatch) and batch.features.dtype == np.float64
    np.testing.assert_array_equal(batch.features, old_batch().features)  # NaN where it was
    np.testing.assert_array_equal(batch.probabilities, old_batch().probabilities)
    assert batch.rows()[1].request_id == "br1"


def test_old_lines_in_a_spool_segment_are_read_back_by_the_spool(tmp_path):
    spool = Spool(tmp_path, max_bytes=1_000_000)
    spool.append([OLD_RECORD_LINE, OLD_BATCH_LINE, to_line(typed_record({"c": "new"}))])
    spool.close()
    spool = Spool(tmp_path, max_bytes=1_000_000)  # as after a restart onto the new version
    _, docs = spool.read(10)
    stored = [from_doc(d) for d in docs]
    assert stored[0] == old_record() and stored[2] == typed_record({"c": "new"})
    np.testing.assert_array_equal(stored[1].features, old_batch().features)
    spool.close()


@pytest.mark.parametrize("rows, words", [
    ([[1.0, "a"]], "expected a list of 2 rows"),
    ([[1.0, "a"], [2.0]], "row 1 is not a list of 2 values"),
    ([[1.0, "a"], [2.0, {"x": 1}]], "row 1 holds a value that is not a number, string, boolean or null"),
    ("not-base64!", None),
])
def test_a_damaged_typed_batch_document_is_a_value_error(rows, words):
    doc = to_doc(typed_batch(np.array([[1.0, "a"], [2.0, "b"]], dtype=object), ("t", "c")))
    doc["features"] = rows
    with pytest.raises(ValueError, match=words):
        from_doc(doc)


def test_a_refused_typed_record_is_quarantined_readably(tmp_path):
    spool = Spool(tmp_path / "spool", max_bytes=1_000_000)
    r = typed_record({"contract": "nul\x00inside", "tenure": math.nan, "senior": True})
    spool.quarantine_record(to_doc(r), "refused")
    [path] = list(spool.quarantine_dir.iterdir())
    text = path.read_bytes()
    assert b"\x00" not in text and b'"nul\\u0000inside"' in text and b"NaN" in text and b"true" in text
    spool.close()


def test_a_float_batch_line_is_written_by_orjson_and_reads_back_whole():
    """A float batch's line is orjson's (encode_batch): non-ASCII ids as UTF-8, control characters escaped, so a
    line holds no newline or zero byte; it reads back as the batch it was. decode still reads what only json
    writes (NaN in a document: a quarantined or older line)."""
    sent = dataclasses.replace(old_batch(), request_ids=["ünï ✓", "tab\tnew\nline\x00"], latency_ms=1e-05,
                               created_at=1_700_000_100.123456)
    line = to_line(sent)
    assert line.count(b"\n") == 1 and line.endswith(b"\n") and b"\x00" not in line
    assert "ünï ✓".encode() in line
    back = from_doc(decode(line))  # type: ignore[arg-type]
    assert isinstance(back, PredictionBatch)
    assert (back.request_ids, back.prediction_ids, back.latency_ms, back.created_at) == (
        sent.request_ids, sent.prediction_ids, sent.latency_ms, sent.created_at)
    np.testing.assert_array_equal(back.features, sent.features)
    np.testing.assert_array_equal(back.probabilities, sent.probabilities)
    nan_line = spool_line(b'{"latency_ms":NaN,"n":18446744073709551616}')
    doc = decode(nan_line)
    assert doc is not None and math.isnan(doc["latency_ms"]) and doc["n"] == 2 ** 64
    assert decode(nan_line.replace(b"NaN", b"NaX")) is None  # a damaged line (its crc no longer matches)
