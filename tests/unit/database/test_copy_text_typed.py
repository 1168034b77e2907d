"""COPY text of typed feature values (#22): every row read back as PostgreSQL's COPY text reader reads it (tabs
split fields, backslash escapes undone) holds the exact JSON of the plain values sent: strings with quotes,
backslashes, tabs, newlines, carriage returns and non-ASCII; booleans; None; NaN (a missing number) as null; ints
and numpy scalars as numbers. The float fast path keeps its row template."""
from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from database.copy_text import copy_text, features_json
from database.records import PredictionBatch, PredictionRecord, Stored, plain

NASTY = ['say "hi"', "back\\slash", "tab\there", "new\nline", "carriage\rreturn", "Zürich – 東京 🐧", "%s %r %%",
         "\\N", "", " "]


def record(features: dict, i: int = 0, model_version: str = "1", **over) -> PredictionRecord:
    r = PredictionRecord(prediction_id=f"p{i}", request_id=f"r{i}", model="churn", model_version=model_version,
                         features=features, label="yes", probabilities={"no": 0.25, "yes": 0.75}, transport="grpc",
                         latency_ms=1.5, created_at=1_700_000_000.0 + i)
    return dataclasses.replace(r, **over)


def batch(features: np.ndarray, names: tuple[str, ...], **over) -> PredictionBatch:
    n = len(features)
    # ids in their sorted order: a batch's COPY rows come sorted by prediction_id (the last test here)
    b = PredictionBatch(prediction_ids=[f"bp{i:04d}" for i in range(n)], request_ids=[f"br{i}" for i in range(n)],
                        model="churn", model_version="1", feature_names=names, features=features,
                        classes=("no", "yes"), labels=np.arange(n) % 2, probabilities=np.tile([0.25, 0.75], (n, 1)),
                        transport="batch", latency_ms=2.0, created_at=1_700_000_100.0)
    return dataclasses.replace(b, **over)


def _unescape(field: str) -> str | None:
    """One COPY text field as PostgreSQL reads it (\\N is NULL; \\\\, \\t, \\n, \\r escapes)."""
    if field == "\\N":
        return None
    out, i = [], 0
    while i < len(field):
        c = field[i]
        if c == "\\":
            nxt = field[i + 1]
            out.append({"t": "\t", "n": "\n", "r": "\r", "\\": "\\"}.get(nxt, nxt))
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parsed(records) -> list[dict]:
    """The COPY text rows as PostgreSQL reads them, the jsonb columns parsed as jsonb would (strict JSON)."""
    text = copy_text(records).getvalue()
    assert text.endswith("\n")
    rows = []
    for line in text[:-1].split("\n"):  # raw newlines only end rows (those in values are escaped)
        fields = [_unescape(f) for f in line.split("\t")]
        assert len(fields) == 11, line  # the _COLUMNS of repo.insert_predictions, request_hash last
        strict = {"parse_constant": lambda c: pytest.fail(f"{c} is not JSON")}
        rows.append({"prediction_id": fields[0], "request_id": fields[1], "model": fields[2],
                     "features": json.loads(fields[4], **strict),  # type: ignore[arg-type]
                     "label": fields[5], "probabilities": json.loads(fields[6], **strict)})  # type: ignore[arg-type]
    return rows


def test_typed_records_read_back_as_the_exact_json_values():
    sent = [{"tenure": 3.0, "contract": s, "senior": i % 2 == 0, "note": None} for i, s in enumerate(NASTY)]
    rows = parsed([record(f, i) for i, f in enumerate(sent)])
    assert [r["features"] for r in rows] == sent
    for got, want in zip(rows, sent):  # a boolean stays a boolean (True == 1 would hide a 1)
        assert type(got["features"]["senior"]) is bool and got["features"]["senior"] is want["senior"]


def test_nan_is_null_ints_and_numpy_scalars_are_numbers():
    sent = {"a": math.nan, "b": 7, "c": np.float64(2.5), "d": np.int64(-4), "e": np.bool_(True),
            "f": np.str_("One year"), "g": np.float32(0.5), "h": np.float64("nan")}
    [row] = parsed([record(sent)])
    assert row["features"] == {"a": None, "b": 7, "c": 2.5, "d": -4.0, "e": True, "f": "One year", "g": 0.5,
                               "h": None}
    assert type(row["features"]["e"]) is bool


def test_an_infinite_feature_is_a_value_error_naming_it():
    with pytest.raises(ValueError, match="feature 'b'"):
        copy_text([record({"a": 1.0, "b": math.inf})])
    with pytest.raises(ValueError, match="feature 'b' holds a list"):
        features_json({"a": 1.0, "b": [1]})


def test_float_records_keep_the_row_template_and_mixed_commits_are_exact():
    floats = [record({"x": 0.1 * i, "y": 1e300, "z": -0.0}, i) for i in range(3)]
    typed = [record({"tenure": None, "contract": "a\tb", "senior": False}, 10 + i) for i in range(2)]
    ints = [record({"x": 1, "y": 2, "z": 3}, 20)]  # ints: numbers too (a JSON number as %r prints them)
    mixed = [floats[0], typed[0], floats[1], typed[1], ints[0], floats[2]]
    rows = parsed(mixed)
    assert [r["features"] for r in rows] == [r.features for r in mixed]
    assert [r["request_id"] for r in rows] == [r.request_id for r in mixed]


def test_a_boolean_after_numbers_in_one_shape_makes_copy_text_that_postgresql_refuses():
    """The documented assumption of copy_text: a (model, version, keys) shape's first row of numbers only makes a
    %r row template for every later row of that shape; a bool in a later row (never the case behind the edge: a
    model version's features keep their kinds) prints as True, which is no JSON. COPY then refuses the batch and
    repo.insert_predictions INSERTs it through features_json (tests/integration/postgres/test_typed_recording.py
    proves the rows are stored exactly). This test pins the COPY text behaviour so a change to it is seen."""
    first, odd = record({"flag": 1.0, "x": 2.0}, 0), record({"flag": True, "x": 2.0}, 1)
    text = copy_text([first, odd]).getvalue()
    assert '{"flag":True,"x":2.0}' in text  # not JSON: COPY refuses (22P02), the INSERT fallback takes over
    with pytest.raises(json.JSONDecodeError):
        parsed([first, odd])
    # alone, or first in its shape, or under another model version, the bool row is encoded right
    assert parsed([odd])[0]["features"] == {"flag": True, "x": 2.0}
    assert [r["features"] for r in parsed([odd, first])] == [{"flag": True, "x": 2.0}, {"flag": 1.0, "x": 2.0}]
    other = record({"flag": True, "x": 2.0}, 2, model_version="2")
    assert parsed([first, other])[1]["features"] == {"flag": True, "x": 2.0}
    assert json.loads(features_json(odd.features)) == {"flag": True, "x": 2.0}


def test_typed_batches_read_back_as_the_exact_json_values():
    names = ("tenure", "contract", "senior")
    matrix = np.empty((len(NASTY) + 4, 3), dtype=object)
    for i, s in enumerate(NASTY):
        matrix[i] = [float(i), s, i % 2 == 1]
    matrix[len(NASTY)] = [None, None, None]
    matrix[len(NASTY) + 1] = [math.nan, "x", True]
    matrix[len(NASTY) + 2] = [np.int64(5), np.str_("np"), np.bool_(False)]
    matrix[len(NASTY) + 3] = [7, NASTY[0], False]
    b = batch(matrix, names)
    rows = parsed([b])
    want = [{n: plain(v, n) for n, v in zip(names, row)} for row in matrix.tolist()]
    assert [r["features"] for r in rows] == want
    assert want[len(NASTY) + 1]["tenure"] is None and want[len(NASTY) + 2]["senior"] is False
    assert [r["request_id"] for r in rows] == b.request_ids
    assert [type(r["features"]["senior"]) for r in rows[:len(NASTY)]] == [bool] * len(NASTY)


def test_float_batches_store_nan_as_null_and_keep_exact_floats():
    matrix = np.array([[0.1, 1e-310, 5.0], [math.nan, 2.0, math.nan], [1.7976931348623157e308, -0.0, 3.0]])
    rows = parsed([batch(matrix, ("a", "b", "c"))])
    assert [r["features"] for r in rows] == [{"a": 0.1, "b": 1e-310, "c": 5.0}, {"a": None, "b": 2.0, "c": None},
                                             {"a": 1.7976931348623157e308, "b": -0.0, "c": 3.0}]


def test_a_batch_whose_ids_need_escaping_takes_the_per_row_path_with_the_same_values():
    matrix = np.array([[1.0, "tab\there", True], [math.nan, None, None]], dtype=object)
    b = batch(matrix, ("a", "b", "c"), request_ids=["id\\one", "id\ttwo"])
    rows = parsed([b])
    assert [r["request_id"] for r in rows] == ["id\\one", "id\ttwo"]
    assert [r["features"] for r in rows] == [{"a": 1.0, "b": "tab\there", "c": True}, {"a": None, "b": None,
                                                                                      "c": None}]
    floats = batch(np.array([[math.nan, 1.0]]), ("a", "b"), request_ids=["id\nthree"])
    assert parsed([floats])[0]["features"] == {"a": None, "b": 1.0}


def test_an_infinite_value_in_a_batch_is_a_value_error_naming_the_feature():
    with pytest.raises(ValueError, match="feature 'b'"):
        copy_text([batch(np.array([[1.0, math.inf]]), ("a", "b"))])
    with pytest.raises(ValueError, match="feature 'b'"):
        copy_text([batch(np.array([[1.0, -math.inf]], dtype=object), ("a", "b"))])
    with pytest.raises(ValueError, match="feature 'b' holds a dict"):
        copy_text([batch(np.array([[1.0, {}]], dtype=object), ("a", "b"))])



def test_a_batch_is_copied_in_prediction_id_order_each_row_whole():
    """The page indexes take a batch's rows (one created_at) in key order: the rows come sorted by prediction_id,
    and each keeps its own request id, features, label, probabilities and request hash."""
    ids = ["c7", "a1", "b3", "a0"]
    matrix = np.array([[float(i), 10.0 + i] for i in range(4)])
    b = batch(matrix, ("x", "y"), prediction_ids=ids, request_ids=[f"req-{p}" for p in ids],
              labels=np.array([1, 0, 1, 0]), probabilities=np.array([[0.1 * i, 1 - 0.1 * i] for i in range(4)]),
              request_hashes=[f"h-{p}" for p in ids])
    lines = [line.split("\t") for line in copy_text([b]).getvalue().splitlines()]
    assert [f[0] for f in lines] == sorted(ids)
    for f in lines:
        i = ids.index(f[0])
        assert f[1] == f"req-{f[0]}" and f[10] == f"h-{f[0]}"
        assert json.loads(f[4]) == {"x": float(i), "y": 10.0 + i}
        assert f[5] == ("yes" if i % 2 == 0 else "no")
        assert json.loads(f[6]) == {"no": 0.1 * i, "yes": 1 - 0.1 * i}
    assert b.prediction_ids == ids  # the caller's batch (its answers) is left as it was


def test_a_nul_or_lone_surrogate_in_any_string_is_refused_and_look_alikes_are_not():
    """The json columns (m0010) would take a NUL or lone surrogate escape that jsonb refused: the COPY text refuses
    it instead (the writer quarantines the row alone), in a value, a feature name or a class, per row and per
    batch; a backslash followed by "u0000" or "ud800", and a surrogate pair (an emoji), are kept."""
    from database.connect import RejectedData
    for bad in (record({"contract": "a\x00b"}), record({"a\x00": 1.0}),
                record({"x": 1.0}, probabilities={"n\x00o": 0.25, "yes": 0.75}), record({"s": "a\ud800"}),
                record({"s": "\udc00b"}), record({"s": "\ud800\\udc00"})):
        with pytest.raises(RejectedData, match="NUL"):
            copy_text([bad])
    matrix = np.array([["ok"], ["nul\x00"]], dtype=object)
    with pytest.raises(RejectedData, match="NUL"):
        copy_text([batch(matrix, ("contract",))])
    with pytest.raises(RejectedData, match="NUL"):
        copy_text([batch(np.array([[1.0]]), ("a\x00",))])
    for fine in ("\\u0000", "\\\\u0000", "x\\u0000y", "\\ud800", "🐧", "a🐧\\udc00"):
        assert parsed([record({"s": fine})])[0]["features"] == {"s": fine}
        assert parsed([batch(np.array([[fine]], dtype=object), ("s",))])[0]["features"] == {"s": fine}


def test_batch_numbers_are_written_by_orjson_and_read_back_as_the_same_doubles():
    """The batch path writes its float columns with orjson (text_columns): every value, subnormals, extremes,
    negative zero, float32 widened and random doubles included, reads back as the very double, and the rows' JSON
    equals the per-row path's (repr) value for value."""
    rng = np.random.default_rng(7)
    specials = [0.1, 1e-05, 1e-310, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, -0.0, 1e16, 1e22,
                123456789.0, 0.30000000000000004, float(np.float32(0.1)), -1.5e-300, 4.35, 100.0]
    matrix = np.concatenate([np.array(specials).reshape(-1, 1).repeat(3, axis=1) * [1, -1, 0.5],
                             rng.normal(0, 1e3, (200, 3)) * 10.0 ** rng.integers(-20, 20, (200, 3))])
    probabilities = rng.dirichlet([0.05, 0.05], len(matrix))  # many tiny ones, printed with exponents
    b = batch(matrix, ("a", "b", "c"), probabilities=probabilities)
    fast = parsed([b])
    slow = parsed(b.rows())  # the per-row path: repr of each value
    assert fast == slow
    assert [[r["features"][k] for k in "abc"] for r in fast] == matrix.tolist()
    assert [[r["probabilities"][k] for k in ("no", "yes")] for r in fast] == probabilities.tolist()
    text = copy_text([b]).getvalue()
    assert "%r" not in text and "np.float64" not in text and "inf" not in text.lower()
    # float32 columns are widened to the doubles the per-row path stores
    narrow = batch(matrix[:5].astype(np.float32), ("a", "b", "c"))
    assert [[r["features"][k] for k in "abc"] for r in parsed([narrow])] == matrix[:5].astype(np.float32).astype(
        float).tolist()


def test_the_claims_are_each_rows_id_and_created_at_as_its_copy_row_has_them():
    """m0014: the claims copy_text collects (the COPY text of prediction_keys) name each row's prediction_id and
    created_at exactly as the rows' COPY text does, for records (an id needing escapes included), a bulk batch (its
    ids in order) and a batch whose ids need escapes (the per-row path)."""
    from database.copy_text import claims_text

    odd = [record({"a": 1.0}, 0), record({"a": 2.0}, 1, prediction_id="tab\there\\n"),
           record({"a": "x"}, 2, created_at=1_700_000_000.5)]
    fast = batch(np.array([[1.0], [2.0], [3.0]]), ("a",), prediction_ids=["bp2", "bp0", "bp1"])
    escaped = batch(np.array([[1.0], [2.0]]), ("a",), prediction_ids=["b\\p", "b\np"])
    cases: list[list[Stored]] = [list(odd), [fast], [escaped], [*odd, fast, escaped], []]
    for items in cases:
        claims: list[str] = []
        rows = copy_text(items, claims).getvalue()
        expected = sorted(tuple(line.split("\t")[i] for i in (0, 9)) for line in rows.splitlines())
        got = [tuple(line.split("\t")) for line in claims_text(claims).getvalue().splitlines()]
        assert sorted(got) == expected and len(got) == sum(len(i) if isinstance(i, PredictionBatch) else 1
                                                           for i in items)
    claims = []
    copy_text([fast], claims)
    assert [line.split("\t")[0] for line in claims_text(claims).getvalue().splitlines()] == ["bp0", "bp1", "bp2"]
