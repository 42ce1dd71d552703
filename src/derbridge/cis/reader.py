"""Stream a CIS extract file in chunks of validated records, collecting rejected rows with line numbers.

The file is read once, whatever the number of systems it is loaded into, and never held whole in
memory: the importer loads each chunk into every system before the next is read.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from derbridge.cis.extract import CisRecord, ExtractHeaderError, RejectedRow, check_header, parse_row

DEFAULT_CHUNK_ROWS = 50_000


@dataclass
class ReadTally:
    """What the reader has seen so far."""

    read: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)


def read_extract(
    path: Path,
    tally: ReadTally,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    on_progress: Callable[[int], None] | None = None,
) -> Iterator[list[CisRecord]]:
    """Yield chunks of valid records from ``path``; rejected rows go to ``tally``.

    Raises :class:`ExtractHeaderError` before yielding anything when the file is not a CIS extract.
    ``on_progress`` receives the number of bytes consumed so far.
    """
    with path.open("rb") as raw:
        # errors="replace": one row with a broken byte is rejected by itself; a strict decoder would
        # abort the whole file at that point instead.
        text = io.TextIOWrapper(raw, encoding="utf-8-sig", errors="replace", newline="")
        reader = csv.reader(text, strict=True)
        try:
            header = next(reader)
        except StopIteration:
            raise ExtractHeaderError("not a CIS extract (the file is empty)") from None
        except csv.Error as error:
            raise ExtractHeaderError(f"not a CIS extract (unreadable header: {error})") from None
        check_header(header)

        seen_service_points: dict[str, int] = {}
        chunk: list[CisRecord] = []
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as error:
                tally.read += 1
                tally.rejected.append(RejectedRow(reader.line_num, None, f"malformed CSV: {error}"))
                continue
            if not fields:  # a blank line is layout, not a row
                continue
            tally.read += 1
            line = reader.line_num
            if any("\ufffd" in value for value in fields):
                tally.rejected.append(RejectedRow(line, None, "the row is not valid UTF-8"))
                continue
            parsed = parse_row(line, fields)
            if isinstance(parsed, RejectedRow):
                tally.rejected.append(parsed)
                continue
            first_line = seen_service_points.setdefault(parsed.cis_service_point_id, line)
            if first_line != line:
                tally.rejected.append(
                    RejectedRow(
                        line,
                        "cis_service_point_id",
                        f"cis_service_point_id {parsed.cis_service_point_id!r} already appears on line "
                        f"{first_line}; an extract has one row per service point",
                    )
                )
                continue
            chunk.append(parsed)
            if len(chunk) >= chunk_rows:
                yield chunk
                chunk = []
                if on_progress is not None:
                    on_progress(raw.tell())
        if chunk:
            yield chunk
        if on_progress is not None:
            on_progress(raw.tell())
