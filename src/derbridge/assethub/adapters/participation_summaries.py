"""The participation summary: each device's participation history in each program, one row per (device, program).

Scoring (F4) needs, for every scored device, its history in the program newest first: each event's
:class:`~derbridge.assethub.domain.scoring.EventClass` and start. Read from ``participation_records`` that is
every record of every device (three million rows for a million devices with three events each), joined to
its event and sorted. ``participation_summaries`` keeps the same history already assembled, one row per
device and program, so that a transfer reads one row per scored device:

- ``classes``: one character per event of the history, newest first: the event's ``EventClass`` code
  (``'0'`` PENDING, ``'1'`` SUCCESSFUL_PARTICIPATION, … ``'5'`` NON_RESPONSIVE). Cancelled events and
  participations count nowhere in the model, so they are left out.
- ``starts_us``: the events' starts in the same order, as integer microseconds since the epoch, separated
  by commas.

Newest first means by the event's start, ties broken by the event id, descending: the order the
record-based read uses, so both give the model the same columns, value for value.

The summary is derived data, kept equal to what a rebuild from the records gives, in the same transaction as
the change that touches it (F5 apply, F6, F7 apply). Two common changes are patched in place, set-based,
where the patch is provably the rebuild's result; every other device is recomputed:

- :func:`add_event_entries` — a new event's reservations: the event's entry (PENDING) goes first in the
  history of every device whose newest entry started strictly earlier (or a new row when the device has no
  history in the program). A device with an entry starting at or after the event's start is recomputed.
- :func:`set_event_classes` — outcomes recorded or corrected: the event's entry changes class in place when
  it is the device's newest entry and no other entry starts at the same moment (the summary keeps starts,
  not event ids, so a tie cannot be placed). Other devices are recomputed.

:func:`refresh_summaries` recomputes the rows of the devices a change touched from their records (one
``DELETE`` and one ``INSERT … SELECT`` per chunk of devices): for what the patches do not cover — an update
that moves an event or adds devices to it, a cancellation, an outcome CANCELLED coming or going, an entry
not first. :func:`rebuild_summaries` recomputes every row (``assethub_0004``, which introduced the table,
keeps its own copy of this SQL). ``tests/flows/test_participation_summaries.py`` compares the kept rows with
a rebuild after every message, through every path.
"""

# Identifiers in the SQL below come from Table metadata; values are bound or are integers of this module.

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    Select,
    String,
    and_,
    any_,
    bindparam,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
)
from sqlalchemy.dialects.postgresql import ARRAY, aggregate_order_by
from sqlalchemy.ext.asyncio import AsyncConnection
from sqlalchemy.sql.expression import Executable

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.domain.scoring import OUTCOME_CLASSES, EventClass
from derbridge.infra.upsert import insert_for

CANCELLED = "CANCELLED"

REFRESH_CHUNK: Final[int] = 5_000
"""Devices refreshed per statement on SQLite (``device_id IN (…)``, one parameter each: well under SQLite's
limit). PostgreSQL takes them all in one array parameter."""

STARTS_SEPARATOR: Final[str] = ","


def epoch_us(dialect: str, column: ColumnElement[Any]) -> ColumnElement[Any]:
    """``column`` (a UTCDateTime) as integer microseconds since the epoch, computed by the database."""
    if dialect == "postgresql":
        return cast(func.extract("epoch", column) * 1_000_000, BigInteger)
    # SQLite keeps 'YYYY-MM-DD HH:MM:SS.ffffff' (naive UTC): whole seconds from strftime, then the fraction.
    # strftime gets the text without its fraction: SQLite rounds times to the millisecond, so '…:59.9996'
    # would otherwise count as the next second and the result be a second late.
    whole_seconds = func.strftime("%s", func.substr(column, 1, 19))
    return cast(whole_seconds, Integer) * 1_000_000 + cast(func.substr(column, 21, 6), Integer)


def outcome_class() -> ColumnElement[Any]:
    """The :class:`EventClass` code of a record's reported outcome (PENDING when none or unknown)."""
    pr = t.participation_records
    return case(
        {name: int(code) for name, code in OUTCOME_CLASSES.items()},
        value=pr.c.outcome,
        else_=int(EventClass.PENDING),
    )


def cancelled() -> ColumnElement[bool]:
    """The record's event or participation was cancelled (it counts nowhere)."""
    pr, ev = t.participation_records, t.program_events
    return or_(ev.c.status == CANCELLED, pr.c.status == CANCELLED)


def _class_char() -> ColumnElement[Any]:
    """The :class:`EventClass` code of a record that is not cancelled, as one character.

    The same rules as :func:`~derbridge.assethub.domain.scoring.classify_events`: an outcome CANCELLED counts
    nowhere (left out by the caller's filter, like a cancelled event or participation); otherwise a
    pre-emptive opt-out wins over the outcome reported with it; otherwise the outcome's class.
    """
    pr = t.participation_records
    return case(
        (pr.c.preemptive_opt_out.is_(True), str(int(EventClass.PREEMPTIVE_OPT_OUT))),
        *((pr.c.outcome == name, str(int(code))) for name, code in OUTCOME_CLASSES.items()),
        else_=str(int(EventClass.PENDING)),
    )


def _summaries_of(dialect: str, devices: ColumnElement[bool] | None) -> Select[Any]:
    """``(program_code, device_id, classes, starts_us)`` recomputed from the records of the devices that
    ``devices`` selects (every device when None)."""
    pr, ev = t.participation_records, t.program_events
    counted = and_(
        ~cancelled(),
        or_(pr.c.outcome.is_(None), pr.c.outcome != CANCELLED),
    )
    where = counted if devices is None else and_(devices, counted)
    start = cast(epoch_us(dialect, ev.c.start_at), String)
    newest_first = (ev.c.start_at.desc(), ev.c.event_id.desc())
    if dialect == "postgresql":
        return (
            select(
                ev.c.program_code,
                pr.c.device_id,
                func.string_agg(_class_char(), aggregate_order_by(literal_column("''"), *newest_first)),
                func.string_agg(start, aggregate_order_by(literal_column(f"'{STARTS_SEPARATOR}'"), *newest_first)),
            )
            .join(ev, ev.c.event_id == pr.c.event_id)
            .where(where)
            .group_by(ev.c.program_code, pr.c.device_id)
        )
    # SQLite before 3.44 has no ORDER BY inside an aggregate; as a window function, group_concat adds the rows
    # of its frame in the window's order, so the last row of each partition holds the whole ordered history.
    partition = (ev.c.program_code, pr.c.device_id)
    frame = {"partition_by": partition, "order_by": newest_first, "rows": (None, 0)}
    inner = (
        select(
            ev.c.program_code.label("program_code"),
            pr.c.device_id.label("device_id"),
            func.group_concat(_class_char(), "").over(**frame).label("classes"),  # type: ignore[arg-type]
            func.group_concat(start, STARTS_SEPARATOR).over(**frame).label("starts_us"),  # type: ignore[arg-type]
            func.row_number().over(**frame).label("position"),  # type: ignore[arg-type]
            func.count().over(partition_by=partition).label("entries"),
        )
        .join(ev, ev.c.event_id == pr.c.event_id)
        .where(where)
        .subquery()
    )
    return select(inner.c.program_code, inner.c.device_id, inner.c.classes, inner.c.starts_us).where(
        inner.c.position == inner.c.entries
    )


Devices = Callable[[ColumnElement[Any]], ColumnElement[bool]]
"""Which devices to recompute, as a test on a ``device_id`` column (of the summary or of the records)."""


async def _replace(connection: AsyncConnection, devices: Devices) -> None:
    """Delete the summaries of ``devices`` and insert them again from their records."""
    s, pr = t.participation_summaries, t.participation_records
    dialect = connection.dialect.name
    await connection.execute(delete(s).where(devices(s.c.device_id)))
    recomputed = _summaries_of(dialect, devices(pr.c.device_id))
    await connection.execute(insert(s).from_select(["program_code", "device_id", "classes", "starts_us"], recomputed))


async def refresh_summaries(connection: AsyncConnection, device_ids: Iterable[int]) -> None:
    """Recompute the summaries of ``device_ids`` (in every program) from their records, in the open transaction.

    Call it after writing participation records or outcomes of these devices, in the same transaction.
    """
    ids = sorted(set(device_ids))
    if not ids:
        return
    if connection.dialect.name == "postgresql":
        await _replace(connection, lambda column: column == any_(bindparam("devices", ids, type_=ARRAY(BigInteger()))))
        return
    for start in range(0, len(ids), REFRESH_CHUNK):
        chunk = ids[start : start + REFRESH_CHUNK]
        await _replace(connection, lambda column, chunk=chunk: column.in_(chunk))  # type: ignore[misc]


async def refresh_event_summaries(connection: AsyncConnection, event_id: str) -> None:
    """Recompute the summaries of every device with a participation record of ``event_id``.

    For a change of the event itself (its start, program or status) or of all its records (a cancellation).
    """
    of_event = t.participation_records.alias("of_event")
    await _replace(
        connection,
        lambda column: column.in_(select(of_event.c.device_id).where(of_event.c.event_id == event_id)),
    )


# --- patches in place -------------------------------------------------------------------------------------


async def _event_start_us(connection: AsyncConnection, event_id: str) -> str | None:
    """The event's start as the summaries write it (the same expression as the rebuild: the same text)."""
    ev = t.program_events
    start = cast(epoch_us(connection.dialect.name, ev.c.start_at), String)
    value = await connection.scalar(select(start).where(ev.c.event_id == event_id))
    return None if value is None else str(value)


def _entry_start(dialect: str, text: ColumnElement[Any]) -> ColumnElement[Any]:
    """The start (integer microseconds) of the first entry of a ``starts_us`` text (or of its tail)."""
    if dialect == "postgresql":
        return cast(func.split_part(text, STARTS_SEPARATOR, 1), BigInteger)
    # SQLite casts the longest integer prefix of a text: '170…000,169…000' gives the first start.
    return cast(text, Integer)


def _first_is_only(dialect: str, starts: ColumnElement[Any], start_text: str) -> ColumnElement[bool]:
    """The history's first entry starts at ``start_text`` and no other entry starts at the same moment
    (entries are newest first, so it is enough that the second one, if any, starts earlier)."""
    prefix = start_text + STARTS_SEPARATOR
    rest = func.substr(starts, len(prefix) + 1)
    second_earlier = case(
        # Only a history that begins with the prefix is parsed past it: elsewhere the tail may start mid-entry.
        (func.substr(starts, 1, len(prefix)) == prefix, _entry_start(dialect, rest) < int(start_text)),
        else_=False,
    )
    return or_(starts == start_text, second_earlier)


async def add_event_entries(connection: AsyncConnection, event_id: str) -> None:
    """Put a newly recorded event into the histories of every device it has a participation record of.

    For the reservations of an event Asset Hub had not recorded (F5, ``update`` false), right after they
    were inserted in the open transaction: every record is RESERVED without an outcome, so each device's
    history gains one PENDING entry at the event's start. Patched in place — one ``UPDATE`` prepending the
    entry where every entry the device has started strictly earlier (so it goes first whatever the event
    ids), one ``INSERT … SELECT`` of a one-entry row where the device has no history in the program — and
    recomputed from the records (:func:`refresh_summaries`) for the devices with an entry starting at or
    after the event's start, the rare case where the entry's place depends on more than the starts kept.
    A cancelled event counts nowhere: nothing changes.
    """
    s, pr, ev = t.participation_summaries, t.participation_records, t.program_events
    event = (await connection.execute(select(ev.c.program_code, ev.c.status).where(ev.c.event_id == event_id))).first()
    start_text = await _event_start_us(connection, event_id)
    if event is None or start_text is None or event.status == CANCELLED:
        return
    dialect = connection.dialect.name
    program = event.program_code
    of_event = select(pr.c.device_id).where(pr.c.event_id == event_id)
    mine = and_(s.c.program_code == program, s.c.device_id.in_(of_event))
    newest_earlier = _entry_start(dialect, s.c.starts_us) < int(start_text)
    # Read first: once prepended, a history starts at the event's start whichever branch it took.
    placed_later = list(await connection.scalars(select(s.c.device_id).where(mine, ~newest_earlier)))
    pending = str(int(EventClass.PENDING))  # a new record has neither outcome nor opt-out
    await connection.execute(
        s.update()
        .where(mine, newest_earlier)
        .values(
            classes=literal(pending, String()).concat(s.c.classes),
            starts_us=literal(start_text + STARTS_SEPARATOR, String()).concat(s.c.starts_us),
        )
    )
    # A one-entry row for each device without history in the program; the key skips the others (an anti-join
    # on the table being filled made PostgreSQL, its statistics taken while it was empty, rescan the table
    # for every row: minutes for 100,000 devices).
    await connection.execute(
        insert_for(dialect, s)
        .from_select(
            ["program_code", "device_id", "classes", "starts_us"],
            select(
                literal(program, String()), pr.c.device_id, literal(pending, String()), literal(start_text, String())
            ).where(pr.c.event_id == event_id),
        )
        .on_conflict_do_nothing(index_elements=[s.c.device_id, s.c.program_code])
    )
    await refresh_summaries(connection, placed_later)


async def set_event_classes(connection: AsyncConnection, event_id: str, device_ids: Iterable[int]) -> None:
    """Give the event's entry in each device's history the class of the device's record as it is now.

    For outcomes just recorded or corrected (F7), in the open transaction, of devices whose entry was in the
    history before and stays (the caller recomputes instead when the old or the new outcome is CANCELLED,
    or when the event is cancelled). One ``UPDATE`` per chunk replaces the first character where the event's
    entry is the newest one and the only one at its start — its place is then certain — with the class
    computed from the record; the other devices are recomputed from their records.
    """
    ids = sorted(set(device_ids))
    if not ids:
        return
    s, pr, ev = t.participation_summaries, t.participation_records, t.program_events
    program = await connection.scalar(select(ev.c.program_code).where(ev.c.event_id == event_id))
    start_text = await _event_start_us(connection, event_id)
    if program is None or start_text is None:
        await refresh_summaries(connection, ids)
        return
    dialect = connection.dialect.name
    new_class = (
        select(_class_char()).where(pr.c.event_id == event_id, pr.c.device_id == s.c.device_id).scalar_subquery()
    )
    patched: set[int] = set()
    for chunk in _device_chunks(dialect, ids):
        result = await connection.execute(
            s.update()
            .where(s.c.program_code == program, _among(dialect, s.c.device_id, chunk))
            .where(_first_is_only(dialect, s.c.starts_us, start_text))
            .values(classes=new_class.concat(func.substr(s.c.classes, 2, type_=String())))
            .returning(s.c.device_id)
        )
        patched.update(result.scalars())
    await refresh_summaries(connection, [d for d in ids if d not in patched])


def _device_chunks(dialect: str, ids: list[int]) -> Iterable[list[int]]:
    size = max(len(ids), 1) if dialect == "postgresql" else REFRESH_CHUNK
    return (ids[i : i + size] for i in range(0, len(ids), size))


def _among(dialect: str, column: ColumnElement[Any], ids: list[int]) -> ColumnElement[bool]:
    if dialect == "postgresql":
        return column == any_(bindparam("devices", ids, type_=ARRAY(BigInteger())))
    return column.in_(ids)


def rebuild_statements(dialect: str) -> list[Executable]:
    """The statements that recompute every summary from every record, on a synchronous or an asynchronous
    connection (``assethub_0004`` keeps a copy of them; its migration test compares the two)."""
    s = t.participation_summaries
    return [
        delete(s),
        insert(s).from_select(["program_code", "device_id", "classes", "starts_us"], _summaries_of(dialect, None)),
    ]


async def rebuild_summaries(connection: AsyncConnection) -> None:
    """Recompute every summary from every record (after a bulk load that bypassed the flows' handlers)."""
    for statement in rebuild_statements(connection.dialect.name):
        await connection.execute(statement)
