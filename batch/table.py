"""Input and output files of the pipeline: CSV (and Parquet when pyarrow is installed), row validation into
scorable rows and rejects, and atomic writes (luigi.LocalTarget temporary paths: a file appears whole or not)."""
from __future__ import annotations

import codecs
import csv
import decimal
import hashlib
import io
import math
import os
import random
import re
import shutil
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import chain, islice
from pathlib import Path
from typing import TextIO

import luigi
import numpy as np

from batch.csvrows import Unreadable, csv_rows
from batch.outputs import refuse_non_regular

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

    return Input(digest, _columns(path, list(parquet.schema_arrow.names)), parquet.metadata.num_rows, rows())


def read_table(path: Path) -> Table:
    """The whole file as a Table (header and every row)."""
    source = open_input(path)
    return Table(source.columns, list(source.rows))


@dataclass
class Validated:
    """The rows split into scorable ones (their features in schema order, as one float64 matrix) and rejects (row
    number, cells, reason)."""

    matrix: np.ndarray  # good rows × features, schema order
    numbers: list[int] = field(default_factory=list)  # 1-based data row number of each good row
    rows: list[list] = field(default_factory=list)  # the good rows' cells as read
    rejects: list[tuple[int, list, str]] = field(default_factory=list)


# A number is what CSV producers write: ASCII digits with an optional sign, decimal point and exponent (and the
# spellings of NaN and infinity, which parse and are then rejected as not finite). float() alone would also take
# "5_1", full-width or Arabic-Indic digits and Unicode spaces; a Parquet value must be an int, float or decimal
# (a bool is not a number).
_NUMBER = re.compile(r"[ \t]*[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:e[+-]?\d+)?|inf|infinity|nan)[ \t]*",
                     re.IGNORECASE | re.ASCII)
# The characters a number can have: a column whose text has only these is checked by float() alone (which then
# accepts exactly _NUMBER); a column with any other is checked row by row.
_NUMBER_CHARS = b"0123456789+-.eE \tnNaAiIfFtTyY"
_COLUMN_CHARS = _NUMBER_CHARS + b","  # and the comma that joins a column's cells


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


def _reason(cells: list, names: Sequence[str], positions: Sequence[int], width: int) -> str:
    """Why a row cannot be scored (the slow path, only for rows that failed the fast one)."""
    if isinstance(cells, Unreadable):
        return cells.reason
    if len(cells) != width:
        return f"the row has {len(cells)} fields; the header has {width}"
    for name, i in zip(names, positions):
        value = cells[i]
        if value is None or (isinstance(value, str) and not value.strip()):
            return f"{name}: missing value"
        try:
            number = to_number(value)
        except (TypeError, ValueError):
            if isinstance(value, bool):
                return f"{name}: {value} is a boolean, not a number"
            shown = repr(value) if len(str(value)) <= 40 else repr(str(value)[:40]) + "…"
            return f"{name}: {shown} is not a number" + (
                " (write ASCII digits, an optional sign, a decimal point and an exponent only, e.g. 5.1 or -5.1e0)"
                if isinstance(value, str) and _float_takes(value) else "")
        if math.isnan(number):
            return f"{name}: NaN"
        if math.isinf(number):
            return f"{name}: infinite"
    return "unreadable row"


def _float_takes(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _parse_columns(rows: list[list], positions: Sequence[int], width: int) -> np.ndarray | None:
    """Every row's features as floats (float() of each cell, like the per-row path), column by column with no
    Python code per row; None when some row is short/long or some cell is not a number (the slow path decides)."""
    if not rows:
        return np.empty((0, len(positions)))
    if min(map(len, rows)) != width or max(map(len, rows)) != width:
        return None
    columns = list(zip(*rows))
    for i in positions:  # the number rule, checked per column (whole columns at once, no Python code per row)
        kinds = set(map(type, columns[i]))
        if kinds == {str}:
            text = ",".join(columns[i])  # a comma is in no number: a cell with one fails float() below
            if not text.isascii() or text.encode("ascii").translate(None, _COLUMN_CHARS):
                return None
        elif not kinds <= {float, int}:
            return None
    try:
        return np.array([list(map(float, columns[i])) for i in positions], dtype=np.float64).T
    except (TypeError, ValueError):
        return None


def validate(table: Table, feature_names: Sequence[str], first: int = 1) -> Validated:
    """Split rows into scorable and rejected (numbered from `first`: a block of a larger table). A missing feature
    column is an InputError (nothing can be scored); other columns are carried through to the output."""
    missing = [n for n in feature_names if n not in table.columns]
    if missing:
        raise InputError(f"the input lacks the feature column(s) {', '.join(missing)} of the model (it has "
                         f"{', '.join(table.columns) or 'none'})")
    positions = [table.columns.index(n) for n in feature_names]
    names = list(feature_names)
    width = len(table.columns)
    parsed = _parse_columns(table.rows, positions, width)
    if parsed is not None:  # every cell is a number: only NaN/±inf can make a reject
        finite = np.isfinite(parsed).all(axis=1)
        if finite.all():
            return Validated(np.ascontiguousarray(parsed), list(range(first, first + len(table.rows))), table.rows)
        good = np.flatnonzero(finite).tolist()
        rejects = [(first + i, table.rows[i], _reason(table.rows[i], names, positions, width))
                   for i in np.flatnonzero(~finite).tolist()]
        return Validated(np.ascontiguousarray(parsed[finite]), [first + i for i in good],
                         [table.rows[i] for i in good], rejects)
    values_of_good: list[list[float]] = []
    out = Validated(np.empty((0, len(names))))
    for number, cells in enumerate(table.rows, start=first):
        try:
            if len(cells) != width:
                raise ValueError
            values = [to_number(cells[i]) for i in positions]
            total = sum(values)
            if total - total != 0.0:  # NaN or ±inf somewhere
                raise ValueError
        except (TypeError, ValueError):
            out.rejects.append((number, cells, _reason(cells, names, positions, width)))
            continue
        values_of_good.append(values)
        out.numbers.append(number)
        out.rows.append(cells)
    out.matrix = np.array(values_of_good, dtype=np.float64).reshape(len(values_of_good), len(names))
    return out


def write_csv(target: Target, header: Sequence[str], rows: Iterable[Sequence]) -> None:
    """Write a CSV atomically (published_file: fsynced, then named)."""
    with published_file(target) as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


@contextmanager
def column_writer(target: Target, header: Sequence[str]) -> Iterator[Callable[[Sequence[Sequence]], None]]:
    """Write a table by blocks of columns: yields add(columns) (one sequence per header name, equal lengths). CSV
    blocks are formatted and written as they come into a published_file, which appears complete when the
    with-block completes (a killed run leaves no partial file); Parquet is gathered and written at the end."""
    if is_parquet(target):
        collected: list[list] = [[] for _ in header]

        def gather(columns: Sequence[Sequence]) -> None:
            for into, column in zip(collected, columns):
                into.extend(column)

        yield gather
        write_parquet(target, dict(zip(header, collected)))
        return
    with published_file(target) as f:
        writer = csv.writer(f)
        writer.writerow(header)

        def add(columns: Sequence[Sequence]) -> None:
            fast = _csv_template(columns)
            if fast is None:
                writer.writerows(zip(*columns))
            else:
                f.write((fast * len(columns[0])) % tuple(chain.from_iterable(zip(*columns))))

        yield add


_NEEDS_QUOTES = (",", '"', "\r", "\n")


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
            parts.append("%r")  # csv.writer writes str(float), which is repr(float)
        else:
            return None
    return ",".join(parts) + "\r\n"


def write_parquet(target: Target, columns: dict[str, list]) -> None:
    """Write a Parquet file atomically (atomic_path)."""
    pa = _pyarrow()
    with atomic_path(target) as tmp:
        pa.parquet.write_table(pa.table(columns), tmp)


def remove_stale_temporaries(directory: Path) -> list[Path]:
    """Delete temporary files a killed run left behind (luigi's `<name>-luigi-tmp-<n>`); returns them."""
    if not directory.is_dir():
        return []
    stale = [p for p in directory.iterdir() if "-luigi-tmp-" in p.name]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
