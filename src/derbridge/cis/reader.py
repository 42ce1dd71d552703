"""Stream a CIS extract file in chunks of validated rows, collecting rejected rows with line numbers.

The file is read once, whatever the number of systems it is loaded into, and never held whole in
memory: it is cut into blocks of whole lines, and each block becomes Arrow columns, validated with
:func:`derbridge.cis.extract.validate_columns`.

A block is parsed by Arrow's CSV reader (C++, no Python object per field) when that cannot change the
outcome: no quote, no NUL, no lone carriage return, and exactly one row per line. Any other block —
quoted fields, blank lines, rows with the wrong number of fields, bytes that are not UTF-8 — goes
through Python's ``csv`` module row by row, exactly as the reader always did, so that every rejected row
keeps its line number and reason.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from derbridge.cis.extract import (
    CIS_COLUMNS,
    ExtractHeaderError,
    RejectedRow,
    check_header,
    validate_columns,
)

DEFAULT_CHUNK_ROWS = 100_000
"""Valid rows per chunk handed to the loaders (each loads a chunk in one transaction)."""
BLOCK_BYTES = 8 * 1024 * 1024
"""Bytes of the file parsed at once (about 40,000 rows): bounds memory whatever the file's size."""
_LONGEST_BLOCK = 16 * BLOCK_BYTES
"""An odd number of quotes (a broken file) must not pull the rest of the file into one block."""


@dataclass
class ReadTally:
    """What the reader has seen so far."""

    read: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)


def _line_ends(data: bytes) -> int:
    # What Python's csv reader counts as lines over a text opened with newline="": \n, \r\n and a lone \r.
    return data.count(b"\n") + data.count(b"\r") - data.count(b"\r\n")


def _blocks(raw: IO[bytes]) -> Iterator[bytes]:
    """Whole lines of ``raw``, cut only where a record must begin (see :func:`_safe_cut`)."""
    pending = b""
    while True:
        data = raw.read(BLOCK_BYTES)
        if not data:
            if pending:
                yield pending
            return
        pending += data
        cut = _safe_cut(pending)
        if cut < 0 and len(pending) >= _LONGEST_BLOCK:
            cut = pending.rfind(b"\n")
        if cut >= 0:
            yield pending[: cut + 1]
            pending = pending[cut + 1 :]


_ANCHOR_LINES = 64
"""Lines looked back from the end of the data for a complete row to cut before."""


def _safe_cut(data: bytes) -> int:
    """The newline of ``data`` after which a record must begin, or -1.

    Without quotes every line is a record. With quotes, the cut goes just before a line that is a
    complete row by itself: the reader never continues a quoted field onto such a line (see
    :class:`_Lines`), so a record begins there whatever came before, an unterminated quote included.
    Failing that (rows with too few fields everywhere), the cut goes where an even number of quotes
    has been seen, as the reader always did.
    """
    if b'"' not in data:
        return data.rfind(b"\n")
    end = data.rfind(b"\n")
    for _ in range(_ANCHOR_LINES):
        if end <= 0:
            break
        start = data.rfind(b"\n", 0, end) + 1
        if start > 0 and _complete_row(data[start : end + 1]):
            return start - 1
        end = start - 1
    cut, start, odd = -1, 0, False
    while (end := data.find(b"\n", start)) >= 0:
        odd ^= bool(data.count(b'"', start, end) % 2)
        if not odd:
            cut = end
        start = end + 1
    return cut


def _complete_row(line: bytes) -> bool:
    """Whether one physical line is by itself a whole row of the extract (all its fields, quotes closed)."""
    if line.count(b",") < len(CIS_COLUMNS) - 1 or line.count(b'"') % 2:
        return False
    try:
        rows = list(csv.reader([line.decode("utf-8", errors="replace")], strict=True))
    except csv.Error:
        return False
    return len(rows) == 1 and len(rows[0]) == len(CIS_COLUMNS)


class _Lines:
    """The physical lines of a block, fed to ``csv.reader`` one record at a time.

    CIS extracts have one record per line, except that a quoted field may hold a line end. A quoted
    field is therefore allowed to continue onto the next line, but never onto a line that is a complete
    row by itself: a continuation line closes the open quote, so it holds an odd number of quotes, and a
    line that parses alone as a whole row holds an even number. Meeting such a line while a quote is
    open means the quote was never closed: the record is given up there (csv sees the end of its data)
    and that line starts the next record, so one stray quote costs one row instead of the rest of the
    file (issue 15).
    """

    def __init__(self, lines: list[bytes]) -> None:
        self.lines = lines
        self.position = 0
        self.record_start = 0
        self.refused = False
        """Whether the current record wanted a line it was refused (or the block ended inside it)."""

    def start_record(self) -> None:
        """The next line read begins a record."""
        self.record_start = self.position
        self.refused = False

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        if self.position >= len(self.lines):
            self.refused = self.position > self.record_start
            raise StopIteration
        line = self.lines[self.position]
        if self.position > self.record_start and _complete_row(line):
            self.refused = True
            raise StopIteration
        self.position += 1
        return line.decode("utf-8", errors="replace")


def _arrow_block(block: bytes) -> list[Any] | None:
    """The block's 22 string columns parsed by Arrow, or None when only Python's csv reader may judge it."""
    if b'"' in block or b"\x00" in block or block.count(b"\r") != block.count(b"\r\n"):
        return None
    rows = block.count(b"\n") + (0 if block.endswith(b"\n") else 1)
    try:
        table = pa_csv.read_csv(
            io.BytesIO(block),
            read_options=pa_csv.ReadOptions(column_names=list(CIS_COLUMNS), block_size=len(block) + 1),
            parse_options=pa_csv.ParseOptions(quote_char=False, newlines_in_values=False),
            convert_options=pa_csv.ConvertOptions(
                column_types=dict.fromkeys(CIS_COLUMNS, pa.binary()),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return None  # a row with the wrong number of fields
    if table.num_rows != rows:
        return None  # a blank line: not a row, so lines and rows no longer match one to one
    try:
        return [pc.cast(table[c].combine_chunks(), pa.string()) for c in CIS_COLUMNS]
    except pa.ArrowInvalid:
        return None  # bytes that are not UTF-8: the rows are rejected one by one


def _python_block(block: bytes, first_line: int, tally: ReadTally) -> tuple[list[int], list[Any]]:
    """Parse a block record by record with the csv module: line numbers exact, malformed rows rejected,
    and every line an unterminated quote kept from being read named (:class:`_Lines`)."""
    # Split on bytes: str.splitlines would also split on \v, \f, U+2028 and more, which csv does not.
    # errors="replace" (in _Lines): one row with a broken byte is rejected by itself (parse_row says
    # which field); a strict decoder would abort the whole file at that point instead.
    source = _Lines(block.splitlines(keepends=True))
    lines: list[int] = []
    rows: list[list[str]] = []
    reader = csv.reader(source, strict=True)
    while source.position < len(source.lines):
        source.start_record()
        line = first_line + source.position
        try:
            fields = next(reader, None)
        except csv.Error as error:
            reader = csv.reader(source, strict=True)  # a fresh parser: no state of the broken record
            if source.refused:
                reason = f"a quoted field opened on line {line} is not closed"
            else:
                reason = f"malformed CSV: {error}"
            unread = range(line, first_line + max(source.position, source.record_start + 1))
            for number in unread:
                tally.read += 1
                tally.rejected.append(
                    RejectedRow(number, None, reason if number == line else f"{reason} (this line was inside it)")
                )
            source.position = max(source.position, source.record_start + 1)
            continue
        if not fields:  # a blank line is layout, not a row (or the block's end, refused by _Lines)
            if fields is None:
                reader = csv.reader(source, strict=True)  # an exhausted reader stays exhausted
            continue
        tally.read += 1
        line = first_line + source.position - 1  # a record over several lines is known by its last one
        if len(fields) != len(CIS_COLUMNS):
            tally.rejected.append(RejectedRow(line, None, f"expected {len(CIS_COLUMNS)} fields, found {len(fields)}"))
            continue
        lines.append(line)
        rows.append(fields)
    columns = [pa.array(list(values), pa.string()) for values in zip(*rows, strict=True)] if rows else []
    if not columns:
        columns = [pa.array([], pa.string()) for _ in CIS_COLUMNS]
    return lines, columns


class _Duplicates:
    """Service points already read in this file, with the line of their first row (Arrow, not a dict of
    a million Python strings)."""

    def __init__(self) -> None:
        self._ids: list[Any] = []
        self._lines: list[Any] = []

    def reject(self, table: Any, tally: ReadTally) -> Any:
        """``table`` without the rows whose service point appeared on an earlier line; those are rejected."""
        ids = table["cis_service_point_id"]
        lines = table["line"]
        earlier_ids = pa.chunked_array(self._ids, pa.string()).combine_chunks() if self._ids else None
        # First line of each id within this table (rows are in line order).
        firsts = table.group_by("cis_service_point_id", use_threads=False).aggregate([("line", "min")])
        first_in_table = pc.take(firsts["line_min"], pc.index_in(ids, value_set=firsts["cis_service_point_id"]))
        duplicate = pc.not_equal(first_in_table, lines)
        if earlier_ids is not None:
            duplicate = pc.or_(duplicate, pc.is_in(ids, value_set=earlier_ids))
        if pc.any(duplicate).as_py():
            earlier_lines = pa.chunked_array(self._lines, pa.int64()).combine_chunks() if self._lines else None
            for index in pc.indices_nonzero(duplicate).to_pylist():
                service_point = ids[index].as_py()
                first = first_in_table[index].as_py()
                if earlier_ids is not None:
                    position = pc.index(earlier_ids, service_point).as_py()
                    if position >= 0 and earlier_lines is not None:
                        first = earlier_lines[position].as_py()
                tally.rejected.append(
                    RejectedRow(
                        lines[index].as_py(),
                        "cis_service_point_id",
                        f"cis_service_point_id {service_point!r} already appears on line {first}; an extract "
                        "has one row per service point",
                    )
                )
            table = table.filter(pc.invert(duplicate))
        self._ids.append(table["cis_service_point_id"].combine_chunks())
        self._lines.append(table["line"].combine_chunks())
        return table


def read_extract(
    path: Path,
    tally: ReadTally,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[Any]:
    """Yield chunks of valid rows from ``path`` as Arrow tables of
    :data:`~derbridge.cis.extract.VALID_COLUMNS` (at most ``chunk_rows`` rows each, in line order);
    rejected rows go to ``tally``.

    Raises :class:`ExtractHeaderError` before yielding anything when the file is not a CIS extract.
    ``on_progress`` receives the number of bytes consumed so far.
    """
    with path.open("rb") as raw:
        header_bytes = raw.readline()
        if not header_bytes:
            raise ExtractHeaderError("not a CIS extract (the file is empty)")
        try:
            header = next(csv.reader([header_bytes.decode("utf-8-sig", errors="replace")], strict=True))
        except StopIteration:
            raise ExtractHeaderError("not a CIS extract (the file is empty)") from None
        except csv.Error as error:
            raise ExtractHeaderError(f"not a CIS extract (unreadable header: {error})") from None
        check_header(header)

        duplicates = _Duplicates()
        next_line = 2
        pending: list[Any] = []
        pending_rows = 0
        for block in _blocks(raw):
            columns = _arrow_block(block)
            if columns is not None:
                count = len(columns[0])
                tally.read += count
                lines: Any = pa.array(range(next_line, next_line + count), pa.int64())
            else:
                line_list, columns = _python_block(block, next_line, tally)
                lines = pa.array(line_list, pa.int64())
            next_line += _line_ends(block) + (0 if block.endswith((b"\n", b"\r")) else 1)
            valid, rejected = validate_columns(lines, columns)
            tally.rejected.extend(rejected)
            valid = duplicates.reject(valid, tally)
            pending.append(valid)
            pending_rows += valid.num_rows
            while pending_rows >= chunk_rows:
                table = pa.concat_tables(pending)
                yield table.slice(0, chunk_rows)
                rest = table.slice(chunk_rows)
                pending, pending_rows = [rest], rest.num_rows
                if on_progress is not None:
                    on_progress(raw.tell())
        if pending_rows:
            yield pa.concat_tables(pending)
        if on_progress is not None:
            on_progress(raw.tell())
