"""F2 · the set-based reads of the status checks and of the device-setup step: the devices and the
enrollments' rules and divisions a new check names (:func:`read_devices`, :func:`read_enrollment_rules`,
:func:`read_device_divisions`), and what the setup decisions need to know about enrollments
(:func:`read_setups`). They run in the caller's transaction; the service
:mod:`derbridge.assethub.services.status_checks` decides with them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.assethub.adapters import tables as t
from derbridge.assethub.adapters.enrollment_requests import chunks
from derbridge.assethub.domain.enrollment import DeviceRef
from derbridge.assethub.domain.program import ProgramRules
from derbridge.assethub.domain.status_checks import EnrollmentSetup
from derbridge.contracts.device_status_check import CheckReason


async def read_devices(connection: AsyncConnection, device_ids: Sequence[int]) -> dict[int, Any]:
    """The devices ``device_ids`` (sorted) as a new check describes them, by id; an unknown id is absent."""
    d = t.devices
    devices: dict[int, Any] = {}
    for ids in chunks(device_ids):
        for row in await connection.execute(
            select(d.c.device_id, d.c.head_end_system, d.c.nic_id, d.c.device_type, d.c.manufacturer, d.c.model).where(
                d.c.device_id.in_(ids)
            )
        ):
            devices[row.device_id] = row
    return devices


async def read_enrollment_rules(
    connection: AsyncConnection, enrollment_ids: Sequence[str]
) -> tuple[dict[str, ProgramRules], dict[str, str | None]]:
    """The program rules and the premise's division of each enrollment of ``enrollment_ids`` (sorted)."""
    e, p, pr = t.enrollments, t.programs, t.premises
    rules: dict[str, ProgramRules] = {}
    rules_of = RulesOf()
    division: dict[str, str | None] = {}
    for part in chunks(enrollment_ids):
        rows = await connection.execute(
            select(e.c.enrollment_id, e.c.program_code, p.c.rules, pr.c.division)
            .select_from(
                e.outerjoin(p, p.c.program_code == e.c.program_code).outerjoin(
                    pr, pr.c.cis_premise_id == e.c.cis_premise_id
                )
            )
            .where(e.c.enrollment_id.in_(part))
        )
        for row in rows:
            rules[row.enrollment_id] = rules_of(row.program_code, row.rules)
            division[row.enrollment_id] = row.division
    return rules, division


async def read_device_divisions(connection: AsyncConnection, device_ids: Sequence[int]) -> dict[int, str | None]:
    """The division of each device's latest enrollment (by enrollment id), for the devices that have one."""
    e, pr, ed = t.enrollments, t.premises, t.enrollment_devices
    device_division: dict[int, str | None] = {}
    for ids in chunks(device_ids):
        rows = await connection.execute(
            select(ed.c.device_id, pr.c.division)
            .select_from(
                ed.join(e, e.c.enrollment_id == ed.c.enrollment_id).outerjoin(
                    pr, pr.c.cis_premise_id == e.c.cis_premise_id
                )
            )
            .where(ed.c.device_id.in_(ids))
            .order_by(e.c.enrollment_id)
        )
        for row in rows:
            device_division[row.device_id] = row.division
    return device_division


class RulesOf:
    """Each program's rules validated once per read (they were validated per enrollment: the same few
    programs' rules for thousands of enrollments). Keyed by program code, the join's key to ``programs``."""

    def __init__(self) -> None:
        self._by_code: dict[str | None, ProgramRules] = {}

    def __call__(self, program_code: str | None, rules: Any) -> ProgramRules:
        found = self._by_code.get(program_code)
        if found is None:
            found = self._by_code[program_code] = ProgramRules.model_validate(rules) if rules else ProgramRules()
        return found


async def read_setups(
    connection: AsyncConnection, enrollment_ids: Sequence[str], *, lock: bool = False
) -> dict[str, EnrollmentSetup]:
    """The setup facts of ``enrollment_ids``. With ``lock`` the enrollment rows are locked first (PostgreSQL;
    SQLite admits one writer anyway): a decision then reads every check committed before it, so two answers
    for two devices of one enrollment, applied at once, cannot each miss the other's confirmation."""
    e, p, ed, d, c = t.enrollments, t.programs, t.enrollment_devices, t.devices, t.device_status_checks
    found: dict[str, EnrollmentSetup] = {}
    rules_of = RulesOf()
    ids = sorted(set(enrollment_ids))
    for part in chunks(ids):
        query = (
            select(e.c.enrollment_id, e.c.state, e.c.setup_started_at, e.c.next_check_at, e.c.program_code, p.c.rules)
            .select_from(e.outerjoin(p, p.c.program_code == e.c.program_code))
            .where(e.c.enrollment_id.in_(part))
            .order_by(e.c.enrollment_id)
        )
        rows = await connection.execute(query.with_for_update(of=e) if lock else query)
        for row in rows:
            found[row.enrollment_id] = EnrollmentSetup(
                row.enrollment_id,
                row.state,
                row.setup_started_at,
                row.next_check_at,
                rules_of(row.program_code, row.rules),
            )
        rows = await connection.execute(
            select(ed.c.enrollment_id, ed.c.device_id, d.c.head_end_system, d.c.nic_id)
            .select_from(ed.join(d, d.c.device_id == ed.c.device_id))
            .where(ed.c.enrollment_id.in_(part), ed.c.removed_at.is_(None))
        )
        for row in rows:
            found[row.enrollment_id].devices[row.device_id] = DeviceRef(row.head_end_system, row.nic_id)
        rows = await connection.execute(
            select(
                c.c.enrollment_id,
                c.c.device_id,
                c.c.status,
                c.c.communication_status,
                c.c.last_communication_at,
                c.c.answered_at,
            )
            .where(c.c.enrollment_id.in_(part), c.c.reason == CheckReason.ENROLLMENT_SETUP.value)
            .order_by(c.c.check_id)
        )
        for row in rows:
            found[row.enrollment_id].checks.append(row)
    return found
