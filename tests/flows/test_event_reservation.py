"""F5 · event-reservation, end to end: an event created through the DERMS API reserves the top-ranked devices,
and Asset Hub records the event with one RESERVED participation record per device — inline, or through a
file in the file store above the threshold (claim check). On SQLite and PostgreSQL.

The set-up the event flow tests share (F5, F6, F7) is in ``tests/support/events.py``: every expected
reservation below is worked out by hand from its :data:`DEVICES`.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import func, select, update

from derbridge.assethub.adapters import tables as ah
from derbridge.contracts.device_score_transfer import Compression, FileLocation
from derbridge.contracts.event_reservation import TYPE as RESERVATION_TYPE
from derbridge.contracts.event_reservation import EventReservation, EventStatus, EventType
from derbridge.contracts.registry import new_envelope
from derbridge.derms.adapters import tables as dm
from derbridge.derms.services import event_messages
from derbridge.filestore.factory import build_file_store
from derbridge.filestore.manifest import describe_file
from derbridge.settings import FileStoreSettings
from tests.support.api import assert_problem
from tests.support.embedded import free_port
from tests.support.events import (
    ASSETHUB,
    BRIDGE,
    DERMS,
    DEVICES,
    PROGRAM,
    RANKED,
    SHED_KW,
    Device,
    configured,
    create_event,
    derms_reserved,
    event_body,
    get_all,
    inbox_answers,
    outbox_payloads,
    participations,
    prepare,
    with_threshold,
)

if TYPE_CHECKING:
    from tests.support.system import System

pytest_plugins = ["tests.support.system"]


@pytest.fixture
async def fleet(system: System, tmp_path: Path) -> System:
    """The whole system with the customers, PROGRAM and DEVICES of this module, and file stores configured."""
    await prepare(system, tmp_path)
    return system


# --- F5 ---------------------------------------------------------------------------------------------------


async def test_a_count_target_reserves_the_top_ranked_devices_in_both_systems(fleet: System) -> None:
    system = fleet
    event = await create_event(system, target_devices=3)
    assert (event["status"], event["candidate_count"], event["reserved_count"]) == ("SCHEDULED", 5, 3)
    assert (event["shortfall_devices"], event["reserved_kw"]) == (0, pytest.approx(3 * SHED_KW))
    assert await derms_reserved(system, event["event_id"]) == RANKED[:3]
    # The event and its message were written together: exactly one reservation message, listing the devices.
    sent = await outbox_payloads(system, "derms", "event-reservation.v1")
    assert len(sent) == 1
    payload = sent[0]["payload"]
    assert [(d["head_end_system"], d["nic_id"]) for d in payload["devices"]] == RANKED[:3]
    assert (payload["devices_file"], payload["update"], payload["status"]) == (None, False, "SCHEDULED")

    await system.settle()

    recorded = (await system.client.get(f"{ASSETHUB}/events/{event['event_id']}")).json()
    assert (recorded["program_code"], recorded["event_type"], recorded["status"]) == (PROGRAM, "ECONOMIC", "SCHEDULED")
    assert recorded["derms_instance_id"] == "derms-1"
    assert datetime.fromisoformat(recorded["start_at"]) == datetime.fromisoformat(event["start_at"])
    held = await participations(system, event["event_id"])
    assert sorted(held) == sorted(RANKED[:3])
    assert {r["status"] for r in held.values()} == {"RESERVED"}
    assert {r["outcome"] for r in held.values()} == {None}
    reservations = await get_all(system, f"{DERMS}/events/{event['event_id']}/reservations")
    assert {r["record_id"] for r in reservations} == {r["record_id"] for r in held.values()}
    assert {datetime.fromisoformat(r["reservation_end_at"]) for r in held.values()} == {
        datetime.fromisoformat(event["end_at"])
    }
    # Asset Hub acknowledged, and the DERMS took the acknowledgement.
    (ack,) = await outbox_payloads(system, "assethub", "event-reservation-ack.v1")
    assert ack["payload"]["status"] == "APPLIED"
    assert ack["payload"]["acknowledged_message_id"] == sent[0]["message_id"]
    assert ack["causation_id"] == sent[0]["message_id"]
    assert ack["target"]["instance"] == "derms-1"
    assert await inbox_answers(system, "derms", "event-reservation-ack.v1") == [
        {"event_id": event["event_id"], "status": "APPLIED", "unknown_devices": 0}
    ]


async def test_a_kw_target_and_a_shortfall_are_reserved_and_recorded(fleet: System) -> None:
    system = fleet
    by_kw = await create_event(system, target_kw=4.0)  # 1.5 kW per device: three devices reach 4 kW
    assert (by_kw["reserved_count"], by_kw["reserved_kw"], by_kw["shortfall_kw"]) == (3, pytest.approx(4.5), 0)
    assert await derms_reserved(system, by_kw["event_id"]) == RANKED[:3]
    # An overlapping event finds only the two devices left: a shortfall of 8, reported, not an error.
    short = await create_event(system, start_in=timedelta(hours=2), target_devices=10)
    assert (short["candidate_count"], short["reserved_count"], short["shortfall_devices"]) == (2, 2, 8)
    assert await derms_reserved(system, short["event_id"]) == RANKED[3:]

    await system.settle()

    assert sorted(await participations(system, by_kw["event_id"])) == sorted(RANKED[:3])
    assert sorted(await participations(system, short["event_id"])) == sorted(RANKED[3:])
    events = await get_all(system, f"{ASSETHUB}/events")
    assert sorted(e["event_id"] for e in events) == sorted([by_kw["event_id"], short["event_id"]])


async def test_a_device_asset_hub_does_not_know_is_reported_back_not_fatal(system: System, tmp_path: Path) -> None:
    stranger = Device("HONEYWELL", "h-01", 95.0, in_assethub=False)  # ranked first
    await prepare(system, tmp_path, [*DEVICES, stranger])
    event = await create_event(system, target_devices=3)
    assert await derms_reserved(system, event["event_id"]) == [stranger.key, *RANKED[:2]]

    await system.settle()

    assert sorted(await participations(system, event["event_id"])) == sorted(RANKED[:2])
    (ack,) = await outbox_payloads(system, "assethub", "event-reservation-ack.v1")
    assert ack["payload"]["status"] == "APPLIED"
    assert ack["payload"]["unknown_devices"] == [{"head_end_system": "HONEYWELL", "nic_id": "h-01"}]
    assert "HONEYWELL:h-01" in ack["payload"]["detail"]
    assert await inbox_answers(system, "derms", "event-reservation-ack.v1") == [
        {"event_id": event["event_id"], "status": "APPLIED", "unknown_devices": 1}
    ]


async def test_an_event_in_the_past_or_in_an_unknown_program_is_refused_and_sends_nothing(fleet: System) -> None:
    system = fleet
    past = await system.client.post(
        f"{DERMS}/events",
        json=event_body(system, start_in=timedelta(minutes=-1), lasts=timedelta(hours=1), target_devices=1),
    )
    assert_problem(past, 422, "validation-error")
    unknown = await system.client.post(
        f"{DERMS}/events",
        json=event_body(system, start_in=timedelta(hours=1), lasts=timedelta(hours=1), target_devices=1)
        | {"program_code": "NO-SUCH"},
    )
    assert_problem(unknown, 422, "unknown-program")
    assert await outbox_payloads(system, "derms", "event-reservation.v1") == []


async def test_a_long_list_travels_as_a_verified_file(fleet: System) -> None:
    async with configured(fleet, with_threshold(fleet.runtime.settings, 3)) as system:
        event = await create_event(system, target_devices=4)
        (sent,) = await outbox_payloads(system, "derms", "event-reservation.v1")
        payload = sent["payload"]
        assert payload["devices"] == []
        manifest, location = payload["devices_file"], payload["devices_location"]
        assert manifest["row_count"] == 4
        assert location["store"] == "local"
        assert location["key"].startswith(f"reservations/{event['event_id']}/")
        stored = system.runtime.settings.data_dir / "files" / location["key"]
        lines = stored.read_text().splitlines()
        assert lines[0] == "record_id,head_end_system,nic_id,reservation_start_at,reservation_end_at"
        assert [tuple(line.split(",")[1:3]) for line in lines[1:]] == RANKED[:4]

        await system.settle()

        held = await participations(system, event["event_id"])
        assert sorted(held) == sorted(RANKED[:4])
        assert {r["status"] for r in held.values()} == {"RESERVED"}
        (ack,) = await outbox_payloads(system, "assethub", "event-reservation-ack.v1")
        assert ack["payload"]["status"] == "APPLIED"


async def test_a_corrupted_file_is_refused_whole_and_applied_once_repaired(fleet: System) -> None:
    async with configured(fleet, with_threshold(fleet.runtime.settings, 2)) as system:
        event = await create_event(system, target_devices=3)
        (sent,) = await outbox_payloads(system, "derms", "event-reservation.v1")
        location = FileLocation.model_validate(sent["payload"]["devices_location"])
        stored = system.runtime.settings.data_dir / "files" / location.key
        original = stored.read_bytes()
        stored.write_bytes(original.replace(b"ECOBEE", b"ECOBEF", 1))  # same size, different bytes

        await system.settle()

        dead = (
            await system.client.get(f"{BRIDGE}/messages", params={"flow": "event-reservation", "state": "dead"})
        ).json()
        assert [m["message_id"] for m in dead["items"]] == [sent["message_id"]]
        journey = (await system.client.get(f"{BRIDGE}/messages/{sent['message_id']}")).json()
        assert journey["last_problem"]["type"].endswith("/file-mismatch")
        assert "sha256 differs" in journey["last_problem"]["detail"]
        assert_problem(await system.client.get(f"{ASSETHUB}/events/{event['event_id']}"), 404, "not-found")

        stored.write_bytes(original)  # the operator puts the right file back and replays the message
        replayed = await system.client.post(f"{BRIDGE}/messages/{sent['message_id']}/replay")
        assert replayed.status_code == 202, replayed.text
        await system.settle()

        assert sorted(await participations(system, event["event_id"])) == sorted(RANKED[:3])


async def test_an_update_releases_the_devices_no_longer_listed(fleet: System) -> None:
    system = fleet
    event = await create_event(system, target_devices=3)
    await system.settle()
    # What enrollment sync (F3) does when a device becomes unavailable: release its future reservations and
    # send the event's new list, in one transaction.
    async with system.runtime.async_engine("derms").begin() as connection:
        device_id = await connection.scalar(
            select(dm.devices.c.device_id).where(dm.devices.c.head_end_system == "NEST", dm.devices.c.nic_id == "n-01")
        )
        await connection.execute(
            update(dm.reservations)
            .where(dm.reservations.c.event_id == event["event_id"], dm.reservations.c.device_id == device_id)
            .values(status="RELEASED", released_at=system.clock.now(), release_reason="device unavailable")
        )
        assert (
            await event_messages.queue_reservation_updates(
                connection, [event["event_id"]], system.clock.now(), system.derms.reservation_files
            )
            == 1
        )
    await system.settle()

    held = await participations(system, event["event_id"])
    assert {k: r["status"] for k, r in held.items()} == {
        RANKED[0]: "RESERVED",
        RANKED[1]: "RELEASED",
        RANKED[2]: "RESERVED",
    }
    acks = await outbox_payloads(system, "assethub", "event-reservation-ack.v1")
    assert [a["payload"]["status"] for a in acks] == ["APPLIED", "APPLIED"]
    assert "0 reserved, 1 released" in acks[1]["payload"]["detail"]
    async with system.runtime.async_engine("assethub").connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(ah.participation_records)) == 3


async def test_a_stale_initial_list_after_an_update_changes_nothing(fleet: System) -> None:
    system = fleet
    event = await create_event(system, target_devices=3)
    (initial,) = await outbox_payloads(system, "derms", "event-reservation.v1")
    async with system.runtime.async_engine("derms").begin() as connection:
        await connection.execute(
            update(dm.reservations)
            .where(dm.reservations.c.event_id == event["event_id"], dm.reservations.c.rank == 3)
            .values(status="RELEASED", released_at=system.clock.now(), release_reason="device unavailable")
        )
        await event_messages.queue_reservation_updates(
            connection, [event["event_id"]], system.clock.now(), system.derms.reservation_files
        )
    (_, later) = await outbox_payloads(system, "derms", "event-reservation.v1")
    # The update overtakes the initial list on the way: Asset Hub applies it first, through its inbound API.
    for envelope in (later, initial):
        response = await system.client.post(
            f"{ASSETHUB}/messages", json=envelope, headers={"Idempotency-Key": envelope["message_id"]}
        )
        assert response.status_code == 200, response.text
    assert [a["payload"]["status"] for a in await outbox_payloads(system, "assethub", "event-reservation-ack.v1")] == [
        "APPLIED",
        "STALE",
    ]
    assert sorted(await participations(system, event["event_id"])) == sorted(RANKED[:2])


async def test_with_its_file_store_down_a_long_list_fails_whole(fleet: System) -> None:
    # An SFTP store on a port nobody listens on: lists up to the threshold still travel inline.
    down = with_threshold(fleet.runtime.settings, 2).model_copy(
        update={"files": FileStoreSettings(store="sftp", sftp_port=free_port(), sftp_connect_timeout=2.0)}
    )
    async with configured(fleet, down) as system:
        inline = await create_event(system, target_devices=2)  # at the threshold: still inline
        (sent,) = await outbox_payloads(system, "derms", "event-reservation.v1")
        assert len(sent["payload"]["devices"]) == 2

        refused = await system.client.post(
            f"{DERMS}/events",
            json=event_body(system, start_in=timedelta(hours=1), lasts=timedelta(hours=2), target_devices=3),
        )
        assert_problem(refused, 500, "internal-error")
        # Nothing of the refused event was kept: no event, no reservation, no message.
        events = await get_all(system, f"{DERMS}/events")
        assert [e["event_id"] for e in events] == [inline["event_id"]]
        assert len(await outbox_payloads(system, "derms", "event-reservation.v1")) == 1


async def test_a_file_whose_rows_break_the_contract_is_refused_naming_the_line(fleet: System, tmp_path: Path) -> None:
    system = fleet
    start = system.clock.now() + timedelta(hours=1)
    bad = tmp_path / "reservations.csv"
    bad.write_text(
        "record_id,head_end_system,nic_id,reservation_start_at,reservation_end_at\n"
        f"r-1,ECOBEE,e-01,{start.isoformat()},{(start + timedelta(hours=1)).isoformat()}\n"
        f"r-2,ecobee,e-02,{start.isoformat()},{(start + timedelta(hours=1)).isoformat()}\n"
    )
    manifest = describe_file(bad, file_id="bad-file", generated_at=start, compression=Compression.NONE)
    async with build_file_store(system.runtime.settings) as store:
        location = await store.put(bad, "reservations/crafted/bad-file.csv")
    payload = EventReservation(
        event_id="crafted",
        derms_instance_id="derms-1",
        program_code=PROGRAM,
        event_type=EventType.ECONOMIC,
        start_at=start,
        end_at=start + timedelta(hours=1),
        status=EventStatus.SCHEDULED,
        devices_file=manifest,
        devices_location=location,
    )
    envelope = new_envelope(RESERVATION_TYPE, payload, business_key="crafted", occurred_at=start)
    response = await system.client.post(
        f"{ASSETHUB}/messages",
        content=envelope.model_dump_json(),
        headers={"Idempotency-Key": envelope.message_id, "Content-Type": "application/json"},
    )
    problem = assert_problem(response, 422, "invalid-file")
    assert "line 3, head_end_system" in problem["detail"]
    assert_problem(await system.client.get(f"{ASSETHUB}/events/crafted"), 404, "not-found")
