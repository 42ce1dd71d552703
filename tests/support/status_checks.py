"""Device status checks (F2) as the flow tests drive them: an accepted enrollment, a device's reported
communication status, and reads of the enrollment, its checks and its next check time."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from derbridge.assethub.adapters import tables as ah
from tests.support.cis_rows import cis_row
from tests.support.enrollment import (
    create_program,
    load_customers,
    post_request,
    read_request,
    request_body,
)

if TYPE_CHECKING:
    from tests.support.system import System


async def enroll(system: System, n: int, **changes: Any) -> str:
    """Have customer n's request accepted (not yet set up); returns the enrollment id."""
    await post_request(system.client, request_body(n, **changes))
    await system.settle()
    recorded = await read_request(system.client, "ECOBEE", changes.get("request_id", f"R{n}"))
    assert recorded["status"] == "ACCEPTED", recorded
    enrollment_id: str = recorded["enrollment_id"]
    return enrollment_id


async def report(system: System, nic_id: str, status: str, at: datetime, head_end: str = "ECOBEE") -> None:
    """The edge records a device's communication status at the DERMS."""
    response = await system.client.put(
        f"/derms/v1/communication-status/{head_end}/{nic_id}",
        json={"communication_status": status, "last_communication_at": at.isoformat(), "source": head_end},
    )
    assert response.status_code == 200, response.text


async def enrollment(system: System, enrollment_id: str) -> dict[str, Any]:
    response = await system.client.get(f"/assethub/v1/enrollments/{enrollment_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def steps(found: dict[str, Any]) -> list[tuple[str | None, str]]:
    return [(x["from_state"], x["to_state"]) for x in found["transitions"]]


async def checks(system: System, enrollment_id: str | None = None) -> list[dict[str, Any]]:
    """Status checks (of one enrollment, or all), oldest first."""
    c = ah.device_status_checks
    query = select(c).order_by(c.c.check_id)
    if enrollment_id is not None:
        query = query.where(c.c.enrollment_id == enrollment_id)
    async with system.runtime.async_engine("assethub").connect() as connection:
        return [dict(r) for r in (await connection.execute(query)).mappings()]


async def next_check_at(system: System, enrollment_id: str) -> datetime | None:
    e = ah.enrollments
    async with system.runtime.async_engine("assethub").connect() as connection:
        value: datetime | None = await connection.scalar(
            select(e.c.next_check_at).where(e.c.enrollment_id == enrollment_id)
        )
        return value


async def world(system: System, tmp_path: Path, customers: int = 3, **program: Any) -> None:
    load_customers(system.runtime, tmp_path, [cis_row(n) for n in range(1, customers + 1)])
    await create_program(system, **program)
