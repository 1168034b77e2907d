"""The user's own column names: which input column holds which feature of the model (`--map feature=column`,
repeatable, and `--map-file FILE`), checked before any row is scored.

A mapping file is a CSV (UTF-8) whose header is `feature,column`, then one line per mapped feature; a name with a
comma or a quote is quoted as CSV does (`sepal_length,"Sepal length, cm"`). A feature not mapped is read from the
column of its own name. A mapped column is read as that feature; a column that merely carries a feature's name
while another column is mapped to that feature is carried through like any other column."""
from __future__ import annotations

import csv
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path

from batch.table import InputError

FILE_HEADER = ["feature", "column"]


class MappingError(InputError):
    """A mapping that cannot be used (the message names the option, the feature and the column)."""


def parse_option(text: str) -> tuple[str, str]:
    """One `--map feature=column` (split at the first '='; spaces around either name are dropped)."""
    feature, sep, column = text.partition("=")
    feature, column = feature.strip(), column.strip()
    if not sep or not feature or not column:
        raise MappingError(f"--map {text!r}: write feature=column, e.g. --map 'sepal_length=Sepal Length (cm)'")
    return feature, column


def read_file(path: Path) -> list[tuple[str, str, str]]:
    """(feature, column, where) of each line of a mapping file (format in the module's docstring)."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise MappingError(f"--map-file {path}: cannot read it ({exc})") from None
    if not lines or [c.strip().lower() for c in lines[0]] != FILE_HEADER:
        raise MappingError(f"--map-file {path}: the first line must be the header feature,column")
    pairs = []
    for number, cells in enumerate(lines[1:], start=2):
        if not any(c.strip() for c in cells):
            continue  # a blank line
        if len(cells) != 2 or not cells[0].strip() or not cells[1].strip():
            raise MappingError(f"--map-file {path}: line {number} must be feature,column (two non-empty names)")
        pairs.append((cells[0].strip(), cells[1].strip(), f"--map-file {path} line {number}"))
    return pairs


def build(options: Iterable[str] = (), file: Path | None = None) -> dict[str, str]:
    """feature → column from the file's lines then the --map options; a feature mapped twice or a column mapped
    to two features is a MappingError."""
    pairs = read_file(file) if file is not None else []
    pairs += [(*parse_option(o), f"--map {o!r}") for o in options]
    mapping: dict[str, str] = {}
    where: dict[str, str] = {}
    by_column: dict[str, str] = {}
    for feature, column, source in pairs:
        if feature in mapping:
            raise MappingError(f"the feature {feature!r} is mapped twice ({where[feature]} to {mapping[feature]!r}, "
                               f"{source} to {column!r}); map it once")
        if column in by_column:
            raise MappingError(f"the column {column!r} is mapped to two features ({by_column[column]!r} and "
                               f"{feature!r}, {source}); map a column to one feature")
        mapping[feature], where[feature], by_column[column] = column, source, feature
    return mapping


def feature_columns(columns: Sequence[str], mapping: dict[str, str], features: Sequence[str],
                    model: str) -> list[str]:
    """The input's column names as the feature rules read them: each mapped column renamed to its feature, and a
    column that has a mapped feature's own name renamed out of the way (carried, not read), and a column that is
    a feature's name in another Unicode normalisation form, or with the spaces around it trimmed, renamed to it.
    MappingError for a feature the model does not have or a mapped column the input does not have."""
    unknown = [f for f in mapping if f not in features]
    if unknown:
        raise MappingError(f"--map: {', '.join(map(repr, unknown))} is not a feature of model {model} (its features: "
                           f"{', '.join(features)})")
    absent = [f"{c!r} (for {f!r})" for f, c in mapping.items() if c not in columns]
    if absent:
        raise MappingError(f"--map: the input has no column {', '.join(absent)} (it has "
                           f"{', '.join(map(repr, columns)) or 'none'})")
    read_as = {column: feature for feature, column in mapping.items()}
    names = [read_as[c] if c in read_as else ("\x00carried:" + c if c in mapping else c) for c in columns]
    # A feature whose column is spelled in another Unicode normalisation form (a header written on macOS: "é" as
    # "e" + U+0301), or whose name has spaces around it (a model trained on a header " Contract": the CSV header is
    # read trimmed), is read from that column, when exactly one column has that text.
    wanted = {_form(f): f for f in features if f not in names}
    if wanted:
        forms = [_form(c) for c in names]
        for i, form in enumerate(forms):
            if form in wanted and names[i] not in features and forms.count(form) == 1:
                names[i] = wanted[form]
    return names


def _form(name: str) -> str:
    """A column or feature name as feature_columns compares a feature it did not find as written: NFC, trimmed."""
    return unicodedata.normalize("NFC", name).strip()
