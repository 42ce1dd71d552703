"""F4 · what a score transfer scores, read from Asset Hub's database as columns (:func:`read_scoring_data`):
the ACTIVE programs with their rules; every device of every ACTIVE enrollment of those programs, with the
latest communication Asset Hub knows of it; and each device's history in those programs' events, from the
participation summaries (or, as the reference, from the participation records).

A million devices and their histories are millions of rows: they are read as columns, not as row objects.
Every value read is an integer or a string (times as integer microseconds since the epoch, outcome classes
and program indexes computed by the query), so no datetime object is ever built, and the driver's rows
become Arrow columns partition by partition. The reads run inside the caller's (read) transaction. The
transfer that scores them is :mod:`derbridge.assethub.services.score_transfer`.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray
from sqlalchemy import ColumnElement, and_, case, func, select
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.adapters.participation_summaries import STARTS_SEPARATOR, cancelled, epoch_us, outcome_class
from derbridge.assethub.domain.enrollment import EnrollmentState
from derbridge.assethub.domain.program import ProgramRules, ProgramStatus
from derbridge.assethub.domain.scoring import EventClass, ScoringInput, classify_events
from derbridge.infra.columnar import read_arrow

NAT = np.iinfo(np.int64).min
"""The int64 value numpy reads as ``NaT``: "never", for a device with no known communication."""


@dataclass(frozen=True)
class ScoredRows:
    """The rows to score (one per device and program) and what the file needs besides the scores.

    ``classes`` and ``starts_us`` are each row's participation summary (None when the history is read from
    the records instead)."""

    program_codes: list[str]
    rules: list[ProgramRules]
    program_index: NDArray[np.intp]
    device_id: NDArray[np.int64]
    head_end_system: pa.Array
    nic_id: pa.Array
    last_communication_at: NDArray[np.datetime64]
    classes: pa.Array | None = None
    starts_us: pa.Array | None = None


HistorySource = Literal["summaries", "records"]
"""Where a transfer reads the devices' histories from: ``participation_summaries`` (one row per device and
program, what transfers use) or ``participation_records`` (every record; the reference the summaries are
tested against)."""


def _program_index(codes: list[str], column: ColumnElement[Any]) -> ColumnElement[Any]:
    """The position of ``column``'s program code in ``codes``, as the query's integer."""
    return case({code: index for index, code in enumerate(codes)}, value=column, else_=-1)


def _int64(table: pa.Table, name: str, null: int = 0) -> NDArray[np.int64]:
    values: NDArray[np.int64] = table.column(name).fill_null(null).to_numpy().astype(np.int64, copy=False)
    return values


def _row_key(program_index: NDArray[np.intp], device_id: NDArray[np.int64]) -> NDArray[np.int64]:
    """One sortable int64 per (program, device): device ids stay far below 2**44."""
    return (program_index.astype(np.int64) << 44) | device_id


async def _read_programs(connection: AsyncConnection) -> tuple[list[str], list[ProgramRules]]:
    result = await connection.execute(
        select(t.programs.c.program_code, t.programs.c.rules).where(t.programs.c.status == ProgramStatus.ACTIVE.value)
    )
    programs = sorted(((row.program_code, ProgramRules.model_validate(row.rules)) for row in result), key=_first)
    return [code for code, _ in programs], [rules for _, rules in programs]


def _first(item: tuple[str, ProgramRules]) -> str:
    return item[0]


async def _read_rows(
    connection: AsyncConnection, codes: list[str], rules: list[ProgramRules], *, with_summaries: bool
) -> ScoredRows:
    """Every device of every ACTIVE enrollment of the ACTIVE programs ``codes``, with its last communication
    and (``with_summaries``) its participation summary in the program."""
    e, ed, d, summaries = t.enrollments, t.enrollment_devices, t.devices, t.participation_summaries
    members = await read_arrow(
        connection,
        select(_program_index(codes, e.c.program_code), d.c.device_id, d.c.head_end_system, d.c.nic_id)
        .select_from(e)
        .join(ed, and_(ed.c.enrollment_id == e.c.enrollment_id, ed.c.removed_at.is_(None)))
        .join(d, d.c.device_id == ed.c.device_id)
        .where(e.c.state == EnrollmentState.ACTIVE.value, e.c.program_code.in_(codes)),
        {"program": pa.int64(), "device_id": pa.int64(), "head_end_system": pa.string(), "nic_id": pa.string()},
    )
    program_index = _int64(members, "program").astype(np.intp)
    device_id = _int64(members, "device_id")
    # One row per (program, device), in key order: the order the history is matched in. (An enrollment
    # rule keeps a device out of two ACTIVE enrollments of one program; unique() makes sure.)
    row_keys, first_of_key = np.unique(_row_key(program_index, device_id), return_index=True)
    program_index, device_id = program_index[first_of_key], device_id[first_of_key]
    seen_device, seen_us = await _read_last_communication(connection)
    at = np.minimum(np.searchsorted(seen_device, device_id), max(len(seen_device) - 1, 0))
    known = (seen_device[at] == device_id) if len(seen_device) else np.zeros(len(device_id), dtype=np.bool_)
    last_us = np.where(known, seen_us[at] if len(seen_device) else NAT, NAT)
    take = pa.array(first_of_key)

    def taken(name: str) -> pa.Array:
        return members.column(name).take(take).combine_chunks()

    classes = starts_us = None
    if with_summaries:
        # Read on their own and matched here by key: a sequential scan of the summaries and a numpy search
        # cost a fraction of a million index lookups in a join (SQLite).
        kept = await read_arrow(
            connection,
            select(
                _program_index(codes, summaries.c.program_code),
                summaries.c.device_id,
                summaries.c.classes,
                summaries.c.starts_us,
            ).where(summaries.c.program_code.in_(codes)),
            {"program": pa.int64(), "device_id": pa.int64(), "classes": pa.string(), "starts_us": pa.string()},
        )
        kept_keys = _row_key(_int64(kept, "program").astype(np.intp), _int64(kept, "device_id"))
        order = np.argsort(kept_keys)
        kept_keys = kept_keys[order]
        at = np.minimum(np.searchsorted(kept_keys, row_keys), max(len(kept_keys) - 1, 0))
        found = (kept_keys[at] == row_keys) if len(kept_keys) else np.zeros(len(row_keys), dtype=np.bool_)
        # A row without a summary (no history in the program) takes a null: no entries.
        where = pa.array(order[at] if len(kept_keys) else np.zeros(len(row_keys), np.int64), mask=~found)
        classes = kept.column("classes").take(where).combine_chunks()
        starts_us = kept.column("starts_us").take(where).combine_chunks()

    return ScoredRows(
        program_codes=codes,
        rules=rules,
        program_index=program_index,
        device_id=device_id,
        head_end_system=taken("head_end_system"),
        nic_id=taken("nic_id"),
        last_communication_at=last_us.view("datetime64[us]"),
        classes=classes,
        starts_us=starts_us,
    )


async def _read_last_communication(connection: AsyncConnection) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Each device's latest known communication (microseconds since the epoch), by device id ascending.

    Any answer carries the device's last communication as the DERMS knew it then; the latest is what Asset Hub
    knows now. PostgreSQL groups and converts (its ``COPY`` output is cheap); on SQLite the raw values are
    read and reduced with numpy (``strftime`` per group costs more there than the whole reduction here).
    """
    checks = t.device_status_checks
    if connection.dialect.name == "postgresql":
        seen = await read_arrow(
            connection,
            select(checks.c.device_id, epoch_us("postgresql", func.max(checks.c.last_communication_at)))
            .where(checks.c.last_communication_at.is_not(None))
            .group_by(checks.c.device_id),
            {"device_id": pa.int64(), "last_us": pa.int64()},
        )
        devices, moments = _int64(seen, "device_id"), _int64(seen, "last_us")
    else:
        seen = await read_arrow(
            connection,
            select(checks.c.device_id, checks.c.last_communication_at).where(
                checks.c.last_communication_at.is_not(None)
            ),
            {"device_id": pa.int64(), "at": pa.string()},
        )
        devices = _int64(seen, "device_id")
        # SQLite keeps 'YYYY-MM-DD HH:MM:SS.ffffff', naive UTC: Arrow parses it as such, to the microsecond.
        moments = seen.column("at").cast(pa.timestamp("us")).cast(pa.int64()).to_numpy().astype(np.int64)
    order = np.lexsort((moments, devices))  # by device, then time: the last of each device is its latest
    devices, moments = devices[order], moments[order]
    last = np.ones(len(devices), dtype=np.bool_)
    np.not_equal(devices[1:], devices[:-1], out=last[:-1])
    return devices[last], moments[last]


def _history_from_summaries(rows: ScoredRows) -> ScoringInput:
    """The model's columns from each row's participation summary (no summary: no history).

    The summary holds exactly the entries the record-based read gives the model, minus the cancelled ones
    (which count nowhere), in the same order: so the model computes the same values, bit for bit.
    Raises ``ValueError`` when a summary is malformed (the model's own checks catch a wrong order).
    """
    if rows.classes is None or rows.starts_us is None:
        raise ValueError("the rows were read without their participation summaries")
    n = len(rows.device_id)
    classes = rows.classes.fill_null("").cast(pa.binary())
    lengths = pc.binary_length(classes).to_numpy(zero_copy_only=False).astype(np.int64)
    # The classes of every row, one byte each, concatenated: the array's own data buffer, no copy per row.
    _, offset_buffer, data = classes.buffers()
    codes = np.empty(0, np.int16)
    if n and data is not None:
        offsets = np.frombuffer(offset_buffer, dtype=np.int32)[classes.offset : classes.offset + n + 1]
        codes = np.frombuffer(data, dtype=np.uint8)[offsets[0] : offsets[-1]].astype(np.int16) - ord("0")
    if len(codes) and (codes.min() < 0 or codes.max() >= len(EventClass)):
        raise ValueError("a participation summary holds a class that is not an EventClass code")
    with_history = pc.greater(pa.array(lengths), 0)
    starts = pc.list_flatten(pc.split_pattern(rows.starts_us.filter(with_history), STARTS_SEPARATOR))
    start_us = pc.cast(starts, pa.int64()).to_numpy(zero_copy_only=False) if len(starts) else np.empty(0, np.int64)
    if len(start_us) != len(codes):
        raise ValueError(f"participation summaries hold {len(codes)} classes but {len(start_us)} start times")
    return ScoringInput(
        program_index=rows.program_index,
        # Only ACTIVE enrollments of ACTIVE programs are read: both conditions hold for every row here.
        enrollment_active=np.ones(n, dtype=np.bool_),
        program_active=np.ones(n, dtype=np.bool_),
        last_communication_at=rows.last_communication_at,
        history_row=np.repeat(np.arange(n, dtype=np.intp), lengths),
        history_class=codes.astype(np.int8),
        history_event_at=start_us.astype(np.int64).view("datetime64[us]"),
    )


async def _history_from_records(connection: AsyncConnection, rows: ScoredRows) -> ScoringInput:
    """Every participation of the scored devices in their programs' events, as the model's columns."""
    pr, ev = t.participation_records, t.program_events
    table = await read_arrow(
        connection,
        select(
            _program_index(rows.program_codes, ev.c.program_code),
            pr.c.device_id,
            epoch_us(connection.dialect.name, ev.c.start_at),
            outcome_class(),
            case((pr.c.preemptive_opt_out.is_(True), 1), else_=0),
            case((cancelled(), 1), else_=0),
        )
        .join(ev, ev.c.event_id == pr.c.event_id)
        .where(ev.c.program_code.in_(rows.program_codes))
        # Newest first per device; the event id (time-ordered) breaks ties between events starting together.
        .order_by(pr.c.device_id, ev.c.start_at.desc(), ev.c.event_id.desc()),
        {
            "program": pa.int64(),
            "device_id": pa.int64(),
            "start_us": pa.int64(),
            "outcome": pa.int8(),
            "opt_out": pa.int8(),
            "cancelled": pa.int8(),
        },
    )
    n = len(rows.device_id)
    key = _row_key(_int64(table, "program").astype(np.intp), _int64(table, "device_id"))
    row_keys = _row_key(rows.program_index, rows.device_id)
    found = np.searchsorted(row_keys, key)
    at = np.minimum(found, max(n - 1, 0))
    member = (row_keys[at] == key) if n else np.zeros(len(key), dtype=np.bool_)
    # Group by row; a stable sort keeps each row's entries newest first, as the query returned them.
    order = np.flatnonzero(member)[np.argsort(found[member], kind="stable")]

    def column(name: str) -> NDArray[Any]:
        values: NDArray[Any] = table.column(name).to_numpy()[order]
        return values

    return ScoringInput(
        program_index=rows.program_index,
        enrollment_active=np.ones(n, dtype=np.bool_),
        program_active=np.ones(n, dtype=np.bool_),
        last_communication_at=rows.last_communication_at,
        history_row=found[order].astype(np.intp),
        history_class=classify_events(
            column("outcome").astype(np.int8), column("opt_out").astype(np.bool_), column("cancelled").astype(np.bool_)
        ),
        history_event_at=column("start_us").astype(np.int64).view("datetime64[us]"),
    )


async def read_scoring_data(
    connection: AsyncConnection, *, history: HistorySource = "summaries"
) -> tuple[ScoredRows, ScoringInput] | None:
    """What a transfer scores, read in the caller's (read) transaction: the rows and the model's columns.

    None when no program is ACTIVE. ``history`` says where the devices' histories come from; both sources
    give the model the same columns (``tests/flows/test_participation_summaries.py`` holds them to it).
    """
    codes, rules = await _read_programs(connection)
    if not codes:
        return None
    if history == "summaries":
        rows = await _read_rows(connection, codes, rules, with_summaries=True)
        return rows, await asyncio.to_thread(_history_from_summaries, rows)
    rows = await _read_rows(connection, codes, rules, with_summaries=False)
    return rows, await _history_from_records(connection, rows)
