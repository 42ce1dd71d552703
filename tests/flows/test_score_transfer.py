"""F4 · device-score-transfer end to end, on SQLite and PostgreSQL: Asset Hub scores its enrolled devices,
stores the file, sends the manifest; the bridge delivers it; the DERMS verifies and loads the snapshot and
acknowledges; Asset Hub records the acknowledgement. Every failure path of flows.md F4 is driven here."""

from __future__ import annotations

import asyncio
import csv
import gzip
import io
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.assethub.adapters import tables as ah
from derbridge.assethub.adapters.participation_summaries import rebuild_summaries
from derbridge.assethub.handlers.score_transfer import JOB_NAME
from derbridge.assethub.services.score_transfer import (
    TRANSFER_LEASE,
    file_key,
    latest_scheduled_time,
    transfer_scores,
)
from derbridge.contracts.device_score_transfer import (
    ACK_TYPE,
    SCORE_FILE_COLUMNS,
    TYPE,
    Compression,
    ScoreFileManifest,
    ScoreTransfer,
)
from derbridge.contracts.envelope import Envelope
from derbridge.contracts.registry import new_envelope
from derbridge.derms.adapters import tables as dm
from derbridge.derms.domain.score_file import InvalidScoreFile
from derbridge.derms.services import score_snapshots
from derbridge.filestore.factory import build_file_store
from derbridge.filestore.manifest import describe_file
from derbridge.infra.outbox import deserialize, write_outbox

if TYPE_CHECKING:
    from tests.support.system import System

pytest_plugins = ["tests.support.system"]

START = datetime(2027, 6, 1, 12, tzinfo=UTC)  # the system fixture's business clock
SUMMER, WINTER, PAUSED = "SUMMER-BYOT", "WINTER-BYOT", "PAUSED-BYOT"

# Asset Hub device ids; the DERMS gives the same devices other ids, so a match must go by (head end, nic).
A, B, C, D, E, F, G, H, S = range(1, 10)
IDENTITY = {
    A: ("ECOBEE", "A-1"),
    B: ("NEST", "B-1"),
    C: ("ECOBEE", "C-1"),
    D: ("HONEYWELL", "D-1"),
    E: ("SENSI", "E-1"),
    F: ("ECOBEE", "F-1"),
    G: ("ECOBEE", "G-1"),
    H: ("ECOBEE", "H-1"),
    S: ("NEST", "S-1"),
}
IDENTITY_ID = {identity: device_id for device_id, identity in IDENTITY.items()}
DERMS_KNOWS = (A, B, C, D, H)  # E is unknown to the DERMS

# What the scores must be, worked out by hand from scoring.md (SUMMER default rules; WINTER weights 0.5/0.5):
#   SUMMER A: [SP, SP, IO] seen 2 h ago -> r 0.755747, c 1 -> 81.7 eligible (a cancelled call 1 day ago: no fatigue)
#   SUMMER B: never seen -> c 0 -> 100 * 0.75 * 0.7 = 52.5, DEVICE_OFFLINE
#   SUMMER C: [NR, NR, NR] seen 1 h ago -> r = 1.4 / 4.628409 = 0.302479 -> 47.7, NON_RESPONSIVE_STREAK
#   SUMMER E, H: no history, seen 1 h ago -> 100 * (0.525 + 0.25) = 77.5
#   WINTER A, D: no WINTER history, seen recently -> 100 * (0.5 * 0.7 + 0.5 * 1) = 85.0
#   Not scored: F (enrollment UNENROLLED), G (replaced by H), S (program SUSPENDED).
EXPECTED = [
    [SUMMER, "ECOBEE", "A-1", str(A), "81.7", "true", ""],
    [SUMMER, "ECOBEE", "C-1", str(C), "47.7", "false", "NON_RESPONSIVE_STREAK"],
    [SUMMER, "ECOBEE", "H-1", str(H), "77.5", "true", ""],
    [SUMMER, "NEST", "B-1", str(B), "52.5", "false", "DEVICE_OFFLINE"],
    [SUMMER, "SENSI", "E-1", str(E), "77.5", "true", ""],
    [WINTER, "ECOBEE", "A-1", str(A), "85.0", "true", ""],
    [WINTER, "HONEYWELL", "D-1", str(D), "85.0", "true", ""],
]


def engines(system: System) -> tuple[AsyncEngine, AsyncEngine]:
    return system.runtime.async_engine("assethub"), system.runtime.async_engine("derms")


async def create_program(system: System, code: str, status: str = "ACTIVE", **rules: Any) -> None:
    response = await system.client.post(
        "/assethub/v1/programs", json={"program_code": code, "name": code, "status": "ACTIVE", "rules": rules}
    )
    assert response.status_code == 201, response.text
    if status != "ACTIVE":
        response = await system.client.patch(f"/assethub/v1/programs/{code}", json={"status": status})
        assert response.status_code == 200, response.text


def enrollment(enrollment_id: str, program: str, state: str = "ACTIVE") -> dict[str, Any]:
    return {
        "enrollment_id": enrollment_id,
        "head_end_system": "ECOBEE",
        "request_id": f"req-{enrollment_id}",
        "program_code": program,
        "cis_person_id": "P1",
        "cis_account_id": "A1",
        "cis_premise_id": "PR1",
        "cis_service_point_id": "SP1",
        "state": state,
        "rejections": [],
        "requested_at": START - timedelta(days=90),
        "created_at": START - timedelta(days=90),
        "updated_at": START - timedelta(days=90),
    }


def status_check(device_id: int, seen: datetime) -> dict[str, Any]:
    return {
        "check_id": f"check-{device_id}-{seen.timestamp()}",
        "device_id": device_id,
        "reason": "AGENT_TROUBLESHOOT",
        "requested_by": "test",
        "status": "ANSWERED",
        "requested_at": seen,
        "timeout_at": seen + timedelta(minutes=10),
        "answered_at": seen,
        "result": "SUCCESS",
        "communication_status": "ONLINE",
        "last_communication_at": seen,
        "source": "aggregator",
        "late_answer": False,
    }


def event(event_id: str, program: str, days_ago: float, status: str = "COMPLETED") -> dict[str, Any]:
    start = START - timedelta(days=days_ago)
    return {
        "event_id": event_id,
        "derms_instance_id": "derms-1",
        "program_code": program,
        "event_type": "ECONOMIC",
        "start_at": start,
        "end_at": start + timedelta(hours=2),
        "status": status,
        "received_at": start - timedelta(days=1),
    }


def participation(event_id: str, device_id: int, outcome: str | None, status: str = "COMPLETED") -> dict[str, Any]:
    return {
        "record_id": f"{event_id}-{device_id}",
        "event_id": event_id,
        "device_id": device_id,
        "status": status,
        "reservation_start_at": START,
        "reservation_end_at": START,
        "outcome": outcome,
        "preemptive_opt_out": False,
    }


async def seed(system: System) -> None:
    """Asset Hub's programs, enrollments, devices, status checks and participation; the DERMS's devices."""
    await create_program(system, SUMMER)
    await create_program(system, WINTER, reliability_weight=0.5, connectivity_weight=0.5)
    await create_program(system, PAUSED, status="SUSPENDED")
    assethub, derms = engines(system)
    devices = [
        {
            "device_id": device_id,
            "head_end_system": head_end,
            "nic_id": nic,
            "device_type": "THERMOSTAT",
            "manufacturer": "Acme",
            "model": "T1",
            "serial_no": f"S{device_id}",
            "created_at": START - timedelta(days=90),
        }
        for device_id, (head_end, nic) in IDENTITY.items()
    ]
    enrollments = [
        enrollment("e-a", SUMMER),
        enrollment("e-a-winter", WINTER),
        enrollment("e-b", SUMMER),
        enrollment("e-c", SUMMER),
        enrollment("e-d", WINTER),
        enrollment("e-e", SUMMER),
        enrollment("e-f", SUMMER, state="UNENROLLED"),
        enrollment("e-gh", SUMMER),
        enrollment("e-s", PAUSED),
    ]
    added = START - timedelta(days=60)
    members = [
        {"enrollment_id": e, "device_id": d, "sequence": 1, "added_at": added, "removed_at": removed}
        for e, d, removed in [
            ("e-a", A, None),
            ("e-a-winter", A, None),
            ("e-b", B, None),
            ("e-c", C, None),
            ("e-d", D, None),
            ("e-e", E, None),
            ("e-f", F, None),
            ("e-gh", G, START - timedelta(days=5)),  # replaced by H
            ("e-gh", H, None),
            ("e-s", S, None),
        ]
    ]
    hour = timedelta(hours=1)
    checks = [
        status_check(A, START - 30 * hour),  # an older answer: the latest one counts
        status_check(A, START - 2 * hour),
        status_check(C, START - hour),
        status_check(D, START - hour),
        status_check(E, START - hour),
        status_check(H, START - hour),
        status_check(F, START - hour),
        status_check(S, START - hour),
    ]
    events = [
        event("ev-1", SUMMER, 1, status="CANCELLED"),
        event("ev-10", SUMMER, 10),
        event("ev-20", SUMMER, 20),
        event("ev-30", SUMMER, 30),
    ]
    records = [
        participation("ev-1", A, None, status="CANCELLED"),
        participation("ev-10", A, "SUCCESSFUL_PARTICIPATION"),
        participation("ev-20", A, "SUCCESSFUL_PARTICIPATION"),
        participation("ev-30", A, "IN_FLIGHT_OVERRIDE"),
        participation("ev-10", C, "NON_RESPONSIVE"),
        participation("ev-20", C, "NON_RESPONSIVE"),
        participation("ev-30", C, "NON_RESPONSIVE"),
        participation("ev-10", F, "NON_RESPONSIVE"),
    ]
    async with assethub.begin() as connection:
        await connection.execute(insert(ah.devices), devices)
        await connection.execute(insert(ah.enrollments), enrollments)
        await connection.execute(insert(ah.enrollment_devices), members)
        await connection.execute(insert(ah.device_status_checks), checks)
        await connection.execute(insert(ah.program_events), events)
        await connection.execute(insert(ah.participation_records), records)
        # Records inserted directly, not through the F5/F7 handlers: summarise them as those handlers would.
        await rebuild_summaries(connection)
    async with derms.begin() as connection:
        await connection.execute(
            insert(dm.devices),
            [
                {
                    "device_id": 100 + device_id,
                    "head_end_system": IDENTITY[device_id][0],
                    "nic_id": IDENTITY[device_id][1],
                    "device_type": "THERMOSTAT",
                    "manufacturer": "Acme",
                    "model": "T1",
                    "created_at": START,
                }
                for device_id in DERMS_KNOWS
            ],
        )


async def request_transfer(system: System) -> dict[str, Any]:
    response = await system.client.post("/assethub/v1/score-transfers")
    assert response.status_code == 202, response.text
    report: dict[str, Any] = response.json()
    return report


async def current_snapshot(system: System) -> dict[str, Any] | None:
    _, derms = engines(system)
    async with derms.connect() as connection:
        row = (
            (await connection.execute(select(dm.score_snapshots).where(dm.score_snapshots.c.is_current.is_(True))))
            .mappings()
            .all()
        )
    assert len(row) <= 1, "at most one snapshot is current"
    return dict(row[0]) if row else None


async def derms_scores(system: System, file_id: str) -> list[tuple[Any, ...]]:
    _, derms = engines(system)
    s = dm.device_scores
    async with derms.connect() as connection:
        rows = await connection.execute(
            select(s.c.program_code, s.c.head_end_system, s.c.nic_id, s.c.device_id, s.c.score, s.c.eligible)
            .add_columns(s.c.ineligibility_reason)
            .where(s.c.file_id == file_id)
            .order_by(s.c.program_code, s.c.head_end_system, s.c.nic_id)
        )
        return [tuple(r) for r in rows]


async def assethub_scores(system: System, file_id: str) -> dict[tuple[str, int], SimpleNamespace]:
    """Asset Hub's scores with components, through its API, two to a page (the cursor crosses programs' rows)."""
    found: dict[tuple[str, int], SimpleNamespace] = {}
    for program in (SUMMER, WINTER):
        after: str | None = None
        while True:
            params = {"program_code": program, "limit": "2", **({"after": after} if after else {})}
            response = await system.client.get(f"/assethub/v1/score-snapshots/{file_id}/scores", params=params)
            assert response.status_code == 200, response.text
            body = response.json()
            for item in body["items"]:
                assert (item["file_id"], item["program_code"]) == (file_id, program)
                found[(program, item["device_id"])] = SimpleNamespace(**item)
            after = body["next_after"]
            if after is None:
                break
    return found


async def acknowledgements(system: System) -> list[dict[str, Any]]:
    assethub, _ = engines(system)
    async with assethub.connect() as connection:
        rows = await connection.execute(
            select(ah.inbox.c.response).where(ah.inbox.c.type == ACK_TYPE).order_by(ah.inbox.c.received_at)
        )
        return [r.response for r in rows]


async def bridge_messages(system: System, **filters: str) -> list[dict[str, Any]]:
    response = await system.client.get(
        "/bridge/v1/messages", params={"flow": "device-score-transfer", "limit": 100, **filters}
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


def stored_path(system: System, report: dict[str, Any]) -> Path:
    settings = system.runtime.settings
    root = settings.files.local_root or settings.data_dir / "files"
    assert report["location"]["store"] == "local"
    return root.joinpath(*report["location"]["key"].split("/"))


async def sent_envelope(system: System, file_id: str) -> Envelope:
    assethub, _ = engines(system)
    async with assethub.connect() as connection:
        bodies = (await connection.execute(select(ah.outbox.c.envelope).where(ah.outbox.c.type == TYPE))).scalars()
        envelopes = [deserialize(b) for b in bodies]
    return next(e for e in envelopes if e.payload["manifest"]["file_id"] == file_id)


# ---------------------------------------------------------------- the happy path


async def test_transfer_loads_the_snapshot_in_the_derms(system: System) -> None:
    await seed(system)
    report = await request_transfer(system)
    assert report["status"] == "transferred"
    assert report["programs"] == [SUMMER, WINTER]
    assert report["row_count"] == len(EXPECTED)
    assert report["eligible_count"] == 5
    file_id = report["file_id"]

    # The file in the store: gzip'd CSV with the contract's header and the hand-computed rows, in order.
    path = stored_path(system, report)
    assert report["location"]["key"] == file_key(file_id, START)
    assert path.stat().st_size == report["byte_size"]
    with gzip.open(path, "rt", encoding="utf-8", newline="") as text:
        lines = list(csv.reader(text))
    assert tuple(lines[0]) == SCORE_FILE_COLUMNS
    assert [line[:7] for line in lines[1:]] == EXPECTED
    assert {line[7] for line in lines[1:]} == {"2027-06-01T12:00:00Z"}

    # Asset Hub keeps the snapshot with each score's components.
    assethub, _ = engines(system)
    async with assethub.connect() as connection:
        snapshot = (
            (await connection.execute(select(ah.score_snapshots).where(ah.score_snapshots.c.file_id == file_id)))
            .mappings()
            .one()
        )
    components = await assethub_scores(system, file_id)
    assert snapshot["row_count"] == 7
    assert snapshot["eligible_count"] == 5
    assert snapshot["sha256"] == report["sha256"]
    assert snapshot["programs"] == [SUMMER, WINTER]
    assert len(components) == 7
    a = components[(SUMMER, A)]
    assert (a.score, a.eligible, a.ineligibility_reason) == (81.7, True, None)
    assert a.reliability == pytest.approx(0.755747421, abs=1e-9)
    assert (a.connectivity, a.fatigue) == (1.0, 0.0)
    c = components[(SUMMER, C)]
    assert c.reliability == pytest.approx(1.4 / 4.628408846551323)
    assert components[(SUMMER, B)].connectivity == 0.0

    await system.settle()

    # The DERMS: the snapshot is current, with the same scores; device ids resolved by (head end, nic).
    current = await current_snapshot(system)
    assert current is not None
    assert current["file_id"] == file_id
    assert current["row_count"] == 7
    assert current["unknown_devices"] == 1
    assert current["scoring_model_version"] == "v1"
    assert current["generated_at"] == START
    loaded = await derms_scores(system, file_id)
    assert [
        [p, h, n, str(IDENTITY_ID[(h, n)]), f"{score:.1f}", "true" if eligible else "false", reason or ""]
        for p, h, n, _, score, eligible, reason in loaded
    ] == EXPECTED
    assert {(h, n): device_id for _, h, n, device_id, *_ in loaded} == {
        **{IDENTITY[d]: 100 + d for d in DERMS_KNOWS},
        IDENTITY[E]: None,
    }

    # Asset Hub recorded the acknowledgement: applied, one unknown device named.
    acks = await acknowledgements(system)
    assert len(acks) == 1
    assert acks[0]["status"] == "APPLIED"
    assert acks[0]["file_id"] == file_id
    assert acks[0]["known_file"] is True
    assert acks[0]["unknown_devices_listed"] == 1
    assert "1 rows for devices the DERMS does not know" in acks[0]["detail"]
    messages = await bridge_messages(system)
    assert sorted(m["type"] for m in messages) == [ACK_TYPE, TYPE]
    assert {m["state"] for m in messages} == {"delivered"}
    assert {m["correlation_id"] for m in messages} == {file_id}
    ack_message = next(m for m in messages if m["type"] == ACK_TYPE)
    shown = (await system.client.get(f"/bridge/v1/messages/{ack_message['message_id']}")).json()
    assert shown["envelope"]["payload"]["unknown_devices"] == [{"head_end_system": "SENSI", "nic_id": "E-1"}]


async def test_second_transfer_switches_current_and_keeps_the_first(system: System) -> None:
    await seed(system)
    first = await request_transfer(system)
    await system.settle()
    # Device B answers a status check; a day later the next transfer sees it online.
    assethub, _ = engines(system)
    system.clock.advance(timedelta(days=1))
    async with assethub.begin() as connection:
        await connection.execute(insert(ah.device_status_checks), [status_check(B, system.clock.now())])
    second = await request_transfer(system)
    await system.settle()

    current = await current_snapshot(system)
    assert current is not None
    assert current["file_id"] == second["file_id"] != first["file_id"]
    _, derms = engines(system)
    async with derms.connect() as connection:
        snapshots = {r.file_id: r.is_current for r in await connection.execute(select(dm.score_snapshots))}
    assert snapshots == {first["file_id"]: False, second["file_id"]: True}
    b_now = [row for row in await derms_scores(system, second["file_id"]) if row[2] == "B-1"]
    assert b_now == [(SUMMER, "NEST", "B-1", 100 + B, 77.5, True, None)]
    b_before = [row for row in await derms_scores(system, first["file_id"]) if row[2] == "B-1"]
    assert b_before == [(SUMMER, "NEST", "B-1", 100 + B, 52.5, False, "DEVICE_OFFLINE")]
    assert [a["status"] for a in await acknowledgements(system)] == ["APPLIED", "APPLIED"]


async def test_same_inputs_give_the_same_file(system: System) -> None:
    await seed(system)
    assethub, _ = engines(system)
    one = await transfer_scores(assethub, system.runtime.settings, now=START)
    two = await transfer_scores(assethub, system.runtime.settings, now=START)
    assert one.file_id != two.file_id
    assert (one.sha256, one.byte_size) == (two.sha256, two.byte_size)
    assert one.location is not None
    assert two.location is not None
    assert (
        stored_path(system, one.model_dump(mode="json")).read_bytes()
        == stored_path(system, two.model_dump(mode="json")).read_bytes()
    )


# ---------------------------------------------------------------- idempotence, staleness, bad files


async def test_the_same_file_is_never_loaded_twice(system: System) -> None:
    await seed(system)
    report = await request_transfer(system)
    await system.settle()
    file_id = report["file_id"]
    envelope = await sent_envelope(system, file_id)

    # The same message delivered again: the inbox answers from the first time.
    response = await system.client.post(
        "/derms/v1/messages",
        content=envelope.model_dump_json(),
        headers={"Idempotency-Key": envelope.message_id, "Content-Type": "application/json"},
    )
    assert response.status_code == 200
    assert response.json()["status"] == "already-applied"

    # Another message naming the same file (a re-send): acknowledged as applied, nothing reloaded.
    again = new_envelope(
        TYPE,
        ScoreTransfer.model_validate(envelope.payload),
        business_key=envelope.business_key,
        correlation_id=file_id,
        occurred_at=START,
    )
    assethub, derms = engines(system)
    async with assethub.begin() as connection:
        await write_outbox(connection, ah.outbox, [again])
    await system.settle()

    async with derms.connect() as connection:
        snapshots = await connection.scalar(select(func.count()).select_from(dm.score_snapshots))
        rows = await connection.scalar(select(func.count()).select_from(dm.device_scores))
    assert (snapshots, rows) == (1, 7)
    acks = await acknowledgements(system)
    assert [a["status"] for a in acks] == ["APPLIED", "APPLIED"]
    assert "already loaded" in acks[1]["detail"]
    assert "nothing reloaded" in acks[1]["detail"]


async def test_an_older_file_is_stale(system: System) -> None:
    await seed(system)
    assethub, derms = engines(system)
    newer = await transfer_scores(assethub, system.runtime.settings, now=START)
    await system.settle()
    older = await transfer_scores(assethub, system.runtime.settings, now=START - timedelta(hours=1))
    await system.settle()

    current = await current_snapshot(system)
    assert current is not None
    assert current["file_id"] == newer.file_id
    async with derms.connect() as connection:
        loaded = set((await connection.execute(select(dm.score_snapshots.c.file_id))).scalars())
    assert loaded == {newer.file_id}
    acks = await acknowledgements(system)
    assert [a["status"] for a in acks] == ["APPLIED", "STALE"]
    assert acks[1]["file_id"] == older.file_id
    assert "before the current snapshot" in acks[1]["detail"]


async def test_files_delivered_together_are_loaded_in_order(system: System) -> None:
    # The bridge may deliver several messages in one batch, applied in one transaction (one savepoint each):
    # each file is staged and loaded on its own, and the order of generation decides what is current.
    await seed(system)
    assethub, derms = engines(system)
    settings = system.runtime.settings
    first = await transfer_scores(assethub, settings, now=START)
    second = await transfer_scores(assethub, settings, now=START + timedelta(hours=1))
    newest = await transfer_scores(assethub, settings, now=START + timedelta(hours=3))
    older = await transfer_scores(assethub, settings, now=START + timedelta(hours=2))
    await system.settle()

    current = await current_snapshot(system)
    assert current is not None
    assert current["file_id"] == newest.file_id
    async with derms.connect() as connection:
        loaded = set((await connection.execute(select(dm.score_snapshots.c.file_id))).scalars())
    assert loaded == {first.file_id, second.file_id, newest.file_id}
    for report in (first, second, newest):
        assert report.file_id is not None
        assert len(await derms_scores(system, report.file_id)) == 7
    statuses = {a["file_id"]: a["status"] for a in await acknowledgements(system)}
    assert statuses == {
        first.file_id: "APPLIED",
        second.file_id: "APPLIED",
        newest.file_id: "APPLIED",
        older.file_id: "STALE",
    }


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-10])


def remove(path: Path) -> None:
    path.unlink()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (flip_a_byte, "sha256 differs"),
        (truncate, "byte size differs"),
        (remove, "not in the file store"),
    ],
)
async def test_a_damaged_file_is_not_loaded_and_is_retried_from_the_same_file(
    system: System, damage: Any, reason: str
) -> None:
    await seed(system)
    first = await request_transfer(system)
    await system.settle()
    system.clock.advance(timedelta(hours=1))
    second = await request_transfer(system)
    path = stored_path(system, second)
    good = path.read_bytes()
    damage(path)
    await system.settle()

    # Rejected with the reason, in the bridge's tracking; the old snapshot stays current, nothing loaded.
    [message] = await bridge_messages(system, correlation_id=second["file_id"])
    assert message["state"] == "retrying"
    assert message["last_status"] == 503
    journey = (await system.client.get(f"/bridge/v1/messages/{message['message_id']}")).json()
    assert reason in journey["last_problem"]["detail"]
    assert "previous score snapshot stays current" in journey["last_problem"]["detail"]
    assert journey["last_problem"]["type"].endswith("/score-file-not-ready")
    current = await current_snapshot(system)
    assert current is not None
    assert current["file_id"] == first["file_id"]
    assert await derms_scores(system, second["file_id"]) == []

    # The file is put right: the retry, from the same message and file, loads it.
    path.write_bytes(good)
    deadline = time.monotonic() + 10
    while (current := await current_snapshot(system)) is not None and current["file_id"] != second["file_id"]:
        assert time.monotonic() < deadline, "the retry did not load the repaired file"
        await asyncio.sleep(0.1)
        await system.settle()
    assert len(await derms_scores(system, second["file_id"])) == 7
    [message] = [
        m
        for m in await bridge_messages(system, correlation_id=second["file_id"], state="delivered")
        if m["type"] == TYPE
    ]
    assert message["attempts"] >= 2


async def test_a_file_that_matches_its_manifest_but_breaks_the_rules_is_rejected(system: System) -> None:
    await seed(system)
    first = await request_transfer(system)
    await system.settle()

    # A sender bug: line 3 has a score of 150. The bytes match the manifest, so retrying cannot help.
    rows = [
        list(SCORE_FILE_COLUMNS),
        [SUMMER, "ECOBEE", "A-1", "1", "81.7", "true", "", "2027-06-01T13:00:00Z"],
        [SUMMER, "ECOBEE", "C-1", "3", "150.0", "true", "", "2027-06-01T13:00:00Z"],
    ]
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    path = system.runtime.settings.data_dir / "bad.csv.gz"
    path.write_bytes(gzip.compress(text.getvalue().encode(), mtime=0))
    generated_at = START + timedelta(hours=1)
    described = describe_file(path, file_id="bad-file", generated_at=generated_at, compression=Compression.GZIP)
    async with build_file_store(system.runtime.settings) as store:
        location = await store.put(path, "scores/bad-file.csv.gz")
    envelope = new_envelope(
        TYPE,
        ScoreTransfer(
            manifest=ScoreFileManifest(**described.model_dump(), scoring_model_version="v1", programs=[SUMMER]),
            location=location,
        ),
        business_key="score-file:bad-file",
        correlation_id="bad-file",
        occurred_at=generated_at,
    )
    assethub, derms = engines(system)
    async with assethub.begin() as connection:
        await write_outbox(connection, ah.outbox, [envelope])
    await system.settle()

    acks = await acknowledgements(system)
    assert [a["status"] for a in acks] == ["APPLIED", "REJECTED"]
    assert "line 3: a score missing or outside 0 to 100" in acks[1]["detail"]
    assert acks[1]["known_file"] is False
    current = await current_snapshot(system)
    assert current is not None
    assert current["file_id"] == first["file_id"]
    async with derms.connect() as connection:
        assert "bad-file" not in set((await connection.execute(select(dm.score_snapshots.c.file_id))).scalars())


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([["program_code", "nic_id"], [SUMMER, "A-1"]], "the header is program_code,nic_id"),
        (
            [list(SCORE_FILE_COLUMNS), ["OTHER", "ECOBEE", "A-1", "1", "81.7", "true", "", "x"]],
            "line 2: a program_code missing or not among the manifest's programs",
        ),
        (
            [list(SCORE_FILE_COLUMNS), [SUMMER, "ECOBEE", "A-1", "1", "81.7", "false", "", "x"]],
            "line 2: an ineligible device without an ineligibility_reason",
        ),
        (
            [list(SCORE_FILE_COLUMNS), [SUMMER, "ECOBEE", "A-1", "1", "81.7", "true", "DEVICE_OFFLINE", "x"]],
            "line 2: an ineligibility_reason on an eligible device",
        ),
        (
            [list(SCORE_FILE_COLUMNS), [SUMMER, "ECOBEE", "A-1", "1", "81.7", "maybe", "", "x"]],
            "not a readable score file",
        ),
        (
            [list(SCORE_FILE_COLUMNS)] + [[SUMMER, "ECOBEE", "A-1", "1", "81.7", "true", "", "x"]] * 2,
            "device ECOBEE:A-1 appears 2 times in program SUMMER-BYOT",
        ),
    ],
)
def test_score_file_checks(tmp_path: Path, rows: list[list[str]], expected: str) -> None:
    text = io.StringIO()
    csv.writer(text, lineterminator="\n").writerows(rows)
    path = tmp_path / "scores.csv"
    path.write_text(text.getvalue(), encoding="utf-8")
    with pytest.raises(InvalidScoreFile, match=expected.replace("(", r"\(")):
        score_snapshots.read_score_file(path, Compression.NONE, [SUMMER])


# ---------------------------------------------------------------- one at a time, nothing to do


async def test_one_transfer_at_a_time(system: System) -> None:
    await seed(system)
    assethub, _ = engines(system)
    async with assethub.begin() as connection:
        await connection.execute(
            insert(ah.job_leases),
            [
                {
                    "name": TRANSFER_LEASE,
                    "owner": "another-process",
                    "lease_until": datetime.now(UTC) + timedelta(minutes=5),
                }
            ],
        )
    response = await system.client.post("/assethub/v1/score-transfers")
    assert response.status_code == 409
    assert response.json()["type"].endswith("/transfer-in-progress")
    async with assethub.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(ah.score_snapshots)) == 0
        assert await connection.scalar(select(func.count()).select_from(ah.outbox).where(ah.outbox.c.type == TYPE)) == 0

    # A lease whose holder died expires; the next transfer takes it over.
    async with assethub.begin() as connection:
        await connection.execute(
            ah.job_leases.update()
            .where(ah.job_leases.c.name == TRANSFER_LEASE)
            .values(lease_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    assert (await request_transfer(system))["status"] == "transferred"
    async with assethub.connect() as connection:
        lease = (await connection.execute(select(ah.job_leases).where(ah.job_leases.c.name == TRANSFER_LEASE))).one()
    assert (lease.owner, lease.lease_until) == (None, None)
    assert lease.last_run_at is not None


async def test_nothing_to_score_without_an_active_program(system: System) -> None:
    report = await request_transfer(system)
    assert report["status"] == "nothing-to-score"
    assert report["file_id"] is None
    assethub, _ = engines(system)
    async with assethub.connect() as connection:
        assert await connection.scalar(select(func.count()).select_from(ah.outbox)) == 0


async def test_an_active_program_without_devices_sends_an_empty_snapshot(system: System) -> None:
    await create_program(system, SUMMER)
    report = await request_transfer(system)
    assert (report["status"], report["row_count"], report["programs"]) == ("transferred", 0, [SUMMER])
    await system.settle()
    current = await current_snapshot(system)
    assert current is not None
    assert (current["file_id"], current["row_count"]) == (report["file_id"], 0)


# ---------------------------------------------------------------- the schedule


async def test_scheduled_job_transfers_once_per_scheduled_time(system: System) -> None:
    await seed(system)
    # 12:00 UTC is after today's 02:00 in Chicago (07:00 UTC), and nothing was sent since: due now.
    assert (await system.run_jobs())[JOB_NAME] == 1
    assert (await system.run_jobs())[JOB_NAME] == 0
    system.clock.set(datetime(2027, 6, 2, 6, 59, tzinfo=UTC))
    assert (await system.run_jobs())[JOB_NAME] == 0
    system.clock.set(datetime(2027, 6, 2, 7, 0, tzinfo=UTC))
    assert (await system.run_jobs())[JOB_NAME] == 1
    await system.settle()
    current = await current_snapshot(system)
    assert current is not None
    assert current["generated_at"] == datetime(2027, 6, 2, 7, tzinfo=UTC)
    # An on-demand transfer after the scheduled time stands for it.
    system.clock.set(datetime(2027, 6, 3, 7, 30, tzinfo=UTC))
    await request_transfer(system)
    assert (await system.run_jobs())[JOB_NAME] == 0


def test_latest_scheduled_time() -> None:
    daily = "0 2 * * *"
    chicago = "America/Chicago"
    assert latest_scheduled_time(daily, chicago, START) == datetime(2027, 6, 1, 7, tzinfo=UTC)
    assert latest_scheduled_time(daily, chicago, datetime(2027, 6, 1, 7, tzinfo=UTC)) == datetime(
        2027, 6, 1, 7, tzinfo=UTC
    )
    assert latest_scheduled_time(daily, chicago, datetime(2027, 6, 1, 6, 59, 59, 999999, tzinfo=UTC)) == datetime(
        2027, 5, 31, 7, tzinfo=UTC
    )
    # Winter time: 02:00 in Chicago is 08:00 UTC.
    assert latest_scheduled_time(daily, chicago, datetime(2027, 12, 1, 9, tzinfo=UTC)) == datetime(
        2027, 12, 1, 8, tzinfo=UTC
    )
    assert latest_scheduled_time("*/15 * * * *", "UTC", datetime(2027, 6, 1, 12, 44, tzinfo=UTC)) == datetime(
        2027, 6, 1, 12, 30, tzinfo=UTC
    )
    for bad in ("0 2 * *", "0 0 2 * * *", "61 2 * * *", "every day"):
        with pytest.raises(ValueError, match="5-field cron"):
            latest_scheduled_time(bad, chicago, START)
