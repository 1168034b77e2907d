"""The input rules of the batch: what a number is (the same on the column-wise fast path and the row-by-row
path), bounded CSV rows and unterminated quotes, duplicated header columns."""
from __future__ import annotations

import decimal
import io

import pytest

from batch import csvrows
from batch.csvrows import csv_rows
from batch.table import InputError, Table, open_input, to_number, validate

NUMBERS = ["5.1", "-5", "+0.5", ".5", "5.", "1e3", "1E-3", "-2.5e+2", " 5.1", "5.1\t", "007"]
# non-ASCII digits as escapes, so they cannot pass for ASCII ones: full-width 5.1, Arabic-Indic 5.1, one half,
# Arabic-Indic 3
NOT_NUMBERS = ["5_1", "\uff15.\uff11", "\u0665.\u0661", "\u00a05.1", "5.1\u2003", "1,5", "0x10", "1e", "e3", ".", "+",
               "5.1\n", "\x1c5", "\u00bd", "\u0663"]
SPELLED = ["nan", "NaN", "-inf", "+Infinity", "INF"]  # parsed, then rejected as not finite


@pytest.mark.parametrize("text", NUMBERS + NOT_NUMBERS + SPELLED)
def test_the_number_rule_is_the_same_column_wise_and_row_by_row(text):
    fast = validate(Table(["a"], [[text]] * 3), ["a"])  # every cell alike: the column-wise path
    slow = validate(Table(["a", "b"], [[text, "1"], ["1", "x"]]), ["a", "b"])  # "x": the row-by-row path
    scored = text in NUMBERS
    assert (len(fast.numbers), slow.numbers) == ((3, [1]) if scored else (0, []))
    if scored:
        assert fast.matrix[0, 0] == slow.matrix[0, 0] == float(text)
    elif text in SPELLED:
        assert fast.rejects[0][2] in ("a: NaN", "a: infinite")
    else:
        assert fast.rejects[0][2].startswith(f"a: {text!r} is not a number")
        assert slow.rejects[0][2] == fast.rejects[0][2]


def test_parquet_values_are_numbers_only_when_numeric():
    assert [to_number(v) for v in (1, 2.5, decimal.Decimal("0.1"))] == [1.0, 2.5, 0.1]
    for value in (True, False, b"5.1", [1.0]):
        with pytest.raises((TypeError, ValueError)):
            to_number(value)
    checked = validate(Table(["a", "b"], [[1, True], [2, 0.5], [3, False]]), ["a", "b"])
    assert checked.numbers == [2] and [r[2] for r in checked.rejects] == ["b: True is a boolean, not a number",
                                                                          "b: False is a boolean, not a number"]
    assert validate(Table(["a"], [[1], [2.5]]), ["a"]).matrix.tolist() == [[1.0], [2.5]]


def rows_of(text: str) -> list:
    return list(csv_rows(io.StringIO(text, newline="")))


def test_csv_rows_are_bounded_and_an_unterminated_quote_swallows_nothing(monkeypatch):
    monkeypatch.setattr(csvrows, "ROW_LIMIT", 60)
    assert rows_of('a,b\r\n1,2\r\n"x\ny",3\r\n4,5') == [["a", "b"], ["1", "2"], ["x\ny", "3"], ["4", "5"]]
    rows = rows_of("a,b\n1,2\n" + "9," * 100 + "9\n3,4\n")
    assert rows[:2] == [["a", "b"], ["1", "2"]] and rows[3:] == [["3", "4"]]
    assert rows[2].reason == ("line 3: the row is longer than the limit of 60 characters (202); skipped, reading "
                              "went on at line 4")
    assert rows[2][0].startswith("9,9,") and rows[2][0].endswith("…[cut: 202 characters in all]")

    rows = rows_of('a,b\n1,"2\n' + "3,3\n" * 20 + "4,5\n")  # open until the limit: read again after line 2
    assert rows[1].reason.startswith("line 2: a quoted field opened here is not closed within 60 characters (line "
                                     "16); an unterminated quote? the row (from line 2) was skipped, reading went "
                                     "on at line 3")
    assert rows[2:] == [["3", "3"]] * 20 + [["4", "5"]]

    rows = rows_of('a,b\n1,2\n"x\ny",3\n5,"6\n7,8\n')  # a good multi-line field, then one open until the end
    assert rows[:3] == [["a", "b"], ["1", "2"], ["x\ny", "3"]] and rows[4:] == [["7", "8"]]
    assert rows[3].reason.startswith("line 5: a quoted field opened here is not closed by the end of the file")


def test_an_unreadable_row_is_a_reject_with_its_reason_even_with_one_column():
    row = csvrows.Unreadable("5.1…[unreadable]", "line 3: why")
    checked = validate(Table(["a"], [["1"], row]), ["a"])
    assert checked.numbers == [1] and checked.rejects == [(2, row, "line 3: why")]


def test_a_column_named_twice_is_an_input_error_in_csv_and_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    (tmp_path / "t.csv").write_text("a,b, a\n1,2,3\n")  # names are compared stripped
    with pytest.raises(InputError, match=r"the column 'a' appears twice in the header \(columns 1 and 3\)"):
        open_input(tmp_path / "t.csv")
    pq.write_table(pa.Table.from_arrays([pa.array([1.0]), pa.array([2.0])], names=["a", "a"]), tmp_path / "t.pq")
    with pytest.raises(InputError, match="the column 'a' appears twice"):
        open_input(tmp_path / "t.pq")
