"""F5 · claim-checked reservation lists: a long list of reserved devices arrives as a CSV file in the file
store; :func:`fetch_reservation_file` fetches it, verifies it against its manifest and reads its rows with
the contract's field types. A file that is missing, not the one its manifest describes, or unreadable is
refused as :class:`~derbridge.errors.Invalid`."""

from __future__ import annotations

import asyncio
import csv
import tempfile
from datetime import datetime
from pathlib import Path

from pydantic import AwareDatetime, TypeAdapter, ValidationError

from derbridge.contracts import event_reservation
from derbridge.contracts.common import HeadEnd, Id
from derbridge.contracts.device_score_transfer import FileLocation, FileManifest
from derbridge.errors import Invalid
from derbridge.filestore.base import FileNotInStore
from derbridge.filestore.factory import FileStoreOpener
from derbridge.filestore.manifest import ManifestMismatch, verify_file

RESERVATION_FILE_COLUMNS: tuple[str, ...] = tuple(event_reservation.ReservedDevice.model_fields)
"""The header a reservation file must have: the contract's ``ReservedDevice`` fields, in order."""

Reserved = tuple[str, str, str, datetime, datetime]
"""A reserved device as a row: ``(record_id, head_end_system, nic_id, reservation_start_at,
reservation_end_at)`` — the fields of the contract's ``ReservedDevice``, in its order."""

_RESERVED_ROWS: TypeAdapter[list[Reserved]] = TypeAdapter(list[tuple[Id, HeadEnd, Id, AwareDatetime, AwareDatetime]])
"""Validates a reservation file's rows with the contract's field types at once (a model per row costs ten
times more on a list of 100,000)."""


def read_reservation_file(path: Path) -> list[Reserved]:
    """The rows of a reservation file, validated against the contract's field types (line numbers counted
    as in the file: the header is line 1)."""
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = tuple(next(reader, ()))
        if header != RESERVATION_FILE_COLUMNS:
            raise ValueError(f"line 1: the header is {list(header)}, expected {list(RESERVATION_FILE_COLUMNS)}")
        records: list[list[str]] = []
        lines: list[int] = []
        for record in reader:
            if record:
                records.append(record)
                lines.append(reader.line_num)
    try:
        return _RESERVED_ROWS.validate_python(records)
    except ValidationError as error:
        first = error.errors()[0]
        line = lines[int(first["loc"][0])] if first["loc"] else 2
        column = RESERVATION_FILE_COLUMNS[int(first["loc"][1])] if len(first["loc"]) > 1 else "row"
        raise ValueError(f"line {line}, {column}: {first['msg']}") from None


async def fetch_reservation_file(
    event_id: str, manifest: FileManifest, location: FileLocation, files: FileStoreOpener
) -> list[Reserved]:
    """The reserved devices of a claim-checked list: fetched, verified against the manifest, then read.

    A file that is missing, not the one its manifest describes, or unreadable is refused (the message goes
    to the dead letters with the reason; an operator fixes the file and replays it). A store that cannot be
    reached raises on, so that the bridge retries.
    """
    with tempfile.TemporaryDirectory(prefix="derbridge-reservations-") as directory:
        path = Path(directory) / "reservations.csv"
        try:
            async with files() as store:
                await store.fetch(location, path)
        except FileNotInStore as missing:
            raise Invalid(
                "file-missing",
                "The reservation file is not in the file store",
                f"Event {event_id}: {missing}. Put the file back under {location.key!r}, then replay the message.",
            ) from None
        except ValueError as bad:  # a key that escapes the store, or a location in another kind of store
            raise Invalid("invalid-file-location", "The reservation file's location is not valid", str(bad)) from None
        try:
            await asyncio.to_thread(verify_file, path, manifest)
        except ManifestMismatch as mismatch:
            raise Invalid(
                "file-mismatch",
                "The reservation file does not match its manifest",
                f"Event {event_id}, file {manifest.file_id}: {mismatch.reason}. Nothing was recorded.",
            ) from None
        try:
            return await asyncio.to_thread(read_reservation_file, path)
        except ValueError as bad:
            raise Invalid(
                "invalid-file",
                "The reservation file is not valid",
                f"Event {event_id}, file {manifest.file_id}: {bad}. Nothing was recorded.",
            ) from None
