"""CSV rows read with bounds: a row is at most ROW_LIMIT characters and a field at most csv's field limit; a row
over a limit, a field over the limit, or a quoted field still open at the limit or at the end of the file becomes
one unreadable row (its beginning, cut, and the reason with its line number), and reading goes on.

Where reading goes on: after an over-long line or a field over the limit, at the next line; after a quoted field
that is never closed (an unterminated quote), at the line after the one where that quote opened, so the rows it
would have swallowed are read as rows."""
from __future__ import annotations

import csv
from collections import deque
from collections.abc import Iterator
from typing import TextIO

ROW_LIMIT = 1_048_576  # characters in one row (its quoted line breaks included): 1 MiB of ASCII
SHOWN = 200  # characters of an unreadable row carried into the rejects file
_READ = 1 << 20  # characters read at a time while skipping the rest of an over-long line


class Unreadable(list):
    """A row that could not be read as CSV: its one cell is the beginning of its text, cut with a marker (never a
    number), and `reason` says why and where (validate() rejects it with that reason)."""

    def __init__(self, text: str, reason: str):
        super().__init__([text])
        self.reason = reason


class _Unreadable(Exception):
    """Raised through csv.reader by the lines it reads: the record cannot be read (carries the reject)."""

    def __init__(self, row: Unreadable):
        super().__init__(row.reason)
        self.row = row


def _cut(text: str, total: int) -> str:
    """The beginning of an unreadable row's text, with a marker saying how much there was (never a number)."""
    head = text[:SHOWN].rstrip("\r\n")
    return f"{head}…[cut: {total:,} characters in all]" if total > SHOWN else f"{head}…[unreadable]"


class _Lines:
    """The file's lines for csv.reader, each at most ROW_LIMIT characters; the lines of the record being read are
    kept (at most ROW_LIMIT characters in all), so that a bad record can be reported and the lines after an
    unterminated quote read again (replayed) instead of lost."""

    def __init__(self, f: TextIO):
        self.readline = f.readline
        self.number = 0  # lines read from the file
        self.at = 0  # the number of the last line handed out (read, or replayed)
        self.record: list[str] = []  # the lines of the record being read (numbered up to self.at)
        self.size = 0  # characters in self.record
        self.replay: deque[tuple[int, str]] = deque()
        self.eof = False  # csv.reader asked for a line after the last one

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.replay:
            self.at, line = self.replay.popleft()
        else:
            line = self.readline(ROW_LIMIT + 1)
            if not line:
                self.eof = True
                raise StopIteration
            self.number = self.at = self.number + 1
            if len(line) > ROW_LIMIT:
                raise _Unreadable(self._over_long(line))
        self.record.append(line)
        self.size += len(line)
        if self.size > ROW_LIMIT:
            raise _Unreadable(self.unterminated(f"is not closed within {ROW_LIMIT:,} characters (line {self.at})"))
        return line

    def done(self) -> None:
        """The record was returned as a row, or dropped."""
        self.record.clear()
        self.size = 0

    def _first(self) -> int:
        return self.at - len(self.record) + 1

    def _over_long(self, line: str) -> Unreadable:
        total, head, number = len(line), line, self.at
        while not line.endswith(("\n", "\r")):  # skip the rest of the line, a block at a time
            line = self.readline(_READ)
            if not line:
                break
            total += len(line)
        where = f"lines {number - len(self.record)}-{number}" if self.record else f"line {number}"
        if self.record:  # the line continues a record (a quoted field opened on an earlier line)
            head, total = self.record[0], total + self.size
        self.done()
        return Unreadable(_cut(head, total), f"{where}: the row is longer than the limit of {ROW_LIMIT:,} characters "
                                             f"({total:,}); skipped, reading went on at line {number + 1}")

    def unterminated(self, how: str) -> Unreadable:
        """The record ends inside a quoted field: reject the lines up to the one where the quote opened, and read
        the lines after it again."""
        opened, count = 0, 0
        for i, line in enumerate(self.record):  # the last line where the count of quotes turns odd
            before = count
            count += line.count('"')
            if before % 2 == 0 and count % 2 == 1:
                opened = i
        first = self._first()
        rejected, again = self.record[:opened + 1], self.record[opened + 1:]
        self.replay.extendleft(reversed(list(enumerate(again, start=first + opened + 1))))
        self.done()
        self.eof = False
        quote_line = first + opened
        return Unreadable(_cut("".join(rejected[:2]), sum(map(len, rejected))),
                          f"line {quote_line}: a quoted field opened here {how}; an unterminated quote? the row "
                          f"(from line {first}) was skipped, reading went on at line {quote_line + 1}")

    def skip(self, error: csv.Error) -> Unreadable:
        """csv.reader refused the record (a field over its limit): reject it, go on at the next line."""
        first, text, total = self._first(), "".join(self.record[:2]), self.size
        self.done()
        why = (f"a field is longer than the limit of {csv.field_size_limit():,} characters"
               if "field limit" in str(error) else f"not valid CSV ({error})")
        return Unreadable(_cut(text, total), f"line {first}: {why}; skipped, reading went on at line {self.at + 1}")


def csv_rows(f: TextIO) -> Iterator[list]:
    """The rows of a CSV file (after its header), read under the limits of this module: an unreadable record is
    yielded as an Unreadable row (validate() rejects it with its reason)."""
    lines = _Lines(f)
    reader = csv.reader(lines)
    record = lines.record
    while True:
        try:
            for row in reader:
                if lines.eof:  # the row was completed by the end of the file: a quoted field was still open
                    yield lines.unterminated("is not closed by the end of the file")
                    continue
                record.clear()  # lines.done(), inline: this runs once per row
                lines.size = 0
                yield row
            return
        except _Unreadable as exc:
            yield exc.row
        except csv.Error as exc:
            yield lines.skip(exc)
