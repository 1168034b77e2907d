"""Input and output files of the pipeline: CSV (and Parquet when pyarrow is installed), row validation into
scorable rows and rejects, and atomic writes (luigi.LocalTarget temporary paths: a file appears whole or not)."""
from __future__ import annotations

import codecs
import csv
import hashlib
import io
import os
import random
import re
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain, islice
from operator import itemgetter
from pathlib import Path
from typing import Any, TextIO

import luigi
import numpy as np
import orjson

from batch.csvrows import Unreadable, csv_rows
from batch.outputs import refuse_non_regular
from batch.schema import (
    NUMBER_CHARS,
    Field,
    Schema,
    boolean_reason,
    category_reason,
    is_missing,
    missing_reason,
    number_reason,
    schema_of,
    to_boolean,
    to_number,
)

PARQUET_SUFFIXES = (".parquet", ".pq")


class InputError(Exception):
    """The input file cannot be used at all (missing, unreadable, no header, a feature column missing)."""


Target = luigi.LocalTarget | Path | str


def target_path(target: Target) -> Path:
    return Path(target if isinstance(target, (str, Path)) else target.path)


def is_parquet(target: Target) -> bool:
    return target_path(target).suffix.lower() in PARQUET_SUFFIXES


@contextmanager
def atomic_path(target: Target) -> Iterator[str]:
    """A temporary path next to the target, renamed onto it when the block completes (removed if it fails).

    A luigi.LocalTarget (a task output) uses its own temporary_path(), which refuses to replace an existing file;
    a plain path (a file the user named for `score`) is replaced with os.replace."""
    if isinstance(target, luigi.LocalTarget):
        Path(target.path).parent.mkdir(parents=True, exist_ok=True)
        with target.temporary_path() as tmp:
            yield tmp
        return
    path = Path(target)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}-luigi-tmp-{random.randrange(10**10):010}")
    try:
        yield str(tmp)
        refuse_non_regular(path, str(path))  # never replace a device, fifo, directory or link (batch.outputs)
        os.replace(tmp, path)
    except OSError as exc:  # name the user's file, not the temporary one
        raise OSError(exc.errno, f"cannot write {path}: {exc.strerror}") from exc
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def published_file(target: Target) -> Iterator[TextIO]:
    """A text file (UTF-8, newline="") that appears at target complete, and only when the block completes.

    Written as it goes into an unnamed file in the target's directory (O_TMPFILE), fsynced, then linked into
    place through atomic_path: memory holds none of it, and a killed process leaves nothing behind (the kernel
    frees an unnamed file with its last descriptor). Where the file system has no O_TMPFILE, the text is kept in
    memory and written the same way at the end."""
    directory = target_path(target).parent
    directory.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(directory, os.O_TMPFILE | os.O_RDWR, 0o666)
    except (OSError, AttributeError):  # no O_TMPFILE here (file system, platform)
        fd = None
    if fd is None:
        text = io.StringIO(newline="")
        yield text
        with atomic_path(target) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                f.write(text.getvalue())
                f.flush()
                os.fsync(f.fileno())
        return
    with open(fd, "w+", newline="", encoding="utf-8") as f:
        yield f
        f.flush()
        os.fsync(f.fileno())  # the link publishes complete bytes, also after a crash of the machine
        with atomic_path(target) as tmp:
            try:
                os.link(f"/proc/self/fd/{f.fileno()}", tmp)  # linkat(AT_SYMLINK_FOLLOW): name the unnamed file
            except OSError:  # no /proc: copy the bytes instead
                f.seek(0)
                with open(tmp, "w", newline="", encoding="utf-8") as copy:
                    shutil.copyfileobj(f, copy)
                    copy.flush()
                    os.fsync(copy.fileno())


def _pyarrow():
    try:
        import pyarrow
        import pyarrow.parquet
    except ImportError:
        raise InputError("Parquet needs pyarrow (pip install pyarrow); or use CSV") from None
    return pyarrow


def content_hash(path: Path) -> str:
    """SHA-256 of the file's bytes: with the row number it makes each row's request id (a rerun stores nothing
    twice; an edited file is a different input)."""
    return _scan(Path(path), text=False)[0]


def _scan(path: Path, text: bool) -> tuple[str, int]:
    """One streamed pass over the file: its SHA-256 and, for a text file (checked to be UTF-8), its line count."""
    if not path.is_file():
        raise InputError(f"input {path} does not exist or is not a file")
    digest = hashlib.sha256()
    utf8 = codecs.getincrementaldecoder("utf-8")()
    newlines = returns = offset = 0
    tail = b""
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
                if text:
                    try:
                        utf8.decode(block)
                    except UnicodeDecodeError as exc:
                        raise InputError(f"{path} is not UTF-8 text ({exc.reason} at byte {offset + exc.start}); "
                                         "CSV must be UTF-8") from None
                    newlines += block.count(b"\n")
                    returns += block.count(b"\r")
                offset += len(block)
                tail = block[-1:]
        if text:
            utf8.decode(b"", final=True)
    except UnicodeDecodeError as exc:  # the file ends inside a character
        raise InputError(f"{path} is not UTF-8 text ({exc.reason} at byte {offset - 1}); CSV must be UTF-8") from None
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    return digest.hexdigest(), max(newlines, returns) + (0 if tail in (b"", b"\n", b"\r") else 1)


@dataclass
class Table:
    """Rows as read: a header and, per row, its cells (strings from CSV; Python values from Parquet)."""

    columns: list[str]
    rows: list[list]


@dataclass
class Input:
    """An input file opened for scoring: the SHA-256 of its bytes (content_hash), its header, an estimate of its
    data rows (for progress: line count, exact unless a quoted cell spans lines) and its rows, parsed as they are
    taken (blocks()), so scoring starts after the first block rather than after the whole file, and memory holds
    a block of the input rather than all of it."""

    digest: str
    columns: list[str]
    estimated_rows: int
    rows: Iterator[list]
    schema: Any = None  # a Parquet input's pyarrow Schema (its columns' types and metadata); None for CSV

    def blocks(self, size: int) -> Iterator[list[list]]:
        """The rows, `size` at a time, in file order."""
        while block := list(islice(self.rows, size)):
            yield block


def open_input(path: Path) -> Input:
    """Hash the file, check that it is UTF-8 and count its lines in one streamed pass, read the header; the CSV
    rows are then parsed from the file as they are taken (memory holds a block, not the file).

    An unreadable or undecodable file, an unreadable header or a column named twice is an InputError here, before
    any row is scored; a row that cannot be read further down (over a limit, an unterminated quote: batch.csvrows)
    is taken as an Unreadable row, which validate() rejects with its reason."""
    path = Path(path)
    parquet = is_parquet(path)
    digest, lines = _scan(path, text=not parquet)
    if parquet:
        return _parquet_input(path, digest)
    try:
        f = open(path, newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror}") from None
    reader = csv_rows(f)
    header = next(reader, None)
    if isinstance(header, Unreadable):
        f.close()
        raise InputError(f"{path}: the header cannot be read: {header.reason}")
    if not header:
        f.close()
        raise InputError(f"{path} is empty; the first line must name the columns")
    try:
        columns = _columns(path, [h.strip() for h in header])
    except InputError:
        f.close()
        raise

    def rows() -> Iterator[list]:
        with f:
            yield from reader

    return Input(digest, columns, max(lines - 1, 0), rows())


def _columns(path: Path, names: list[str]) -> list[str]:
    """The header's names; a name given twice is an InputError (which of the two would be the feature?)."""
    seen: dict[str, int] = {}
    for i, name in enumerate(names, start=1):
        if name in seen:
            raise InputError(f"{path}: the column {name!r} appears twice in the header (columns {seen[name]} and "
                             f"{i}); rename or drop one")
        seen[name] = i
    return names


def _parquet_input(path: Path, digest: str) -> Input:
    """A Parquet file's rows, read by record batch as they are taken (its row count is in its metadata)."""
    pa = _pyarrow()
    try:
        parquet = pa.parquet.ParquetFile(path)
    except (OSError, pa.ArrowException) as exc:
        raise InputError(f"cannot read Parquet file {path}: {exc}") from None

    def rows() -> Iterator[list]:
        with parquet:
            try:
                for batch in parquet.iter_batches(batch_size=65_536):
                    yield from (list(r) for r in zip(*(column.to_pylist() for column in batch.columns)))
            except (OSError, pa.ArrowException) as exc:
                raise InputError(f"cannot read Parquet file {path}: {exc}") from None

    return Input(digest, _columns(path, list(parquet.schema_arrow.names)), parquet.metadata.num_rows, rows(),
                 parquet.schema_arrow)


def read_table(path: Path) -> Table:
    """The whole file as a Table (header and every row)."""
    source = open_input(path)
    return Table(source.columns, list(source.rows))


# The characters a number can have (batch.schema.NUMBER_CHARS) and the comma that joins a column's cells.
_COLUMN_CHARS = NUMBER_CHARS + b","


@dataclass
class Validated:
    """The rows split into scorable ones and rejects (row number, cells, reason). A scorable row's number and
    boolean features are a row of `matrix` (Schema.matrix_names; booleans 0/1, NaN = missing), its categorical
    ones an entry of each of `strings` (None = missing)."""

    matrix: np.ndarray  # good rows × Schema.matrix_names, schema order
    numbers: list[int] = field(default_factory=list)  # 1-based data row number of each good row
    rows: list[list] = field(default_factory=list)  # the good rows' cells as read
    rejects: list[tuple[int, list, str]] = field(default_factory=list)
    strings: dict[str, list[str | None]] = field(default_factory=dict)  # Schema.category_names → good rows' values


def _numbers_fast(column: Sequence) -> np.ndarray | None:
    """Every cell's float (float() of each, like the cell-by-cell path) with no Python code per cell; None when
    some cell is not a number under the rule (or is missing): the cell-by-cell path decides."""
    kinds = set(map(type, column))
    if kinds == {str}:  # the number rule, checked on the whole column at once
        text = ",".join(column)  # a comma is in no number: a cell with one fails float() below
        if not text.isascii() or text.encode("ascii").translate(None, _COLUMN_CHARS):
            return None
    elif not kinds <= {float, int}:
        return None
    try:
        return np.array(list(map(float, column)), dtype=np.float64)
    except (TypeError, ValueError):
        return None


def _number_column(column: Sequence, f: Field, errors: dict[int, str]) -> np.ndarray:
    """A number feature's values (NaN where missing or rejected); each rejected cell's reason goes to errors
    (setdefault: the reason of the row's shape, or of a feature earlier in the schema, is kept)."""
    parsed = _numbers_fast(column)
    if parsed is not None:  # every cell is a number: only NaN/±inf can make a reject
        bad = ~np.isfinite(parsed)
        if bad.any():
            for i in np.flatnonzero(bad).tolist():
                errors.setdefault(i, number_reason(f.name, column[i]) or "")
        return parsed
    out = np.empty(len(column))
    for i, value in enumerate(column):
        try:
            number = out[i] = to_number(value)
            if number - number == 0.0:  # finite
                continue
        except (TypeError, ValueError):
            out[i] = np.nan
            if is_missing(value):
                if not f.nullable:
                    errors.setdefault(i, missing_reason(f.name))
                continue
        errors.setdefault(i, number_reason(f.name, value) or "")
    return out


# The usual spellings of the booleans, looked up without Python code per cell (others go through to_boolean).
_BOOLEAN_TEXT = {text: float(value) for word, value in (("true", True), ("false", False))
                 for text in (word, word.upper(), word.capitalize())}


def _boolean_column(column: Sequence, f: Field, errors: dict[int, str]) -> np.ndarray:
    """A boolean feature's values as 0/1 (NaN where missing or rejected); reasons to errors as above."""
    kinds = set(map(type, column))
    if kinds == {bool}:
        return np.array(column, dtype=np.float64)
    if kinds == {str}:
        known = list(map(_BOOLEAN_TEXT.get, column))
        if None not in known:
            return np.array(known, dtype=np.float64)
    out = np.empty(len(column))
    for i, value in enumerate(column):
        try:
            out[i] = to_boolean(value)
            continue
        except (TypeError, ValueError):
            out[i] = np.nan
        if is_missing(value):
            if not f.nullable:
                errors.setdefault(i, missing_reason(f.name))
        else:
            errors.setdefault(i, boolean_reason(f.name, value))
    return out


def _category_column(column: Sequence, f: Field, errors: dict[int, str]) -> list[str | None]:
    """A categorical feature's values as read (None where missing or rejected); reasons to errors as above."""
    if set(map(type, column)) == {str}:
        out: list[str | None] = [v if v.strip() else None for v in column]
        if f.nullable or None not in out:
            return out
    else:
        out = [v if type(v) is str and v.strip() else None for v in column]
    for i, value in enumerate(column):
        if out[i] is None:
            if not is_missing(value):
                errors.setdefault(i, category_reason(f.name, value))
            elif not f.nullable:
                errors.setdefault(i, missing_reason(f.name))
    return out


def validate(table: Table, features: Schema | Sequence, first: int = 1) -> Validated:
    """Split rows into scorable and rejected (numbered from `first`: a block of a larger table) by the input
    rules of batch.schema, feature by feature over whole columns. features: the model's Schema (or what
    schema_of takes: FeatureSpecs, Fields, bare names = non-nullable numbers). A missing feature column is an
    InputError (nothing can be scored); other columns are carried through to the output. A rejected row's reason
    is its shape's (unreadable, too few or too many fields), else its first bad feature's in schema order."""
    schema = features if isinstance(features, Schema) else schema_of(features)
    missing = [n for n in schema.names if n not in table.columns]
    if missing:
        raise InputError(f"the input lacks the feature column(s) {', '.join(missing)} of the model (it has "
                         f"{', '.join(table.columns) or 'none'})")
    rows, width = table.rows, len(table.columns)
    count = len(rows)
    errors: dict[int, str] = {}
    if rows and (Unreadable in set(map(type, rows)) or min(map(len, rows)) != width or max(map(len, rows)) != width):
        filler = [""] * width  # a rejected row's stand-in, so that the columns stay aligned with the rows
        shaped = []
        for i, cells in enumerate(rows):
            if isinstance(cells, Unreadable):
                errors[i] = cells.reason
            elif len(cells) != width:
                errors[i] = f"the row has {len(cells)} fields; the header has {width}"
            shaped.append(filler if i in errors else cells)
        rows = shaped
    numeric: list[np.ndarray] = []
    strings: dict[str, list[str | None]] = {}
    for f in schema.fields:
        column = list(map(itemgetter(table.columns.index(f.name)), rows))
        if f.kind == "number":
            numeric.append(_number_column(column, f, errors))
        elif f.kind == "boolean":
            numeric.append(_boolean_column(column, f, errors))
        else:
            strings[f.name] = _category_column(column, f, errors)
    matrix = np.column_stack(numeric) if numeric and count else np.empty((count, len(numeric)))
    if not errors:
        return Validated(matrix, list(range(first, first + count)), table.rows, strings=strings)
    good = [i for i in range(count) if i not in errors]
    return Validated(np.ascontiguousarray(matrix[good]), [first + i for i in good], [table.rows[i] for i in good],
                     sorted(((first + i, table.rows[i], reason) for i, reason in errors.items()), key=lambda r: r[0]),
                     {name: [values[i] for i in good] for name, values in strings.items()})


def write_csv(target: Target, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Write a CSV atomically (published_file: fsynced, then named)."""
    with published_file(target) as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@contextmanager
def column_writer(target: Target, header: Sequence[str],
                  like: Any = None) -> Iterator[Callable[[Sequence[Sequence]], None]]:
    """Write a table by blocks of columns: yields add(columns) (one sequence per header name, equal lengths). CSV
    blocks are formatted and written as they come into a published_file, which appears complete when the
    with-block completes (a killed run leaves no partial file); Parquet is gathered and written at the end, its
    first columns typed as `like` (a Parquet input's schema, see write_parquet)."""
    if is_parquet(target):
        collected: list[list] = [[] for _ in header]

        def gather(columns: Sequence[Sequence]) -> None:
            for into, column in zip(collected, columns):
                into.extend(column)

        yield gather
        write_parquet(target, dict(zip(header, collected)), like)
        return
    with published_file(target) as f:
        writer = csv.writer(f)
        writer.writerow(header)

        def add(columns: Sequence[Sequence]) -> None:
            fast = _csv_template(columns)
            if fast is None:
                writer.writerows(zip(*columns))
            else:
                parts = fast.rstrip("\r\n").split(",")
                columns = [_repr_texts(c) if part == "%r" else c for c, part in zip(columns, parts)]
                f.write((fast.replace("%r", "%s") * len(columns[0])) % tuple(chain.from_iterable(zip(*columns))))

        yield add


_NEEDS_QUOTES = (",", '"', "\r", "\n")


def _repr_texts(column: Sequence[float]) -> Sequence[str] | Sequence[float]:
    """repr() of each float of a column, made in C: orjson writes the same shortest digits (Ryu), ~5x faster than a
    repr per value (the probability columns were a quarter of the client's CPU on a big file), and spells a number
    the way repr does except below 1e-4 or from 1e16 on (0.00001 for 1e-05, 1e-7 for 1e-07): those few take repr.
    A column holding NaN or ±inf stays as it is (csv.writer spells them nan, inf)."""
    values = np.array(column, dtype=np.float64)
    if not np.isfinite(values).all():
        return column
    texts = orjson.dumps(values, option=orjson.OPT_SERIALIZE_NUMPY).decode()[1:-1].split(",")
    size = np.abs(values)
    for i in np.flatnonzero(((size < 1e-4) & (size > 0)) | (size >= 1e16)).tolist():
        texts[i] = repr(column[i])
    return texts


def _csv_template(columns: Sequence[Sequence]) -> str | None:
    """A %-format line for rows of these columns that writes exactly what csv.writer (excel dialect) writes, or
    None when some column needs csv.writer: text that must be quoted, or values neither str nor float. Whole
    columns are checked at once, and one format call then writes a whole block (no Python code per row)."""
    if len(columns) < 2 or not len(columns[0]):
        return None
    parts = []
    for column in columns:
        kinds = set(map(type, column))
        if kinds == {str}:
            joined = "\x00".join(column)
            if any(c in joined for c in _NEEDS_QUOTES):
                return None
            parts.append("%s")
        elif kinds == {float}:
            parts.append("%r")  # csv.writer writes str(float), which is repr(float) (add: _repr_texts)
        else:
            return None
    return ",".join(parts) + "\r\n"


def write_parquet(target: Target, columns: dict[str, list], like: Any = None) -> None:
    """Write a Parquet file atomically (atomic_path). With `like` (the pyarrow Schema of the Parquet file the
    first columns were read from, in its order), those columns keep the input's types (int8, float32,
    dictionary, large_string, timestamp units and zones, decimal precision: inferring them from the Python
    values would widen or change each) and the file keeps the input's metadata (pandas' dtypes, e.g. a nullable
    Int64 read back as Int64, not float64); the columns added after them are inferred."""
    pa = _pyarrow()
    types = list(like.types) if like is not None else []
    arrays = [_typed_array(pa, values, types[i] if i < len(types) else None)
              for i, values in enumerate(columns.values())]
    table = pa.table(dict(zip(columns, arrays)))
    if like is not None and like.metadata:
        table = table.replace_schema_metadata(like.metadata)
    with atomic_path(target) as tmp:
        pa.parquet.write_table(table, tmp)


def _typed_array(pa: Any, values: list, arrow_type: Any):
    """The values as an arrow array of arrow_type (values read from a column of that type convert back
    exactly); inferred when there is no type or the values do not fit it."""
    if arrow_type is not None:
        try:
            return pa.array(values, type=arrow_type)
        except (pa.ArrowException, TypeError, ValueError):
            pass
    return pa.array(values)


# A temporary file of ours: <output name>-luigi-tmp-<digits> (luigi.LocalTarget.temporary_path, atomic_path).
_TEMPORARY = re.compile(r"(?P<name>.+)-luigi-tmp-\d{9,10}")
STALE_AFTER_S = 600.0  # a temporary untouched this long belongs to no live run (outputs are written in seconds)


def remove_stale_temporaries(directory: Path, names: Iterable[str] | None = None,
                             older_than_s: float = STALE_AFTER_S) -> list[Path]:
    """Delete the temporaries a killed run left behind in directory: only files named as ours (luigi's
    `<name>-luigi-tmp-<digits>`, and with names given only for those outputs), only regular files, only when
    untouched for older_than_s seconds (a concurrent run's temporary is being written; it is left alone).
    Returns what was deleted."""
    if not directory.is_dir():
        return []
    wanted = set(names) if names is not None else None
    cutoff = time.time() - older_than_s
    stale = []
    for p in directory.iterdir():
        m = _TEMPORARY.fullmatch(p.name)
        if m is None or (wanted is not None and m["name"] not in wanted):
            continue
        try:
            st = p.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff:
            p.unlink(missing_ok=True)
            stale.append(p)
    return stale
