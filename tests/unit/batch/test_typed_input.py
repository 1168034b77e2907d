"""The typed input rules of the batch (batch.schema, batch.table.validate): numbers, categories, booleans and
missing values, from CSV text and from Parquet values, each accepted or rejected with a reason naming the column;
the whole-column fast paths decide exactly what the cell-by-cell ones do."""
from __future__ import annotations

import math

import numpy as np
import pytest

from batch.csvrows import Unreadable
from batch.schema import Field, schema_of, to_boolean
from batch.table import Table, open_input, validate

TENURE = Field("tenure", "number", nullable=True)
MONTHLY = Field("monthly", "number")
CONTRACT = Field("contract", "category", nullable=True)
PLAN = Field("plan", "category")
SENIOR = Field("senior", "boolean")
PARTNER = Field("partner", "boolean", nullable=True)
SCHEMA = schema_of([TENURE, MONTHLY, CONTRACT, PLAN, SENIOR, PARTNER])
HEADER = ["id", "tenure", "monthly", "contract", "plan", "senior", "partner"]


def good_row(**cells: str) -> list[str]:
    row = {"id": "r", "tenure": "12", "monthly": "70.5", "contract": "One year", "plan": "basic", "senior": "true",
           "partner": "false"}
    row.update(cells)
    return [row[name] for name in HEADER]


def reason_of(**cells) -> str | None:
    """The reject reason of one row with these cells (None: scored)."""
    checked = validate(Table(HEADER, [good_row(), good_row(**cells)]), SCHEMA)
    assert checked.numbers[0] == 1  # the good row around it is scored
    return checked.rejects[0][2] if checked.rejects else None


def test_the_schema_splits_matrix_features_from_string_columns():
    assert SCHEMA.names == ("tenure", "monthly", "contract", "plan", "senior", "partner")
    assert SCHEMA.matrix_names == ("tenure", "monthly", "senior", "partner")  # numbers and booleans, schema order
    assert SCHEMA.category_names == ("contract", "plan")
    assert schema_of(["a", "b"]).fields == (Field("a"), Field("b"))  # bare names: non-nullable numbers
    with pytest.raises(ValueError, match="feature 'x' has kind 'text'"):
        Field("x", "text")


def test_typed_rows_become_a_matrix_and_string_columns_in_schema_order():
    rows = [good_row(), good_row(tenure="", contract="", senior="FALSE", partner=""),
            good_row(contract="Month-to-month", plan=" gold ", senior=" True ", partner="TRUE")]
    checked = validate(Table(HEADER, rows), SCHEMA)
    assert checked.numbers == [1, 2, 3] and not checked.rejects and checked.rows == rows
    m = checked.matrix
    assert m.shape == (3, 4) and m[0].tolist() == [12.0, 70.5, 1.0, 0.0]
    assert math.isnan(m[1, 0]) and m[1, 1:3].tolist() == [70.5, 0.0] and math.isnan(m[1, 3])  # NaN = missing
    assert m[2].tolist() == [12.0, 70.5, 1.0, 1.0]
    # categories as read (not stripped, not case-folded); an empty cell is None (missing)
    assert checked.strings == {"contract": ["One year", None, "Month-to-month"], "plan": ["basic", "basic", " gold "]}


@pytest.mark.parametrize("cells, reason", [
    # an empty (or blank) cell: accepted where the feature is nullable, else rejected naming the column
    ({"tenure": ""}, None), ({"tenure": "  "}, None), ({"contract": ""}, None), ({"partner": " "}, None),
    ({"monthly": ""}, "monthly: missing value"), ({"plan": ""}, "plan: missing value"),
    ({"plan": " \t"}, "plan: missing value"), ({"senior": ""}, "senior: missing value"),
    # numbers: strict as before; NaN and infinities are not a missing value (an empty cell is)
    ({"tenure": "abc"}, "tenure: 'abc' is not a number"), ({"tenure": "nan"}, "tenure: NaN"),
    ({"monthly": "-inf"}, "monthly: infinite"),
    ({"monthly": "5_1"}, ("monthly: '5_1' is not a number (write ASCII digits, an optional sign, a decimal point and "
                         "an exponent only, e.g. 5.1 or -5.1e0)")),
    # booleans: true/false in any case, blanks around them; nothing else
    ({"senior": "TRUE"}, None), ({"senior": "False"}, None), ({"senior": "tRuE"}, None), ({"senior": " false\t"}, None),
    ({"senior": "1"}, "senior: '1' is not a boolean (write true or false)"),
    ({"senior": "0"}, "senior: '0' is not a boolean (write true or false)"),
    ({"senior": "yes"}, "senior: 'yes' is not a boolean (write true or false)"),
    ({"partner": "t"}, "partner: 't' is not a boolean (write true or false)"),
    # categories: any text is a value (the server checks it against the training categories)
    ({"contract": "Zwei Jahre"}, None), ({"plan": "42"}, None), ({"plan": "true"}, None),
])
def test_each_csv_cell_rule(cells, reason):
    assert reason_of(**cells) == reason


def test_a_row_is_rejected_for_its_shape_first_then_its_first_bad_feature_in_schema_order():
    rows = [good_row(monthly="x", senior="maybe"), good_row(plan="", senior="2", tenure="nan"), good_row()[:3],
            Unreadable("one year…[unreadable]", "line 9: why"), good_row(), [*good_row(), "extra"]]
    checked = validate(Table(HEADER, rows), SCHEMA, first=10)
    assert checked.numbers == [14] and checked.strings == {"contract": ["One year"], "plan": ["basic"]}
    assert [(n, reason) for n, _, reason in checked.rejects] == [
        (10, "monthly: 'x' is not a number"), (11, "tenure: NaN"), (12, "the row has 3 fields; the header has 7"),
        (13, "line 9: why"), (15, "the row has 8 fields; the header has 7")]
    assert checked.rejects[3][1] is rows[3]  # the cells as read go to the rejects file


def test_an_unreadable_row_is_never_taken_as_a_category():
    checked = validate(Table(["plan"], [["gold"], Unreadable("gold…[unreadable]", "line 3: why")]), [PLAN])
    assert checked.numbers == [1] and checked.strings == {"plan": ["gold"]} and checked.matrix.shape == (1, 0)
    assert checked.rejects[0][2] == "line 3: why"


def test_to_boolean():
    assert [to_boolean(v) for v in (True, False, "true", "FALSE", " True ")] == [True, False, True, False, True]
    for value in ("1", "", "yes", "truee"):
        with pytest.raises(ValueError):
            to_boolean(value)
    for other in (1, 0, 1.0, None):
        with pytest.raises(TypeError):
            to_boolean(other)


@pytest.mark.parametrize("field, column", [
    (SENIOR, ["true", "False", "TRUE", "false"]),  # the usual spellings: looked up
    (SENIOR, ["true", "False", "TRUE", "tRUE"]),  # one unusual spelling: cell by cell
    (SENIOR, [True, False, True, True]),  # Parquet bools
    (SENIOR, [True, "false", True, "TRUE"]),  # mixed
    (PARTNER, ["true", "", "false", "TRUE"]),
    (PARTNER, [True, None, "false", "True"]),
    (TENURE, ["1", "2.5", "", "4"]), (TENURE, [1, 2.5, None, 4]), (TENURE, ["1", "2.5", "x", "4"]),
    (CONTRACT, ["a", "b", "", "c"]), (CONTRACT, ["a", None, "b", "c"]), (PLAN, ["a", "b", "", "c"]),
    (PLAN, ["a", 1, "b", True]),
])
def test_the_column_wise_paths_agree_with_cell_by_cell(field, column):
    """A column decided at once gives exactly the values and reasons of its cells checked one at a time."""
    whole = validate(Table([field.name], [[v] for v in column]), [field])
    alone = [validate(Table([field.name], [[v]]), [field]) for v in column]
    assert [(r[0], r[2]) for r in whole.rejects] == [(i + 1, a.rejects[0][2]) for i, a in enumerate(alone)
                                                     if a.rejects]
    if field.kind == "category":
        assert whole.strings[field.name] == [v for a in alone for v in a.strings[field.name]]
    else:
        assert np.array_equal(whole.matrix, np.concatenate([a.matrix for a in alone]), equal_nan=True)


def parquet_input(tmp_path, columns: dict):
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = tmp_path / "in.parquet"
    pq.write_table(pa.table(columns), path)
    source = open_input(path)
    return Table(source.columns, list(source.rows))


def test_parquet_strings_booleans_numbers_and_nulls(tmp_path):
    import pyarrow as pa
    table = parquet_input(tmp_path, {
        "tenure": pa.array([12, None, 3, 4, 5, 6], pa.int64()),
        "monthly": pa.array([70.5, 20.0, 30.0, float("nan"), 1.5, 2.5]),
        "contract": pa.array(["One year", None, "Two year", "One year", "a", "b"]).dictionary_encode(),
        "plan": pa.array(["basic", "gold", None, "basic", "basic", "basic"], pa.large_string()),
        "senior": pa.array([True, False, True, False, None, True]),
        "partner": pa.array([None, "TRUE", "false", "true", "true", " False "]),  # text under the CSV rule
    })
    checked = validate(table, SCHEMA)
    assert checked.numbers == [1, 2, 6]
    assert [(n, reason) for n, _, reason in checked.rejects] == [
        (3, "plan: missing value"), (4, "monthly: NaN"), (5, "senior: missing value")]  # a null is the missing value
    assert checked.strings == {"contract": ["One year", None, "b"], "plan": ["basic", "gold", "basic"]}
    assert np.array_equal(checked.matrix, [[12, 70.5, 1, np.nan], [np.nan, 20, 0, 1], [6, 2.5, 1, 0]], equal_nan=True)
    assert checked.rows[1] == [None, 20.0, None, "gold", False, "TRUE"]  # carried through as read


def test_parquet_values_of_the_wrong_kind_are_rejected_not_cast(tmp_path):
    import pyarrow as pa
    table = parquet_input(tmp_path, {
        "contract": pa.array([1, 2, 3], pa.int64()), "plan": pa.array([True, False, True]),
        "senior": pa.array([1, 0, 1], pa.int64()), "tenure": pa.array([True, False, None]),
        "monthly": pa.array(["5.1", "x", "1e3"]), "partner": pa.array([1.0, 0.0, None])})
    checked = validate(table, SCHEMA)
    assert not checked.numbers
    reasons = [reason for _, _, reason in checked.rejects]
    assert reasons == ["tenure: True is a boolean, not a number", "tenure: False is a boolean, not a number",
                       ("contract: 3 is a number, not a category (this feature is categorical: its column must hold "
                       "text; cast it to string)")]  # each row's first bad feature in schema order
    only = {name: validate(Table(table.columns, table.rows), [f]) for name, f in
            (("contract", CONTRACT), ("plan", PLAN), ("senior", SENIOR), ("partner", PARTNER))}
    assert only["contract"].rejects[0][2] == ("contract: 1 is a number, not a category (this feature is categorical: "
                                              "its column must hold text; cast it to string)")
    assert only["plan"].rejects[0][2].startswith("plan: True is a boolean, not a category")
    assert [r[2] for r in only["senior"].rejects] == ["senior: 1 is a number, not a boolean (write true or false)",
                                                      "senior: 0 is a number, not a boolean (write true or false)",
                                                      "senior: 1 is a number, not a boolean (write true or false)"]
    assert only["partner"].rejects[0][2] == "partner: 1.0 is a number, not a boolean (write true or false)"
    assert only["partner"].numbers == [3]  # the null: missing, nullable
    numbers = validate(Table(table.columns, table.rows), [MONTHLY])  # text under the number rule, as before
    assert numbers.numbers == [1, 3] and numbers.matrix.tolist() == [[5.1], [1000.0]]


def test_chunks_with_string_columns_fit_the_published_request_bytes():
    """The bound the Scorer cuts chunks by holds for the request the SDK really encodes: long, non-ASCII and
    missing values in the string columns, NaN (missing) numbers."""
    from batch.scoring import chunk_rows, string_column_bytes
    from predmesh.calls import predict_matrix
    from predmesh.types import CallLimits

    rows = 5000
    strings = {"contract": [("Zwei Jahre ünd mehr " * 7, None, "One year")[i % 3] for i in range(rows)],
               "plan": [None if i % 2 else "gold" for i in range(rows)]}
    names, prefix, limit = ("tenure", "monthly", "senior"), "batch-" + "f" * 24 + "-", 64_000
    fixed = 64 + len(b"churn") + len(prefix) + sum(len(n) + 3 for n in (*names, *strings)) + 16 * len(strings)
    step = chunk_rows(10_000, CallLimits(0, limit, 0), len(names), fixed, string_column_bytes(strings))
    assert 100 < step < rows
    for start in (0, 1, 2):  # chunks starting on each kind of row
        request = predict_matrix("churn", names, [float("nan")] * (step * len(names)),
                                 string_columns={n: v[start:start + step] for n, v in strings.items()},
                                 request_id_prefix=prefix, row_numbers=range(10**9, 10**9 + step)).request
        assert request.ByteSize() <= limit
    assert string_column_bytes({}) == 0 and string_column_bytes({"c": [None, None]}) == 7


def test_the_scorer_sends_each_chunk_its_slice_of_the_string_columns():
    from typing import cast

    from batch.scoring import Clients, Scorer
    from batch.settings import BatchSettings
    from predmesh.types import ScoredMatrix

    calls = []

    class Client:
        def predict_matrix(self, model, names, values, *, string_columns, request_id_prefix, row_numbers,
                           partial_success, new_keys):
            calls.append((list(names), list(values), string_columns, list(row_numbers)))
            n = len(row_numbers)
            return ScoredMatrix(model, "1", ("no", "yes"), [1] * n, [0.5] * (2 * n), ["id"] * n, 0.1)

    class Fake:
        settings = BatchSettings(chunk_rows=2, inflight=2)
        first = Client()

        def pick(self):
            return self.first

    matrix = np.array([[1.0, np.nan], [2.0, 0.0], [3.0, 1.0]])
    out = Scorer(cast(Clients, Fake()), "churn").score(matrix, ("tenure", "senior"), "p-", [7, 8, 9],
                                                       {"contract": ["A", None, "B"]})
    assert out.labels.tolist() == [1, 1, 1]
    assert calls[0][0] == ["tenure", "senior"] and calls[0][1][:1] == [1.0] and math.isnan(calls[0][1][1])
    assert [(c[2], c[3]) for c in calls] == [({"contract": ["A", None]}, [7, 8]), ({"contract": ["B"]}, [9])]
