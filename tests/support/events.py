"""The set-up the event flow tests share (F5, F6, F7, and the VTN's): a CIS extract loaded into both systems,
the program created in both through their APIs, ACTIVE devices inserted the way enrollment sync (F3) leaves
them, and a current DERMS score snapshot the way a score transfer (F4) leaves it; then events created through
the DERMS API and what each system recorded of them. Every expected reservation of the tests is worked out by
hand from :data:`DEVICES`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import select

from derbridge.assethub.adapters import tables as ah
from derbridge.assethub.adapters.cis_loader import AssetHubCisLoader
from derbridge.cis.importer import import_extract
from derbridge.derms.adapters import tables as dm
from derbridge.derms.adapters.cis_loader import DermsCisLoader
from derbridge.embedded import EmbeddedSystem
from derbridge.runtime import Runtime
from derbridge.settings import EventSettings, Settings
from tests.support.api import cis_row, write_extract

if TYPE_CHECKING:
    from tests.support.system import System


DERMS = "/derms/v1"
ASSETHUB = "/assethub/v1"
BRIDGE = "/bridge/v1"
PROGRAM = "SUMMER-BYOT"
SHED_KW = 1.5
GRACE_HOURS = 2.0

EXTRACT = [
    cis_row("P-1", "Ada Lovelace", "A-1", "ACTIVE", "PR-1", "SP-1"),
    cis_row("P-2", "Blaise Pascal", "A-2", "ACTIVE", "PR-2", "SP-2"),
    cis_row("P-3", "Carl Gauss", "A-3", "ACTIVE", "PR-3", "SP-3"),
]


@dataclass(frozen=True)
class Device:
    """A test device: its identity, its score in the current DERMS snapshot, and who knows it."""

    head_end_system: str
    nic_id: str
    score: float
    eligible: bool = True
    in_assethub: bool = True

    @property
    def key(self) -> tuple[str, str]:
        return (self.head_end_system, self.nic_id)


DEVICES = [
    Device("ECOBEE", "e-01", 91.0),
    Device("ECOBEE", "e-02", 75.0),  # tied at 75 with NEST n-02: ECOBEE < NEST
    Device("NEST", "n-01", 88.0),
    Device("NEST", "n-02", 75.0),
    Device("NEST", "n-03", 99.0, eligible=False),  # best score, not eligible: never reserved
    Device("SENSI", "s-01", 60.0),
]
RANKED = [("ECOBEE", "e-01"), ("NEST", "n-01"), ("ECOBEE", "e-02"), ("NEST", "n-02"), ("SENSI", "s-01")]
"""The candidates in rank order: score descending, ties by (head_end_system, nic_id)."""


@asynccontextmanager
async def configured(system: System, settings: Settings) -> AsyncIterator[System]:
    """The same databases served by a whole system built with ``settings``, on the same clock: a process
    restarted with a new configuration (a system's configuration is fixed when it is built)."""
    async with EmbeddedSystem(Runtime(settings, clock=system.clock)) as restarted:
        yield restarted


def with_threshold(settings: Settings, threshold: int) -> Settings:
    """``settings`` with reservation lists longer than ``threshold`` sent as files."""
    return settings.model_copy(update={"events": EventSettings(reservation_file_threshold=threshold)})


async def prepare(system: System, tmp_path: Path, devices: Sequence[Device] = DEVICES) -> None:
    """Customers in both systems (CIS import), PROGRAM in Asset Hub (its API) and, by program sync, in the
    DERMS, ``devices`` ACTIVE in the DERMS (devices + AVAILABLE in PROGRAM) and in Asset Hub (unless
    ``in_assethub`` is false), and a current DERMS score snapshot holding their scores."""
    runtime: Runtime = system.runtime
    report = import_extract(
        write_extract(tmp_path / "cis.csv", EXTRACT),
        [AssetHubCisLoader(runtime.sync_engine("assethub")), DermsCisLoader(runtime.sync_engine("derms"))],
    )
    assert report.rejected == []
    created = await system.client.post(
        f"{ASSETHUB}/programs",
        json={
            "program_code": PROGRAM,
            "name": "Summer BYOT",
            "status": "ACTIVE",
            "rules": {"expected_shed_kw": SHED_KW, "outcome_grace_hours": GRACE_HOURS},
        },
    )
    assert created.status_code == 201, created.text
    await system.settle()  # program sync carries it to the DERMS
    at = datetime(2027, 1, 1, tzinfo=UTC)
    with runtime.sync_engine("derms").begin() as connection:
        connection.execute(
            dm.devices.insert(),
            [
                {
                    "head_end_system": d.head_end_system,
                    "nic_id": d.nic_id,
                    "device_type": "THERMOSTAT",
                    "manufacturer": "Acme",
                    "model": "T1",
                    "created_at": at,
                }
                for d in devices
            ],
        )
        ids = {(row.head_end_system, row.nic_id): row.device_id for row in connection.execute(select(dm.devices))}
        connection.execute(
            dm.device_availability.insert(),
            [
                {
                    "device_id": ids[d.key],
                    "program_code": PROGRAM,
                    "enrollment_id": f"enr-{i}",
                    "cis_account_id": EXTRACT[i % len(EXTRACT)]["cis_account_id"],
                    "cis_service_point_id": EXTRACT[i % len(EXTRACT)]["cis_service_point_id"],
                    "availability": "AVAILABLE",
                    "sequence": 1,
                    "updated_at": at,
                }
                for i, d in enumerate(devices)
            ],
        )
        connection.execute(
            dm.score_snapshots.insert().values(
                file_id="scores-1",
                generated_at=at,
                scoring_model_version="1",
                row_count=len(devices),
                unknown_devices=0,
                loaded_at=at,
                is_current=True,
            )
        )
        connection.execute(
            dm.device_scores.insert(),
            [
                {
                    "file_id": "scores-1",
                    "program_code": PROGRAM,
                    "head_end_system": d.head_end_system,
                    "nic_id": d.nic_id,
                    "device_id": ids[d.key],
                    "score": d.score,
                    "eligible": d.eligible,
                    "ineligibility_reason": None if d.eligible else "DEVICE_OFFLINE",
                }
                for d in devices
            ],
        )
    known = [d for d in devices if d.in_assethub]
    if known:
        with runtime.sync_engine("assethub").begin() as connection:
            connection.execute(
                ah.devices.insert(),
                [
                    {
                        "head_end_system": d.head_end_system,
                        "nic_id": d.nic_id,
                        "device_type": "THERMOSTAT",
                        "manufacturer": "Acme",
                        "model": "T1",
                        "serial_no": f"SN-{d.nic_id}",
                        "badge_no": None,
                        "created_at": at,
                    }
                    for d in known
                ],
            )


def event_body(system: System, *, start_in: timedelta, lasts: timedelta, **target: Any) -> dict[str, Any]:
    """A POST /events body of PROGRAM starting ``start_in`` after the business clock's now."""
    start = system.clock.now() + start_in
    return {
        "program_code": PROGRAM,
        "event_type": "ECONOMIC",
        "start_at": start.isoformat(),
        "end_at": (start + lasts).isoformat(),
        "created_by": "operator-1",
    } | target


async def create_event(
    system: System, *, start_in: timedelta = timedelta(hours=1), lasts: timedelta = timedelta(hours=2), **target: Any
) -> dict[str, Any]:
    """Create an event through the DERMS API (201 expected) and return it."""
    response = await system.client.post(
        f"{DERMS}/events", json=event_body(system, start_in=start_in, lasts=lasts, **target)
    )
    assert response.status_code == 201, response.text
    event: dict[str, Any] = response.json()
    return event


async def get_all(system: System, path: str) -> list[dict[str, Any]]:
    """Every item of a listing, following its pages."""
    items: list[dict[str, Any]] = []
    after: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 500} | ({"after": after} if after else {})
        response = await system.client.get(path, params=params)
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        after = page["next_after"]
        if after is None:
            return items


async def derms_reserved(system: System, event_id: str) -> list[tuple[str, str]]:
    """The devices the DERMS holds for an event (RESERVED), in rank order, as (head-end, nic)."""
    async with system.runtime.async_engine("derms").connect() as connection:
        rows = await connection.execute(
            select(dm.devices.c.head_end_system, dm.devices.c.nic_id)
            .join(dm.reservations, dm.reservations.c.device_id == dm.devices.c.device_id)
            .where(dm.reservations.c.event_id == event_id, dm.reservations.c.status == "RESERVED")
            .order_by(dm.reservations.c.rank)
        )
        return [(r.head_end_system, r.nic_id) for r in rows]


async def participations(system: System, event_id: str) -> dict[tuple[str, str], dict[str, Any]]:
    """Asset Hub's participation records of an event (through its API), by device (head-end, nic)."""
    records = await get_all(system, f"{ASSETHUB}/events/{event_id}/participations")
    async with system.runtime.async_engine("assethub").connect() as connection:
        names = {
            r.device_id: (r.head_end_system, r.nic_id)
            for r in await connection.execute(
                select(ah.devices.c.device_id, ah.devices.c.head_end_system, ah.devices.c.nic_id)
            )
        }
    return {names[r["device_id"]]: r for r in records}


async def outbox_payloads(system: System, which: str, message_type: str) -> list[dict[str, Any]]:
    """The envelopes of ``message_type`` in a system's outbox, in the order they were written."""
    outbox = dm.outbox if which == "derms" else ah.outbox
    async with system.runtime.async_engine(which).connect() as connection:  # type: ignore[arg-type]
        rows = await connection.execute(
            select(outbox.c.envelope).where(outbox.c.type == message_type).order_by(outbox.c.position)
        )
        return [json.loads(r.envelope) for r in rows]


async def inbox_answers(system: System, which: str, message_type: str) -> list[dict[str, Any]]:
    """What a system's handlers answered for the ``message_type`` messages it applied."""
    inbox = dm.inbox if which == "derms" else ah.inbox
    async with system.runtime.async_engine(which).connect() as connection:  # type: ignore[arg-type]
        rows = await connection.execute(select(inbox.c.response).where(inbox.c.type == message_type))
        return [dict(r.response) for r in rows]
