"""F1 · the set-based reads and writes of enrollment requests, a few statements per batch whatever its size:
the lock on device holdings, the facts validation needs (accounts with their premises and service points,
programs, the enrollments holding each device, which predecessor requests are judged), and the rows an
accepted or refused batch adds (:func:`write_batch`). They run in the inbox's transaction;
:mod:`derbridge.assethub.services.enrollment_requests` validates and decides."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import select, text, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.domain.enrollment import NON_TERMINAL_STATES, DeviceRef, Transition
from derbridge.assethub.domain.enrollment_validation import AccountFacts, ActiveEnrollment
from derbridge.assethub.domain.program import DeviceType, Program, ProgramRules, ProgramStatus
from derbridge.cis.extract import AccountStatus
from derbridge.infra.upsert import insert_for

T = TypeVar("T")

CHUNK = 1000
"""Keys per ``IN (…)`` list: well under SQLite's and PostgreSQL's bound-parameter limits, even for pairs."""

NON_TERMINAL = sorted(s.value for s in NON_TERMINAL_STATES)


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    """``items`` in slices of at most ``size`` (for ``IN`` lists of bounded length)."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


def program_from_row(row: Mapping[str, Any]) -> Program:
    """The domain :class:`Program` of a ``programs`` row."""
    return Program(
        program_code=row["program_code"],
        name=row["name"],
        status=ProgramStatus(row["status"]),
        enrollment_opens_at=row["enrollment_opens_at"],
        enrollment_closes_at=row["enrollment_closes_at"],
        eligible_device_types=frozenset(DeviceType(d) for d in row["eligible_device_types"]),
        excluded_program_codes=frozenset(row["excluded_program_codes"]),
        rules=ProgramRules.model_validate(row["rules"]),
    )


async def lock_device_holdings(connection: AsyncConnection) -> None:
    """Serialise, until the caller's transaction ends, the changes that decide which enrollment holds a
    device (accepting F1 requests; a device replacement may take the same lock).

    Validation reads the devices' enrollments and then writes new ones: two batches asking for the same
    device at once must not both see it free. PostgreSQL takes a transaction advisory lock; SQLite already
    admits one writer at a time (one connection per process, and the database's write lock across them).
    """
    if connection.dialect.name == "postgresql":
        await connection.execute(text("SELECT pg_advisory_xact_lock(hashtext('assethub.device-holdings'))"))


async def read_accounts(connection: AsyncConnection, account_ids: Sequence[str]) -> dict[str, AccountFacts]:
    holders: dict[str, tuple[str, str]] = {}
    premises: defaultdict[str, set[str]] = defaultdict(set)
    points: defaultdict[str, set[tuple[str, str]]] = defaultdict(set)
    p, sp = t.premises, t.service_points
    for part in chunks(account_ids):
        rows = await connection.execute(
            select(t.accounts.c.cis_account_id, t.accounts.c.cis_person_id, t.accounts.c.status).where(
                t.accounts.c.cis_account_id.in_(part)
            )
        )
        for row in rows:
            holders[row.cis_account_id] = (row.cis_person_id, row.status)
        rows = await connection.execute(
            select(p.c.cis_account_id, p.c.cis_premise_id, sp.c.cis_service_point_id)
            .select_from(p.outerjoin(sp, sp.c.cis_premise_id == p.c.cis_premise_id))
            .where(p.c.cis_account_id.in_(part))
        )
        for row in rows:
            premises[row.cis_account_id].add(row.cis_premise_id)
            if row.cis_service_point_id is not None:
                points[row.cis_account_id].add((row.cis_premise_id, row.cis_service_point_id))
    return {
        account_id: AccountFacts(
            cis_account_id=account_id,
            cis_person_id=person_id,
            status=AccountStatus(status),
            premise_ids=frozenset(premises[account_id]),
            service_point_ids=frozenset(points[account_id]),
        )
        for account_id, (person_id, status) in holders.items()
    }


async def read_programs(connection: AsyncConnection, codes: Sequence[str]) -> dict[str, Program]:
    found: dict[str, Program] = {}
    for part in chunks(codes):
        rows = await connection.execute(select(t.programs).where(t.programs.c.program_code.in_(part)))
        for row in rows.mappings():
            found[row["program_code"]] = program_from_row(dict(row))
    return found


async def read_holdings(
    connection: AsyncConnection, devices: Sequence[DeviceRef]
) -> defaultdict[DeviceRef, list[ActiveEnrollment]]:
    """The non-terminal enrollments that hold each of ``devices`` (a device's current, unremoved place)."""
    held: defaultdict[DeviceRef, list[ActiveEnrollment]] = defaultdict(list)
    d, ed, e = t.devices, t.enrollment_devices, t.enrollments
    for part in chunks(devices, CHUNK // 2):
        rows = await connection.execute(
            select(d.c.head_end_system, d.c.nic_id, e.c.enrollment_id, e.c.program_code)
            .select_from(d.join(ed, ed.c.device_id == d.c.device_id).join(e, e.c.enrollment_id == ed.c.enrollment_id))
            .where(
                tuple_(d.c.head_end_system, d.c.nic_id).in_([(r.head_end_system, r.nic_id) for r in part]),
                ed.c.removed_at.is_(None),
                e.c.state.in_(NON_TERMINAL),
            )
            .order_by(e.c.enrollment_id)
        )
        for row in rows:
            ref = DeviceRef(row.head_end_system, row.nic_id)
            held[ref].append(ActiveEnrollment(row.enrollment_id, row.program_code, ref))
    return held


async def read_judged(connection: AsyncConnection, refs: Sequence[tuple[str, str]]) -> set[tuple[str, str]]:
    """Which of the requests ``refs`` (``(head_end_system, request_id)``) Asset Hub has judged: each judged
    request has its enrollment (PENDING or REJECTED at first)."""
    e = t.enrollments
    found: set[tuple[str, str]] = set()
    for part in chunks(refs, CHUNK // 2):
        rows = await connection.execute(
            select(e.c.head_end_system, e.c.request_id).where(tuple_(e.c.head_end_system, e.c.request_id).in_(part))
        )
        found |= {(row.head_end_system, row.request_id) for row in rows}
    return found


@dataclass
class BatchWrites:
    """The rows a batch adds, collected while validating and written with one statement per table."""

    enrollments: list[dict[str, Any]]
    transitions: list[Transition]
    devices: dict[DeviceRef, dict[str, Any]]
    enrollment_devices: list[tuple[str, DeviceRef, int]]


async def write_batch(connection: AsyncConnection, writes: BatchWrites) -> None:
    dialect = connection.dialect.name
    device_ids: dict[DeviceRef, int] = {}
    if writes.devices:
        upsert = insert_for(dialect, t.devices)
        # A device known from an earlier enrollment keeps its id and creation time; its description is the
        # one of the latest accepted request.
        statement = upsert.on_conflict_do_update(
            index_elements=[t.devices.c.head_end_system, t.devices.c.nic_id],
            set_={
                name: upsert.excluded[name]
                for name in ("device_type", "manufacturer", "model", "serial_no", "badge_no")
            },
        ).returning(t.devices.c.device_id, t.devices.c.head_end_system, t.devices.c.nic_id)
        rows = await connection.execute(statement, list(writes.devices.values()))
        device_ids = {DeviceRef(r.head_end_system, r.nic_id): r.device_id for r in rows}
    if writes.enrollments:
        await connection.execute(t.enrollments.insert(), writes.enrollments)
    if writes.enrollment_devices:
        added = {e["enrollment_id"]: e["created_at"] for e in writes.enrollments}
        await connection.execute(
            t.enrollment_devices.insert(),
            [
                {
                    "enrollment_id": enrollment_id,
                    "device_id": device_ids[ref],
                    "sequence": sequence,
                    "added_at": added[enrollment_id],
                    "removed_at": None,
                }
                for enrollment_id, ref, sequence in writes.enrollment_devices
            ],
        )
    if writes.transitions:
        await connection.execute(t.enrollment_transitions.insert(), transition_rows(writes.transitions))


def transition_rows(transitions: Iterable[Transition]) -> list[dict[str, Any]]:
    """``enrollment_transitions`` rows of ``transitions`` (for one executemany)."""
    return [
        {
            "enrollment_id": x.enrollment_id,
            "from_state": x.from_state.value if x.from_state is not None else None,
            "to_state": x.to_state.value,
            "at": x.at,
            "reason": x.reason,
        }
        for x in transitions
    ]
