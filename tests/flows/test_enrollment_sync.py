"""F3 · enrollment-sync end to end: Asset Hub's change → bridge → DERMS availability (and reservation
releases) → acknowledgement → Asset Hub's sync state, on SQLite and PostgreSQL.

Enrollments are made ACTIVE by inserting them into Asset Hub's tables and calling
:func:`queue_enrollment_sync`, as the F2 setup step does; everything else goes through the public APIs and
the bridge, and each test checks both systems' databases.
"""

from __future__ import annotations

import asyncio
import csv
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, select, update

from derbridge.assethub.adapters import tables as ah
from derbridge.assethub.adapters.cis_loader import AssetHubCisLoader
from derbridge.assethub.services.enrollment_sync import queue_enrollment_sync
from derbridge.bridge.tables import tracked_messages
from derbridge.bridge.tracking import Tracker
from derbridge.bridge.transport.base import queue_name
from derbridge.cis.extract import CIS_COLUMNS
from derbridge.cis.importer import ImportReport, import_extract
from derbridge.cis.loading import CisLoader
from derbridge.contracts.enrollment_sync import SyncChange
from derbridge.derms.adapters import tables as dm
from derbridge.derms.adapters.cis_loader import DermsCisLoader
from derbridge.derms.services.enrollment_sync import cis_account_conditions
from derbridge.infra.ids import new_id
from derbridge.runtime import Runtime
from tests.support.cis_rows import cis_row

if TYPE_CHECKING:
    from tests.support.system import System

pytest_plugins = ["tests.support.system"]

PROGRAM = "SUMMER-BYOT"
HEAD_END = "ECOBEE"
ACCOUNT = "A1"
FUTURE_EVENT = (datetime(2027, 6, 2, 14, tzinfo=UTC), datetime(2027, 6, 2, 15, tzinfo=UTC))
SOON_EVENT = (datetime(2027, 6, 1, 13, tzinfo=UTC), datetime(2027, 6, 1, 14, tzinfo=UTC))


# --- setting the scene ---------------------------------------------------------------------------------


def write_cis(path: Path, accounts: list[str]) -> Path:
    """A CIS extract with one service point per account: person P<n>, premise PR<n>, service point SP<n>
    for account A<n>."""
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=CIS_COLUMNS)
        writer.writeheader()
        for account in accounts:
            n = account.removeprefix("A")
            writer.writerow(cis_row(int(n), cis_account_id=account))
    return path


async def import_cis(runtime: Runtime, path: Path, *, assethub: bool = True, derms: bool = True) -> ImportReport:
    loaders: list[CisLoader] = []
    if assethub:
        loaders.append(AssetHubCisLoader(runtime.sync_engine("assethub")))
    if derms:
        loaders.append(DermsCisLoader(runtime.sync_engine("derms")))
    return await asyncio.to_thread(import_extract, path, loaders)


async def create_programs(system: System, *codes: str, settle: bool = True) -> None:
    """ACTIVE programs created in Asset Hub; program sync carries them to the DERMS (with ``settle``, before
    this returns)."""
    for code in codes:
        created = await system.client.post(
            "/assethub/v1/programs", json={"program_code": code, "name": code, "status": "ACTIVE"}
        )
        assert created.status_code == 201, created.text
    if settle:
        await system.settle()


async def scene(system: System, tmp_path: Path, *, accounts: tuple[str, ...] = (ACCOUNT,)) -> None:
    """Customers loaded into both systems and the program in both."""
    await import_cis(system.runtime, write_cis(tmp_path / "cis.csv", list(accounts)))
    await create_programs(system, PROGRAM)


async def insert_active_enrollments(
    runtime: Runtime,
    now: datetime,
    enrollments: list[tuple[str, list[str]]],
    *,
    program: str = PROGRAM,
    sync: bool = True,
) -> list[str]:
    """ACTIVE enrollments, one per ``(account, nics)``, with their devices and kept transitions, inserted
    as F1 and F2 leave them (set-based); with ``sync`` their ENROLLED syncs are queued in the same
    transaction, as the setup step does."""
    requested = now - timedelta(days=3)
    activated = now - timedelta(hours=1)
    ids = [new_id() for _ in enrollments]
    nics = sorted({nic for _, device_nics in enrollments for nic in device_nics})
    d = ah.devices
    async with runtime.async_engine("assethub").begin() as connection:
        known = set(
            (await connection.execute(select(d.c.nic_id).where(d.c.head_end_system == HEAD_END, d.c.nic_id.in_(nics))))
            .scalars()
            .all()
        )
        new_devices = [
            {
                "head_end_system": HEAD_END,
                "nic_id": nic,
                "device_type": "THERMOSTAT",
                "manufacturer": "ecobee",
                "model": "Premium",
                "serial_no": f"SN-{nic}",
                "created_at": requested,
            }
            for nic in nics
            if nic not in known
        ]
        if new_devices:
            await connection.execute(d.insert(), new_devices)
        device_ids = dict(
            (await connection.execute(select(d.c.nic_id, d.c.device_id).where(d.c.nic_id.in_(nics)))).tuples().all()
        )
        await connection.execute(
            ah.enrollments.insert(),
            [
                {
                    "enrollment_id": enrollment_id,
                    "head_end_system": HEAD_END,
                    "request_id": f"R-{enrollment_id}",
                    "program_code": program,
                    "cis_person_id": f"P{account.removeprefix('A')}",
                    "cis_account_id": account,
                    "cis_premise_id": f"PR{account.removeprefix('A')}",
                    "cis_service_point_id": f"SP{account.removeprefix('A')}",
                    "state": "ACTIVE",
                    "installation_method": "CUSTOMER_INSTALLED",
                    "asset_ownership": "CUSTOMER_OWNED",
                    "start_date": None,
                    "end_date": None,
                    "rejections": [],
                    "requested_at": requested,
                    "created_at": requested,
                    "updated_at": activated,
                }
                for enrollment_id, (account, _) in zip(ids, enrollments, strict=True)
            ],
        )
        await connection.execute(
            ah.enrollment_devices.insert(),
            [
                {
                    "enrollment_id": enrollment_id,
                    "device_id": device_ids[nic],
                    "sequence": slot,
                    "added_at": requested,
                    "removed_at": None,
                }
                for enrollment_id, (_, device_nics) in zip(ids, enrollments, strict=True)
                for slot, nic in enumerate(device_nics, start=1)
            ],
        )
        await connection.execute(
            ah.enrollment_transitions.insert(),
            [
                {"enrollment_id": enrollment_id, "from_state": before, "to_state": after, "at": at}
                for enrollment_id in ids
                for before, after, at in (
                    (None, "PENDING", requested),
                    ("PENDING", "DEVICE_SETUP", requested),
                    ("DEVICE_SETUP", "ACTIVE", activated),
                )
            ],
        )
        if sync:
            assert await queue_enrollment_sync(connection, ids, SyncChange.ENROLLED, now) == len(ids)
    return ids


async def enroll(system: System, nics: list[str], *, program: str = PROGRAM, account: str = ACCOUNT) -> str:
    """One ACTIVE enrollment of ``nics``, its ENROLLED sync queued (see :func:`insert_active_enrollments`)."""
    (enrollment_id,) = await insert_active_enrollments(
        system.runtime, system.clock.now(), [(account, nics)], program=program
    )
    return enrollment_id


async def load_scores(system: System, program: str, nics: list[str]) -> None:
    """A current DERMS score snapshot in which every device of ``nics`` is eligible (F4 loads these)."""
    file_id = new_id()
    now = system.clock.now()
    async with system.runtime.async_engine("derms").begin() as connection:
        ids = dict(
            (
                await connection.execute(
                    select(dm.devices.c.nic_id, dm.devices.c.device_id).where(dm.devices.c.nic_id.in_(nics))
                )
            )
            .tuples()
            .all()
        )
        await connection.execute(dm.score_snapshots.update().values(is_current=False))
        await connection.execute(
            dm.score_snapshots.insert().values(
                file_id=file_id,
                generated_at=now,
                scoring_model_version="test",
                row_count=len(nics),
                unknown_devices=0,
                loaded_at=now,
                is_current=True,
            )
        )
        await connection.execute(
            dm.device_scores.insert(),
            [
                {
                    "file_id": file_id,
                    "program_code": program,
                    "head_end_system": HEAD_END,
                    "nic_id": nic,
                    "device_id": ids[nic],
                    "score": 90.0 - i,
                    "eligible": True,
                    "ineligibility_reason": None,
                }
                for i, nic in enumerate(nics)
            ],
        )


async def create_event(system: System, window: tuple[datetime, datetime], devices: int) -> dict[str, Any]:
    created = await system.client.post(
        "/derms/v1/events",
        json={
            "program_code": PROGRAM,
            "event_type": "ECONOMIC",
            "start_at": window[0].isoformat(),
            "end_at": window[1].isoformat(),
            "target_devices": devices,
        },
    )
    assert created.status_code == 201, created.text
    event: dict[str, Any] = created.json()
    return event


# --- reading both systems ------------------------------------------------------------------------------


async def availability(system: System, program: str = PROGRAM) -> dict[str, tuple[str, str, int]]:
    """nic_id → (availability, holding enrollment, sequence) in the DERMS."""
    a, d = dm.device_availability, dm.devices
    async with system.runtime.async_engine("derms").connect() as connection:
        rows = await connection.execute(
            select(d.c.nic_id, a.c.availability, a.c.enrollment_id, a.c.sequence)
            .join(d, d.c.device_id == a.c.device_id)
            .where(a.c.program_code == program)
        )
        return {r.nic_id: (r.availability, r.enrollment_id, r.sequence) for r in rows}


async def sync_log(system: System, enrollment_id: str) -> list[tuple[int, str, str]]:
    log = dm.enrollment_sync_log
    async with system.runtime.async_engine("derms").connect() as connection:
        rows = await connection.execute(
            select(log.c.sequence, log.c.change, log.c.result)
            .where(log.c.enrollment_id == enrollment_id)
            .order_by(log.c.entry_id)
        )
        return [(int(r.sequence), r.change, r.result) for r in rows]


async def syncs(system: System, enrollment_id: str) -> dict[str, Any]:
    answer = await system.client.get(f"/assethub/v1/enrollments/{enrollment_id}/syncs")
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


async def outbox_envelopes(system: System, which: str, message_type: str) -> list[dict[str, Any]]:
    outbox = ah.outbox if which == "assethub" else dm.outbox
    async with system.runtime.async_engine(which).connect() as connection:  # type: ignore[arg-type]
        rows = await connection.execute(
            select(outbox.c.envelope).where(outbox.c.type == message_type).order_by(outbox.c.position)
        )
        return [json.loads(r.envelope) for r in rows]


async def reservations(system: System, event_id: str) -> dict[str, tuple[str, str | None]]:
    r, d = dm.reservations, dm.devices
    async with system.runtime.async_engine("derms").connect() as connection:
        rows = await connection.execute(
            select(d.c.nic_id, r.c.status, r.c.release_reason)
            .join(d, d.c.device_id == r.c.device_id)
            .where(r.c.event_id == event_id)
        )
        return {row.nic_id: (row.status, row.release_reason) for row in rows}


# --- the tests -------------------------------------------------------------------------------------------


async def test_enrolled_makes_the_devices_available_and_the_ack_marks_the_sync_applied(
    system: System, tmp_path: Path
) -> None:
    await scene(system, tmp_path)
    enrollment_id = await enroll(system, ["NIC1", "NIC2"])

    (sent,) = await outbox_envelopes(system, "assethub", "enrollment-sync.v1")
    assert sent["business_key"] == enrollment_id
    assert sent["sequence"] == 1
    payload = sent["payload"]
    assert payload["change"] == "ENROLLED"
    assert payload["contact"] == {"contact_id": "P1", "cis_person_id": "P1"}
    assert payload["subscription"]["subscription_id"] == enrollment_id
    assert payload["subscription"]["cis_account_id"] == ACCOUNT
    assert payload["subscription"]["status"] == "ACTIVE"
    assert payload["subscription"]["start_at"] == "2027-06-01T11:00:00Z"  # when it became ACTIVE
    assert payload["location"] == {"division": "NORTH", "cis_premise_id": "PR1", "cis_service_point_id": "SP1"}
    assert [(x["nic_id"], x["availability"]) for x in payload["devices"]] == [
        ("NIC1", "AVAILABLE"),
        ("NIC2", "AVAILABLE"),
    ]
    assert (await syncs(system, enrollment_id))["sync_state"] == "SENT"

    await system.settle()

    assert await availability(system) == {
        "NIC1": ("AVAILABLE", enrollment_id, 1),
        "NIC2": ("AVAILABLE", enrollment_id, 1),
    }
    assert await sync_log(system, enrollment_id) == [(1, "ENROLLED", "APPLIED")]
    (ack,) = await outbox_envelopes(system, "derms", "enrollment-sync-ack.v1")
    assert ack["correlation_id"] == sent["correlation_id"] == payload["sync_id"]
    assert ack["causation_id"] == sent["message_id"]
    assert ack["payload"]["status"] == "APPLIED"
    state = await syncs(system, enrollment_id)
    assert state["sync_state"] == "APPLIED"
    assert state["sync_sequence"] == 1
    assert [(s["sequence"], s["change"], s["state"]) for s in state["syncs"]] == [(1, "ENROLLED", "APPLIED")]
    assert state["syncs"][0]["acknowledged_at"] is not None
    assert "2 device(s) available" in state["sync_detail"]


async def test_unenroll_releases_future_reservations_but_not_those_of_a_started_event(
    system: System, tmp_path: Path
) -> None:
    await scene(system, tmp_path)
    enrollment_id = await enroll(system, ["NIC1"])
    other_id = await enroll(system, ["NIC2"])
    await system.settle()
    await load_scores(system, PROGRAM, ["NIC1", "NIC2"])
    future = await create_event(system, FUTURE_EVENT, devices=2)
    soon = await create_event(system, SOON_EVENT, devices=2)
    assert future["reserved_count"] == soon["reserved_count"] == 2
    system.clock.set(datetime(2027, 6, 1, 13, 30, tzinfo=UTC))  # the SOON event has started

    answer = await system.client.post(
        f"/assethub/v1/enrollments/{enrollment_id}/unenroll", json={"reason": "customer moved out"}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["state"] == "UNENROLLED"
    assert body["change"] == "UNENROLLED"
    assert body["sync"]["sequence"] == 2
    assert body["sync"]["state"] == "SENT"
    await system.settle()

    # Asset Hub: the enrollment ended, the transition is kept, the sync was applied.
    enrollment = (await system.client.get(f"/assethub/v1/enrollments/{enrollment_id}")).json()
    assert enrollment["state"] == "UNENROLLED"
    last = enrollment["transitions"][-1]
    assert (last["from_state"], last["to_state"], last["reason"]) == ("ACTIVE", "UNENROLLED", "customer moved out")
    assert (await syncs(system, enrollment_id))["sync_state"] == "APPLIED"
    unenrolled = (await outbox_envelopes(system, "assethub", "enrollment-sync.v1"))[-1]["payload"]
    assert unenrolled["subscription"]["status"] == "INACTIVE"
    assert unenrolled["subscription"]["end_at"] == "2027-06-01T13:30:00Z"

    # DERMS: the device is unavailable; its future reservation released, the started event's kept.
    assert await availability(system) == {
        "NIC1": ("UNAVAILABLE", enrollment_id, 2),
        "NIC2": ("AVAILABLE", other_id, 1),
    }
    assert await reservations(system, future["event_id"]) == {
        "NIC1": ("RELEASED", f"device unavailable: UNENROLLED (enrollment {enrollment_id})"),
        "NIC2": ("RESERVED", None),
    }
    assert await reservations(system, soon["event_id"]) == {"NIC1": ("RESERVED", None), "NIC2": ("RESERVED", None)}
    updates = [e for e in await outbox_envelopes(system, "derms", "event-reservation.v1") if e["payload"].get("update")]
    assert [u["payload"]["event_id"] for u in updates] == [future["event_id"]]
    assert [d["nic_id"] for d in updates[0]["payload"]["devices"]] == ["NIC2"]
    assert await sync_log(system, enrollment_id) == [(1, "ENROLLED", "APPLIED"), (2, "UNENROLLED", "APPLIED")]


async def test_unenroll_leaves_the_devices_reservations_in_other_programs(system: System, tmp_path: Path) -> None:
    await scene(system, tmp_path)
    await create_programs(system, "WINTER-BYOT")
    summer = await enroll(system, ["NIC1"])
    winter = await enroll(system, ["NIC1"], program="WINTER-BYOT")
    await system.settle()
    assert (await availability(system, "WINTER-BYOT"))["NIC1"] == ("AVAILABLE", winter, 1)
    await load_scores(system, "WINTER-BYOT", ["NIC1"])
    created = await system.client.post(
        "/derms/v1/events",
        json={
            "program_code": "WINTER-BYOT",
            "event_type": "ECONOMIC",
            "start_at": FUTURE_EVENT[0].isoformat(),
            "end_at": FUTURE_EVENT[1].isoformat(),
            "target_devices": 1,
        },
    )
    assert created.status_code == 201, created.text
    winter_event = created.json()["event_id"]

    answer = await system.client.post(f"/assethub/v1/enrollments/{summer}/unenroll", json={"reason": "opted out"})
    assert answer.status_code == 200, answer.text
    await system.settle()

    assert (await availability(system))["NIC1"][0] == "UNAVAILABLE"
    assert (await availability(system, "WINTER-BYOT"))["NIC1"] == ("AVAILABLE", winter, 1)
    assert await reservations(system, winter_event) == {"NIC1": ("RESERVED", None)}


async def test_device_replacement_swaps_both_devices_atomically(system: System, tmp_path: Path) -> None:
    await scene(system, tmp_path)
    enrollment_id = await enroll(system, ["NIC1"])
    await system.settle()
    await load_scores(system, PROGRAM, ["NIC1"])
    event = await create_event(system, FUTURE_EVENT, devices=1)
    system.clock.advance(timedelta(minutes=5))

    answer = await system.client.post(
        f"/assethub/v1/enrollments/{enrollment_id}/replace-device",
        json={
            "old": {"head_end_system": HEAD_END, "nic_id": "NIC1"},
            "new": {
                "head_end_system": HEAD_END,
                "nic_id": "NIC9",
                "device_type": "THERMOSTAT",
                "manufacturer": "ecobee",
                "model": "Premium Plus",
                "serial_no": "SN-NIC9",
            },
        },
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["change"] == "DEVICE_REPLACED"
    assert answer.json()["state"] == "ACTIVE"
    sent = (await outbox_envelopes(system, "assethub", "enrollment-sync.v1"))[-1]
    assert sent["sequence"] == 2
    assert [(d["nic_id"], d["availability"]) for d in sent["payload"]["devices"]] == [
        ("NIC1", "UNAVAILABLE"),
        ("NIC9", "AVAILABLE"),
    ]
    await system.settle()

    # Asset Hub: the old device is removed (kept), the new one added in its slot, the swap kept.
    enrollment = (await system.client.get(f"/assethub/v1/enrollments/{enrollment_id}")).json()
    devices = {d["nic_id"]: d for d in enrollment["devices"]}
    assert devices["NIC1"]["removed_at"] is not None
    assert devices["NIC9"]["removed_at"] is None
    assert devices["NIC9"]["sequence"] == devices["NIC1"]["sequence"] == 1
    last = enrollment["transitions"][-1]
    assert (last["from_state"], last["to_state"]) == ("ACTIVE", "ACTIVE")
    assert last["reason"] == "DEVICE_REPLACED: ECOBEE:NIC1 → ECOBEE:NIC9"
    assert (await syncs(system, enrollment_id))["sync_state"] == "APPLIED"

    # DERMS: both changed by the one sync (same sequence, one log entry); the old one's reservation went.
    assert await availability(system) == {
        "NIC1": ("UNAVAILABLE", enrollment_id, 2),
        "NIC9": ("AVAILABLE", enrollment_id, 2),
    }
    async with system.runtime.async_engine("derms").connect() as connection:
        model = await connection.scalar(select(dm.devices.c.model).where(dm.devices.c.nic_id == "NIC9"))
    assert model == "Premium Plus"
    assert await sync_log(system, enrollment_id) == [(1, "ENROLLED", "APPLIED"), (2, "DEVICE_REPLACED", "APPLIED")]
    assert (await reservations(system, event["event_id"]))["NIC1"][0] == "RELEASED"

    # A later unenrollment lists the replaced device too: every device it ever had becomes unavailable.
    answer = await system.client.post(f"/assethub/v1/enrollments/{enrollment_id}/unenroll", json={"reason": "ended"})
    assert answer.status_code == 200, answer.text
    devices_sent = (await outbox_envelopes(system, "assethub", "enrollment-sync.v1"))[-1]["payload"]["devices"]
    assert sorted((d["nic_id"], d["availability"]) for d in devices_sent) == [
        ("NIC1", "UNAVAILABLE"),
        ("NIC9", "UNAVAILABLE"),
    ]


async def _hold(system: System, message_ids: list[str]) -> dict[str, str]:
    """Take messages out of Asset Hub's outbox without relaying them (marked published); their bodies."""
    async with system.runtime.async_engine("assethub").begin() as connection:
        rows = await connection.execute(
            select(ah.outbox.c.message_id, ah.outbox.c.envelope).where(ah.outbox.c.message_id.in_(message_ids))
        )
        bodies = {r.message_id: r.envelope for r in rows}
        await connection.execute(
            update(ah.outbox).where(ah.outbox.c.message_id.in_(message_ids)).values(published_at=datetime.now(UTC))
        )
    return bodies


async def _deliver_directly(system: System, message_id: str, body: str, *, flow: str = "enrollment-sync") -> None:
    """Publish one message on the transport, as the relay would, and let the worker deliver it."""
    queue = queue_name(system.runtime.settings.bridge.queue_prefix, flow)
    await system.worker.transport.publish(queue, [(message_id, body.encode())])
    await system.worker.consume_once()
    await system.worker.wait_in_flight()


async def test_a_stale_sync_delivered_after_a_newer_one_is_ignored_recorded_and_acknowledged_stale(
    system: System, tmp_path: Path
) -> None:
    await scene(system, tmp_path)
    enrollment_id = await enroll(system, ["NIC1"])
    answer = await system.client.post(
        f"/assethub/v1/enrollments/{enrollment_id}/unenroll", json={"reason": "changed their mind"}
    )
    assert answer.status_code == 200, answer.text
    first, second = [e["message_id"] for e in await outbox_envelopes(system, "assethub", "enrollment-sync.v1")]
    bodies = await _hold(system, [first, second])

    await _deliver_directly(system, second, bodies[second])  # sequence 2, UNENROLLED
    await _deliver_directly(system, first, bodies[first])  # sequence 1, ENROLLED: late
    await system.settle()

    # The late ENROLLED did not make the device available again.
    assert await availability(system) == {"NIC1": ("UNAVAILABLE", enrollment_id, 2)}
    assert await sync_log(system, enrollment_id) == [(2, "UNENROLLED", "APPLIED"), (1, "ENROLLED", "STALE")]
    acks = {a["causation_id"]: a["payload"] for a in await outbox_envelopes(system, "derms", "enrollment-sync-ack.v1")}
    assert acks[first]["status"] == "STALE"
    assert "not newer than sequence 2" in acks[first]["detail"]
    assert acks[second]["status"] == "APPLIED"
    state = await syncs(system, enrollment_id)
    assert {s["sequence"]: s["state"] for s in state["syncs"]} == {1: "STALE", 2: "APPLIED"}
    assert state["sync_state"] == "APPLIED"  # the enrollment shows its latest sync, not the late ack


async def test_a_late_unenrollment_does_not_take_the_device_from_the_enrollment_that_holds_it_now(
    system: System, tmp_path: Path
) -> None:
    await scene(system, tmp_path)
    first = await enroll(system, ["NIC1"])
    await system.settle()
    answer = await system.client.post(f"/assethub/v1/enrollments/{first}/unenroll", json={"reason": "re-enrolling"})
    assert answer.status_code == 200, answer.text
    (held,) = [e for e in await outbox_envelopes(system, "assethub", "enrollment-sync.v1") if e["sequence"] == 2]
    bodies = await _hold(system, [held["message_id"]])
    second = await enroll(system, ["NIC1"])
    await system.settle()
    assert await availability(system) == {"NIC1": ("AVAILABLE", second, 1)}

    await _deliver_directly(system, held["message_id"], bodies[held["message_id"]])
    await system.settle()

    assert await availability(system) == {"NIC1": ("AVAILABLE", second, 1)}
    assert await sync_log(system, first) == [(1, "ENROLLED", "APPLIED"), (2, "UNENROLLED", "APPLIED")]
    state = await syncs(system, first)
    assert state["sync_state"] == "APPLIED"
    assert f"held by enrollment {second}" in state["sync_detail"]


async def test_a_sync_parks_until_the_customer_reaches_the_derms_and_the_cis_import_wakes_it(
    system: System, tmp_path: Path
) -> None:
    extract = write_cis(tmp_path / "cis.csv", [ACCOUNT])
    await import_cis(system.runtime, extract, derms=False)  # Asset Hub knows the customer, the DERMS not yet
    await create_programs(system, PROGRAM)
    enrollment_id = await enroll(system, ["NIC1"])
    await system.settle()

    listed = await system.client.get("/bridge/v1/messages", params={"state": "parked", "business_key": enrollment_id})
    assert listed.status_code == 200, listed.text
    (parked,) = listed.json()["items"]
    assert parked["wake_on"] == f"cis-account:{ACCOUNT}"
    assert parked["flow"] == "enrollment-sync"
    assert await availability(system) == {}
    assert (await syncs(system, enrollment_id))["sync_state"] == "SENT"  # Asset Hub learns only from the ack

    report = await import_cis(system.runtime, extract, assethub=False)
    await system.settle()
    assert await availability(system) == {}, "parked messages wait for their time unless woken"

    woken = await Tracker(system.runtime.async_engine("bridge")).wake(
        cis_account_conditions(report.loaded_account_ids["derms"])
    )
    assert woken == 1
    await system.settle()

    assert await availability(system) == {"NIC1": ("AVAILABLE", enrollment_id, 1)}
    assert (await syncs(system, enrollment_id))["sync_state"] == "APPLIED"
    async with system.runtime.async_engine("bridge").connect() as connection:
        state = await connection.scalar(
            select(tracked_messages.c.state).where(tracked_messages.c.message_id == parked["message_id"])
        )
    assert state == "delivered"


async def test_a_sync_for_a_program_the_derms_lacks_parks_until_its_program_sync_arrives(
    system: System, tmp_path: Path
) -> None:
    await import_cis(system.runtime, write_cis(tmp_path / "cis.csv", [ACCOUNT]))
    await create_programs(system, PROGRAM, settle=False)
    (program_sync,) = await outbox_envelopes(system, "assethub", "program-sync.v1")
    held = await _hold(system, [program_sync["message_id"]])  # the program's sync is late
    enrollment_id = await enroll(system, ["NIC1"])
    await system.settle()
    async with system.runtime.async_engine("bridge").connect() as connection:
        wake_on = await connection.scalar(
            select(tracked_messages.c.wake_on).where(
                tracked_messages.c.business_key == enrollment_id, tracked_messages.c.state == "parked"
            )
        )
    assert wake_on == f"program:{PROGRAM}"

    # The program's sync arrives: delivering it wakes the parked enrollment sync, without an operator.
    await _deliver_directly(system, program_sync["message_id"], held[program_sync["message_id"]], flow="program-sync")
    await system.settle()
    assert await availability(system) == {"NIC1": ("AVAILABLE", enrollment_id, 1)}


async def test_a_sync_the_derms_refuses_is_failed_in_asset_hub_with_the_reason(system: System, tmp_path: Path) -> None:
    await scene(system, tmp_path)
    enrollment_id = await enroll(system, ["NIC1"])
    # A sender bug: an ENROLLED sync that makes its device UNAVAILABLE.
    async with system.runtime.async_engine("assethub").begin() as connection:
        row = (
            await connection.execute(
                select(ah.outbox.c.position, ah.outbox.c.envelope).where(ah.outbox.c.type == "enrollment-sync.v1")
            )
        ).one()
        envelope = json.loads(row.envelope)
        envelope["payload"]["devices"][0]["availability"] = "UNAVAILABLE"
        await connection.execute(
            update(ah.outbox).where(ah.outbox.c.position == row.position).values(envelope=json.dumps(envelope))
        )
    await system.settle()

    assert await availability(system) == {}
    assert await sync_log(system, enrollment_id) == [(1, "ENROLLED", "REJECTED")]
    state = await syncs(system, enrollment_id)
    assert state["sync_state"] == "FAILED"
    assert "must make every device AVAILABLE" in state["sync_detail"]
    assert state["syncs"][0]["state"] == "FAILED"


async def test_unenroll_and_replace_are_refused_outside_active_with_a_problem(system: System, tmp_path: Path) -> None:
    await scene(system, tmp_path)
    enrollment_id = await enroll(system, ["NIC1"])
    async with system.runtime.async_engine("assethub").begin() as connection:
        await connection.execute(
            update(ah.enrollments).where(ah.enrollments.c.enrollment_id == enrollment_id).values(state="DEVICE_SETUP")
        )
    replacement = {
        "old": {"head_end_system": HEAD_END, "nic_id": "NIC1"},
        "new": {
            "head_end_system": HEAD_END,
            "nic_id": "NIC2",
            "device_type": "THERMOSTAT",
            "manufacturer": "ecobee",
            "model": "Premium",
            "serial_no": "SN-NIC2",
        },
    }

    refused = await system.client.post(f"/assethub/v1/enrollments/{enrollment_id}/unenroll", json={"reason": "x"})
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    assert refused.json()["type"].endswith("/enrollment-state")
    assert "DEVICE_SETUP" in refused.json()["detail"]
    refused = await system.client.post(f"/assethub/v1/enrollments/{enrollment_id}/replace-device", json=replacement)
    assert refused.status_code == 409
    assert "only while ACTIVE" in refused.json()["detail"]

    missing = await system.client.post("/assethub/v1/enrollments/nope/unenroll", json={"reason": "x"})
    assert missing.status_code == 404

    # Nothing changed and nothing more was sent: one sync (the ENROLLED one), no new transition.
    async with system.runtime.async_engine("assethub").connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(ah.enrollment_syncs)) == 1
        sent = select(func.count()).select_from(ah.outbox).where(ah.outbox.c.type == "enrollment-sync.v1")
        assert await connection.scalar(sent) == 1
        transitions = await connection.scalar(
            select(func.count())
            .select_from(ah.enrollment_transitions)
            .where(ah.enrollment_transitions.c.enrollment_id == enrollment_id)
        )
    assert transitions == 3


async def test_unenroll_twice_is_refused_and_the_first_stands(system: System, tmp_path: Path) -> None:
    await scene(system, tmp_path)
    enrollment_id = await enroll(system, ["NIC1"])
    blank = await system.client.post(f"/assethub/v1/enrollments/{enrollment_id}/unenroll", json={"reason": "   "})
    assert blank.status_code == 422
    assert blank.json()["errors"][0]["field"] == "body.reason"
    first = await system.client.post(f"/assethub/v1/enrollments/{enrollment_id}/unenroll", json={"reason": "first"})
    assert first.status_code == 200, first.text
    again = await system.client.post(f"/assethub/v1/enrollments/{enrollment_id}/unenroll", json={"reason": "again"})
    assert again.status_code == 409
    assert "UNENROLLED" in again.json()["detail"]
    state = await syncs(system, enrollment_id)
    assert [s["change"] for s in state["syncs"]] == ["ENROLLED", "UNENROLLED"]


@pytest.mark.parametrize(
    ("change", "status", "field"),
    [
        ({"old": {"nic_id": "NIC7"}}, 422, "body.old"),
        ({"new": {"nic_id": "NIC1"}}, 422, "body.new.nic_id"),
        ({"new": {"nic_id": "NIC2"}}, 422, "body.new.nic_id"),
        ({"new": {"device_type": "BATTERY"}}, 422, "body.new.device_type"),
        ({"new": {"head_end_system": "OTHER-HE"}}, 422, "body.new.head_end_system"),
        ({"new": {"nic_id": "HELD"}}, 409, None),
        ({"new": {"manufacturer": " "}}, 422, "body.new.manufacturer"),
    ],
    ids=[
        "old-not-in-enrollment",
        "new-is-old",
        "new-already-in",
        "type-not-eligible",
        "other-head-end",
        "held",
        "blank",
    ],
)
async def test_a_device_replacement_that_cannot_be_made_is_refused_and_changes_nothing(
    system: System, tmp_path: Path, change: dict[str, dict[str, str]], status: int, field: str | None
) -> None:
    await scene(system, tmp_path)
    enrollment_id = await enroll(system, ["NIC1", "NIC2"])
    await enroll(system, ["HELD"])  # HELD has its own ACTIVE enrollment in the program
    body: dict[str, dict[str, str]] = {
        "old": {"head_end_system": HEAD_END, "nic_id": "NIC1"},
        "new": {
            "head_end_system": HEAD_END,
            "nic_id": "NIC9",
            "device_type": "THERMOSTAT",
            "manufacturer": "ecobee",
            "model": "Premium",
            "serial_no": "SN-NIC9",
        },
    }
    for part, values in change.items():
        body[part] = body[part] | values

    refused = await system.client.post(f"/assethub/v1/enrollments/{enrollment_id}/replace-device", json=body)

    assert refused.status_code == status, refused.text
    problem = refused.json()
    if field is not None:
        assert field in [e["field"] for e in problem["errors"]]
    else:
        assert problem["type"].endswith("/device-already-enrolled")
    async with system.runtime.async_engine("assethub").connect() as connection:
        removed = await connection.scalar(
            select(func.count())
            .select_from(ah.enrollment_devices)
            .where(
                ah.enrollment_devices.c.enrollment_id == enrollment_id, ah.enrollment_devices.c.removed_at.is_not(None)
            )
        )
        sequence = await connection.scalar(
            select(ah.enrollments.c.sync_sequence).where(ah.enrollments.c.enrollment_id == enrollment_id)
        )
        new_device = await connection.scalar(select(ah.devices.c.device_id).where(ah.devices.c.nic_id == "NIC9"))
    assert (removed, sequence, new_device) == (0, 1, None)


async def test_queueing_many_syncs_is_one_set_based_call(runtime: Runtime, tmp_path: Path) -> None:
    """Many enrollments in one call (the setup step activates them in batches, more than one IN-list
    chunk here): one message and one SENT sync row each, sequences bumped per enrollment; and a caller's
    mistakes are refused."""
    now = datetime(2027, 6, 1, 12, tzinfo=UTC)
    accounts = [f"A{n}" for n in range(1, 1201)]
    try:
        await import_cis(runtime, write_cis(tmp_path / "cis.csv", accounts), derms=False)
        ids = await insert_active_enrollments(runtime, now, [(a, [f"NIC{a}"]) for a in accounts], sync=False)
        async with runtime.async_engine("assethub").begin() as connection:
            assert await queue_enrollment_sync(connection, ids + ids[:3], SyncChange.ENROLLED, now) == 1200
        async with runtime.async_engine("assethub").begin() as connection:
            assert await queue_enrollment_sync(connection, ids[:2], SyncChange.ENROLLED, now) == 2
        async with runtime.async_engine("assethub").connect() as connection:
            outbox = await connection.scalar(
                select(func.count()).select_from(ah.outbox).where(ah.outbox.c.type == "enrollment-sync.v1")
            )
            rows = await connection.scalar(select(func.count()).select_from(ah.enrollment_syncs))
            sequences = dict(
                (await connection.execute(select(ah.enrollments.c.enrollment_id, ah.enrollments.c.sync_sequence)))
                .tuples()
                .all()
            )
            states = set((await connection.execute(select(ah.enrollments.c.sync_state))).scalars())
            last = json.loads(
                (
                    await connection.execute(
                        select(ah.outbox.c.envelope).order_by(ah.outbox.c.position.desc()).limit(1)
                    )
                ).scalar_one()
            )
        assert outbox == rows == 1202
        assert [sequences[i] for i in ids[:3]] == [2, 2, 1]
        assert states == {"SENT"}
        assert (last["business_key"], last["sequence"]) == (ids[1], 2)

        async with runtime.async_engine("assethub").connect() as connection:
            with pytest.raises(ValueError, match="DEVICE_REPLACED sync needs"):
                await queue_enrollment_sync(connection, ids[:1], SyncChange.DEVICE_REPLACED, now)
            with pytest.raises(ValueError, match="belong to DEVICE_REPLACED"):
                await queue_enrollment_sync(connection, ids[:1], SyncChange.ENROLLED, now, old_device_id=1)
            with pytest.raises(ValueError, match="is ACTIVE: a UNENROLLED sync"):
                await queue_enrollment_sync(connection, ids[:1], SyncChange.UNENROLLED, now)
            with pytest.raises(ValueError, match="no enrollment has the id 'missing'"):
                await queue_enrollment_sync(connection, ["missing"], SyncChange.ENROLLED, now)
            await connection.rollback()
    finally:
        await runtime.aclose()


async def test_messages_that_cannot_be_ordered_or_matched_are_refused_for_the_dead_letter_queue(
    system: System, tmp_path: Path
) -> None:
    """An enrollment sync without a sequence cannot be ordered, and an acknowledgement of a sync Asset Hub
    never sent matches nothing: both are 422 problems (the bridge dead-letters them), with no effect."""
    await scene(system, tmp_path)
    enrollment_id = await enroll(system, ["NIC1"])
    (sent,) = await outbox_envelopes(system, "assethub", "enrollment-sync.v1")
    unordered = sent | {"message_id": new_id(), "sequence": None}
    refused = await system.client.post(
        "/derms/v1/messages", json=unordered, headers={"Idempotency-Key": unordered["message_id"]}
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["type"].endswith("/invalid-envelope")
    assert await availability(system) == {}
    assert await sync_log(system, enrollment_id) == []

    ack_id = new_id()
    ack: dict[str, Any] = {
        "message_id": ack_id,
        "type": "enrollment-sync-ack.v1",
        "flow": "enrollment-sync",
        "correlation_id": new_id(),
        "source": {"system": "derms"},
        "target": {"system": "assethub"},
        "business_key": enrollment_id,
        "occurred_at": "2027-06-01T12:00:00Z",
        "payload": {"acknowledged_message_id": new_id(), "status": "APPLIED"},
    }
    refused = await system.client.post("/assethub/v1/messages", json=ack, headers={"Idempotency-Key": ack_id})
    assert refused.status_code == 422, refused.text
    assert refused.json()["type"].endswith("/unknown-sync")
    assert (await syncs(system, enrollment_id))["sync_state"] == "SENT"
