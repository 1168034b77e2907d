"""What a cell of an input file must hold for each feature of the model (its kind, from ModelInfo.features), and
the rules that turn one cell into a value to score or into the reason its row is rejected.

- number: what CSV producers write (ASCII digits, sign, decimal point, exponent); from Parquet an int, float or
  decimal (or text under the same rule). NaN and infinities are rejected: a missing value is an empty cell.
- category: the text as read (not stripped, not case-folded: the server compares it with the training
  categories); from Parquet a string. A number or boolean is rejected, not cast (1.0 is not the category "1").
- boolean: true or false, in any case, blanks around allowed; from Parquet a bool (or that text). 1/0, yes/no
  and t/f are rejected: every other transport refuses anything but true and false.
- missing: an empty (or blank) CSV cell, a Parquet null; accepted where the feature is nullable, otherwise the
  row is rejected ("<feature>: missing value").
"""
from __future__ import annotations

import decimal
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

KINDS = ("number", "category", "boolean")


@dataclass(frozen=True)
class Field:
    """One feature as the input rules see it."""

    name: str
    kind: str = "number"
    nullable: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"feature {self.name!r} has kind {self.kind!r}; expected one of {', '.join(KINDS)}")


@dataclass(frozen=True)
class Schema:
    """The model's features in schema order. The matrix sent to the server holds the number and boolean features
    (`matrix_names`, booleans as 0/1, NaN = missing); the categorical ones go as string columns."""

    fields: tuple[Field, ...]

    @cached_property
    def names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields)

    @cached_property
    def matrix_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.kind != "category")

    @cached_property
    def category_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.kind == "category")


def schema_of(features: Sequence) -> Schema:
    """The Schema of ModelInfo.features (predmesh.types.FeatureSpec), of Fields, or of bare names (numbers)."""
    fields = []
    for f in features:
        if isinstance(f, Field):
            fields.append(f)
        elif isinstance(f, str):
            fields.append(Field(f))
        else:
            fields.append(Field(f.name, f.kind or "number", bool(f.nullable)))
    return Schema(tuple(fields))


# A number is what CSV producers write: ASCII digits with an optional sign, decimal point and exponent (and the
# spellings of NaN and infinity, which parse and are then rejected as not finite). float() alone would also take
# "5_1", full-width or Arabic-Indic digits and Unicode spaces; a Parquet value must be an int, float or decimal
# (a bool is not a number).
_NUMBER = re.compile(r"[ \t]*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf|infinity|nan)[ \t]*",
                     re.IGNORECASE | re.ASCII)
# The characters a number can have: a column whose text has only these is checked by float() alone (which then
# accepts exactly _NUMBER); a column with any other is checked cell by cell.
NUMBER_CHARS = b"0123456789+-.eE \tnNaAiIfFtTyY"
_BOOLEANS = {"true": True, "false": False}


def to_number(value) -> float:
    """The float of a cell under the number rule above; ValueError or TypeError when it is not a number."""
    kind = type(value)
    if kind is float or kind is int:
        return float(value)
    if kind is str:
        if _NUMBER.fullmatch(value) is None:
            raise ValueError(value)
        return float(value)
    if isinstance(value, decimal.Decimal):
        return float(value)
    raise TypeError(value)


def is_missing(value) -> bool:
    """An empty or blank CSV cell, a Parquet null."""
    return value is None or (type(value) is str and not value.strip())


def _shown(value) -> str:
    return repr(value) if len(str(value)) <= 40 else repr(str(value)[:40]) + "…"


def _float_takes(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def number_reason(name: str, value) -> str | None:
    """Why a (present) cell is not a number this feature can take; None when it is."""
    try:
        number = to_number(value)
    except (TypeError, ValueError):
        if isinstance(value, bool):
            return f"{name}: {value} is a boolean, not a number"
        return f"{name}: {_shown(value)} is not a number" + (
            " (write ASCII digits, an optional sign, a decimal point and an exponent only, e.g. 5.1 or -5.1e0)"
            if isinstance(value, str) and _float_takes(value) else "")
    if number != number:
        return f"{name}: NaN"
    if number in (float("inf"), float("-inf")):
        return f"{name}: infinite"
    return None


def to_boolean(value) -> bool:
    """A boolean cell's value: a bool, or the text true/false in any case; ValueError or TypeError otherwise."""
    if type(value) is bool:
        return value
    if type(value) is str:
        found = _BOOLEANS.get(value.strip(" \t").lower())
        if found is None:
            raise ValueError(value)
        return found
    raise TypeError(value)


def boolean_reason(name: str, value) -> str:
    """Why a (present) cell is not a boolean."""
    if isinstance(value, (int, float, decimal.Decimal)) and not isinstance(value, bool):
        return f"{name}: {_shown(value)} is a number, not a boolean (write true or false)"
    return f"{name}: {_shown(value)} is not a boolean (write true or false)"


def category_reason(name: str, value) -> str:
    """Why a (present) cell is not a category: only text is one (a Parquet number or bool is not cast)."""
    if isinstance(value, bool):
        what = "a boolean"
    elif isinstance(value, (int, float, decimal.Decimal)):
        what = "a number"
    else:
        what = f"a {type(value).__name__}"
    return (f"{name}: {_shown(value)} is {what}, not a category (this feature is categorical: its column must hold "
            "text; cast it to string)")


def missing_reason(name: str) -> str:
    return f"{name}: missing value"
