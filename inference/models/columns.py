"""A user's table (CSV or Parquet) → columns of a known kind (number, category, boolean) and rows of plain values.

The kinds are those of inference/models/manifest.py: a column of numbers is a "number"; true/false values (a bool
column, or strings that are all true/false) a "boolean"; any other column of strings a "category". A row of plain
values holds, in column order, a float, a str, a bool or None (missing), the form inference/models/frame.py turns
into an estimator's input, the same in training, import checks and serving.
"""
from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from inference.bounds import MAX_LABEL, shown
from inference.errors import InvalidArgument

PARQUET_SUFFIXES = (".parquet", ".pq")
# A text column with more distinct values than this, and more than half of its values distinct, is an identifier or
# free text rather than a category (e.g. a customer id): training refuses it and names it for --drop.
MAX_TEXT_CATEGORIES = 50
_TRUE, _FALSE = frozenset({"true"}), frozenset({"false"})


class TableError(InvalidArgument):
    """A data file, a column or a model that cannot be used as asked; the message names the file or column."""


def read_table(path: Path) -> pd.DataFrame:
    """The rows of a CSV or Parquet file (by suffix: .parquet/.pq is Parquet, anything else CSV)."""
    path = Path(path)
    if not path.is_file():
        raise TableError(f"cannot read {path}: no such file")
    try:
        if path.suffix.lower() in PARQUET_SUFFIXES:
            return pd.read_parquet(path)
        return _blanks_missing(pd.read_csv(path))
    except ImportError as exc:  # pandas needs pyarrow (or fastparquet) for Parquet
        raise TableError(f"cannot read {path}: Parquet needs pyarrow ({exc})") from None
    except (OSError, ValueError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        # EmptyDataError and ParserError are ValueErrors; pyarrow's ArrowInvalid is one too
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise TableError(f"cannot read {path}: {reason}") from None


def _blanks_missing(table: pd.DataFrame) -> pd.DataFrame:
    """A CSV's blank cells (spaces only, e.g. a spreadsheet's " " for no value) as missing values, as the batch
    reads them; a column that read as text only because of them becomes the numbers it holds."""
    for name in table.columns:
        column = table[name]
        if not (pd.api.types.is_object_dtype(column.dtype) or pd.api.types.is_string_dtype(column.dtype)):
            continue
        blank = column.map(lambda v: isinstance(v, str) and not v.strip(), na_action="ignore")
        blank = blank.astype(object).fillna(False).astype(bool)
        if not blank.any():
            continue
        column = column.mask(blank)
        numbers = pd.to_numeric(column, errors="coerce")
        table[name] = numbers if numbers.notna().sum() == column.notna().sum() else column
    return table


def kind_of(column: pd.Series, *, limit_text: bool = True) -> str:
    """The kind of a column: "number", "boolean" or "category". A column with no value at all, of a type that is
    none of these (dates, lists) or (limit_text) a text column that looks like an identifier raises TableError.
    limit_text=False is an import's sample: the model takes the column, so the message says what to do instead
    of --drop (import has no --drop)."""
    name = column.name
    values = column.dropna()
    if values.empty:
        if not limit_text:
            raise TableError(f"sample column {name!r} is empty (no row has a value); the model takes it, so give a "
                             "sample in which it has values")
        raise TableError(f"column {name!r} is empty (no row has a value): drop it (--drop {shlex.quote(str(name))})")
    if pd.api.types.is_bool_dtype(column.dtype):
        return "boolean"
    if pd.api.types.is_numeric_dtype(column.dtype):
        return "number"
    if pd.api.types.is_datetime64_any_dtype(column.dtype) or pd.api.types.is_timedelta64_dtype(column.dtype):
        remedy = (f"drop it (--drop {shlex.quote(str(name))})" if limit_text else
                  "refit the model on what you derive from it")
        raise TableError(f"column {name!r} holds dates or times: derive numbers from it (e.g. days since) or "
                         f"{remedy}")
    kinds = {type(v) for v in values}
    if kinds <= {bool, np.bool_}:
        return "boolean"
    if kinds <= {str} and set(values.str.lower().unique()) <= _TRUE | _FALSE:
        return "boolean"
    if not kinds <= {str, int, float, bool, np.str_, np.bool_, np.int64, np.float64}:
        shown = ", ".join(sorted(t.__name__ for t in kinds))
        remedy = f"drop it (--drop {shlex.quote(str(name))})" if limit_text else "refit the model without it"
        raise TableError(f"column {name!r} holds values of type {shown}, which are neither numbers, categories nor "
                         f"booleans: {remedy}")
    distinct = values.astype(str).nunique()
    if limit_text and distinct > MAX_TEXT_CATEGORIES and distinct > len(values) / 2:
        numbers = pd.to_numeric(values, errors="coerce")
        if numbers.notna().sum() >= len(values) / 2:  # numbers but for a few cells: say which, not "an id"
            others = values[numbers.isna()]
            shown = ", ".join(repr(v) for v in others.astype(str).unique()[:3])
            raise TableError(f"column {name!r} is text: {numbers.notna().sum()} of its {len(values)} values are "
                             f"numbers, but {len(others)} are not ({shown}); make those cells empty (missing) or "
                             f"numbers, or drop it (--drop {shlex.quote(str(name))})")
        raise TableError(f"column {name!r} has {distinct} distinct text values in {len(values)} rows: it looks like "
                         f"an identifier or free text, not a category; drop it (--drop {shlex.quote(str(name))})")
    return "category"


def plain_column(column: pd.Series, kind: str) -> np.ndarray:
    """A column as an object array of plain values of its kind: float, str or bool; None where it is missing."""
    missing = column.isna().to_numpy()
    out = np.empty(len(column), dtype=object)
    if kind == "number":
        out[:] = column.to_numpy(dtype=np.float64, na_value=np.nan)
    elif kind == "boolean":  # a missing value (None, NaN, pd.NA of a nullable "boolean" column) is never asked
        out[:] = [None if gap else v if isinstance(v, bool) else str(v).lower() == "true" if isinstance(v, str)
                  else bool(v) for v, gap in zip(column.to_numpy(dtype=object), missing)]
    else:
        out[:] = [str(v) for v in column.to_numpy(dtype=object)]
    out[missing] = None
    return out


def plain_rows(table: pd.DataFrame, names: Sequence[str], kinds: Sequence[str]) -> np.ndarray:
    """The named columns of a table as an object matrix of plain values (rows × features, schema order)."""
    matrix = np.empty((len(table), len(names)), dtype=object)
    for i, (name, kind) in enumerate(zip(names, kinds)):
        matrix[:, i] = plain_column(table[name], kind)
    return matrix


def labels(table: pd.DataFrame, target: str) -> np.ndarray:
    """The target column as class labels (strings, integers or booleans; integral floats become integers).
    Rows whose target is missing must have been dropped."""
    column = table[target]
    if pd.api.types.is_bool_dtype(column.dtype):
        return column.to_numpy(dtype=bool)
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.to_numpy(dtype=np.int64)
    if pd.api.types.is_float_dtype(column.dtype):
        values = column.to_numpy(dtype=np.float64)
        if not np.all(np.isfinite(values)) or not np.all(values == np.round(values)):
            raise TableError(f"target column {target!r} holds non-integer numbers; a classifier needs classes "
                             f"(strings, integers or booleans)")
        return values.astype(np.int64)
    values = column.to_numpy(dtype=object)
    if all(isinstance(v, (bool, np.bool_)) for v in values):
        return values.astype(bool)
    return np.asarray([str(v) for v in values], dtype=object)


def check_classes(classes: Sequence[str], where: str) -> None:
    """Refuse class labels the API could never take back: feedback and the label filter accept 1 to MAX_LABEL
    printable characters, so a model predicting any other label could never be given feedback for it (nor its
    accuracy measured). where names the file or column the classes come from."""
    for label in classes:
        if not label or len(label) > MAX_LABEL or not label.isprintable():
            raise TableError(f"{where}: class {shown(label)} cannot be a class label: feedback and the label filter "
                             f"take 1 to {MAX_LABEL} printable characters (no newline or other control character)")
