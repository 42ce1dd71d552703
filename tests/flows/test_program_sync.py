"""Program sync end to end: a program created and changed in Asset Hub → bridge → the DERMS's copy →
acknowledgement → Asset Hub's sync state, on SQLite and PostgreSQL.

Everything goes through the public APIs and the bridge (stepped by hand); messages are held back or sent
twice by taking them out of Asset Hub's outbox and publishing them on the transport directly, as a late or
repeated delivery would.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from sqlalchemy import select, update

from derbridge.assethub.adapters import tables as ah
from derbridge.bridge.tables import tracked_messages
from derbridge.bridge.transport.base import queue_name
from derbridge.derms.adapters import tables as dm

if TYPE_CHECKING:
    from tests.support.system import System

pytest_plugins = ["tests.support.system"]

PROGRAM = "SUMMER-BYOT"
EVENT = (datetime(2027, 6, 2, 14, tzinfo=UTC), datetime(2027, 6, 2, 15, tzinfo=UTC))


async def create(system: System, code: str = PROGRAM, **body: Any) -> dict[str, Any]:
    response = await system.client.post(
        "/assethub/v1/programs", json={"program_code": code, "name": "Summer BYOT", "status": "ACTIVE"} | body
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def change(system: System, code: str = PROGRAM, **body: Any) -> dict[str, Any]:
    response = await system.client.patch(f"/assethub/v1/programs/{code}", json=body)
    assert response.status_code == 200, response.text
    changed: dict[str, Any] = response.json()
    return changed


async def derms_program(system: System, code: str = PROGRAM) -> dict[str, Any]:
    response = await system.client.get(f"/derms/v1/programs/{code}")
    assert response.status_code == 200, response.text
    program: dict[str, Any] = response.json()
    return program


async def assethub_program(system: System, code: str = PROGRAM) -> dict[str, Any]:
    response = await system.client.get(f"/assethub/v1/programs/{code}")
    assert response.status_code == 200, response.text
    program: dict[str, Any] = response.json()
    return program


async def syncs_sent(system: System) -> list[dict[str, Any]]:
    """The program syncs in Asset Hub's outbox, in order."""
    async with system.runtime.async_engine("assethub").connect() as connection:
        rows = await connection.execute(
            select(ah.outbox.c.envelope).where(ah.outbox.c.type == "program-sync.v1").order_by(ah.outbox.c.position)
        )
        return [json.loads(r.envelope) for r in rows]


async def sync_log(system: System, code: str = PROGRAM) -> list[tuple[int, str]]:
    """The DERMS's program sync log: (version, result), by version."""
    log = dm.program_sync_log
    async with system.runtime.async_engine("derms").connect() as connection:
        rows = await connection.execute(
            select(log.c.version, log.c.result).where(log.c.program_code == code).order_by(log.c.version)
        )
        return [(r.version, r.result) for r in rows]


async def acks(system: System) -> dict[str, dict[str, Any]]:
    """The DERMS's acknowledgements of program syncs, by the message they acknowledge."""
    async with system.runtime.async_engine("derms").connect() as connection:
        rows = await connection.execute(select(dm.outbox.c.envelope).where(dm.outbox.c.type == "program-sync-ack.v1"))
        envelopes = [json.loads(r.envelope) for r in rows]
    return {e["payload"]["acknowledged_message_id"]: e for e in envelopes}


async def tracked(system: System, message_id: str) -> dict[str, Any]:
    response = await system.client.get(f"/bridge/v1/messages/{message_id}")
    assert response.status_code == 200, response.text
    journey: dict[str, Any] = response.json()
    return journey


async def hold(system: System, message_ids: list[str]) -> dict[str, str]:
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


async def publish(system: System, message_id: str, body: str) -> None:
    """Put one message on the program-sync queue, as the relay would, and let the worker deliver it."""
    queue = queue_name(system.runtime.settings.bridge.queue_prefix, "program-sync")
    await system.worker.transport.publish(queue, [(message_id, body.encode())])
    await system.worker.consume_once()
    await system.worker.wait_in_flight()


async def create_event(system: System) -> httpx.Response:
    return await system.client.post(
        "/derms/v1/events",
        json={
            "program_code": PROGRAM,
            "event_type": "ECONOMIC",
            "start_at": EVENT[0].isoformat(),
            "end_at": EVENT[1].isoformat(),
            "target_devices": 1,
        },
    )


# --- created once, in Asset Hub ----------------------------------------------------------------------------


async def test_a_program_created_in_asset_hub_reaches_the_derms_and_is_acknowledged(system: System) -> None:
    created = await create(system, rules={"expected_shed_kw": 1.5, "outcome_grace_hours": 12})
    assert (created["version"], created["sync_state"]) == (1, "SENT")
    (sent,) = await syncs_sent(system)
    assert (sent["business_key"], sent["sequence"], sent["flow"]) == (PROGRAM, 1, "program-sync")
    assert sent["payload"] == {
        "program_code": PROGRAM,
        "version": 1,
        "name": "Summer BYOT",
        "status": "ACTIVE",
        "expected_shed_kw": 1.5,
        "outcome_grace_hours": 12.0,
    }
    await system.settle()

    program = await derms_program(system)
    assert (program["name"], program["status"], program["version"]) == ("Summer BYOT", "ACTIVE", 1)
    assert (program["expected_shed_kw"], program["outcome_grace_hours"]) == (1.5, 12.0)
    assert await sync_log(system) == [(1, "APPLIED")]
    assert (await tracked(system, sent["message_id"]))["state"] == "delivered"
    mine = await assethub_program(system)
    assert (mine["version"], mine["sync_state"]) == (1, "APPLIED")
    assert "version 1" in mine["sync_detail"]
    # The DERMS's event rules use what was synced: events may be created in it.
    assert (await create_event(system)).status_code == 201


async def test_an_update_reaches_the_derms_as_the_next_version(system: System) -> None:
    await create(system)
    await system.settle()
    changed = await change(system, name="Summer BYOT 2027", rules={"expected_shed_kw": 2.0})
    assert (changed["version"], changed["sync_state"]) == (2, "SENT")
    assert changed["rules"]["expected_shed_kw"] == 2.0
    assert changed["rules"]["outcome_grace_hours"] == 24.0  # a patch of one rule keeps the others
    await system.settle()

    program = await derms_program(system)
    assert (program["name"], program["expected_shed_kw"], program["version"]) == ("Summer BYOT 2027", 2.0, 2)
    assert await sync_log(system) == [(1, "APPLIED"), (2, "APPLIED")]
    assert (await assethub_program(system))["sync_state"] == "APPLIED"


async def test_a_duplicate_delivery_has_its_effect_once(system: System) -> None:
    await create(system)
    await system.settle()
    await change(system, rules={"expected_shed_kw": 3.0})
    (_, second) = await syncs_sent(system)
    await system.settle()
    body = json.dumps(second)

    # A second copy on the queue (a relay that crashed before marking it published): the bridge's tracking
    # acknowledges it without a second delivery.
    await publish(system, second["message_id"], body)
    # Delivered again to the DERMS itself (a bridge that crashed before settling): the inbox answers with
    # the first answer.
    again = await system.client.post(
        "/derms/v1/messages",
        content=body,
        headers={"Idempotency-Key": second["message_id"], "content-type": "application/json"},
    )
    assert again.status_code == 200, again.text
    assert again.json()["status"] == "already-applied"
    assert again.json()["result"]["result"] == "APPLIED"
    await system.settle()

    assert await sync_log(system) == [(1, "APPLIED"), (2, "APPLIED")]
    assert len(await acks(system)) == 2
    assert (await derms_program(system))["version"] == 2
    assert (await tracked(system, second["message_id"]))["attempts"] == 1


async def test_an_older_version_arriving_after_a_newer_one_is_ignored_and_recorded_stale(system: System) -> None:
    await create(system)
    await system.settle()
    await change(system, name="Second")
    await change(system, name="Third", status="SUSPENDED")
    _, second, third = await syncs_sent(system)
    bodies = await hold(system, [second["message_id"], third["message_id"]])

    await publish(system, third["message_id"], bodies[third["message_id"]])  # version 3
    await publish(system, second["message_id"], bodies[second["message_id"]])  # version 2: late
    await system.settle()

    program = await derms_program(system)
    assert (program["name"], program["status"], program["version"]) == ("Third", "SUSPENDED", 3)
    assert await sync_log(system) == [(1, "APPLIED"), (2, "STALE"), (3, "APPLIED")]
    answers = await acks(system)
    assert answers[second["message_id"]]["payload"]["status"] == "STALE"
    assert answers[second["message_id"]]["sequence"] == 2
    assert "not newer than version 3" in answers[second["message_id"]]["payload"]["detail"]
    assert answers[third["message_id"]]["payload"]["status"] == "APPLIED"
    mine = await assethub_program(system)
    assert (mine["version"], mine["sync_state"]) == (3, "APPLIED")  # the late STALE answer hides nothing


# --- close ---------------------------------------------------------------------------------------------------


async def test_a_closed_program_takes_no_new_events_and_keeps_the_ones_it_has(system: System) -> None:
    await create(system)
    await system.settle()
    before = await create_event(system)
    assert before.status_code == 201, before.text

    closed = await change(system, status="CLOSED")
    assert (closed["status"], closed["version"]) == ("CLOSED", 2)
    await system.settle()

    assert (await derms_program(system))["status"] == "CLOSED"
    refused = await create_event(system)
    assert refused.status_code == 409
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"].endswith("/program-closed")
    assert PROGRAM in problem["detail"]
    assert problem["errors"] == [{"field": "body.program_code", "message": "program is CLOSED"}]
    kept = await system.client.get(f"/derms/v1/events/{before.json()['event_id']}")
    assert kept.json()["status"] == "SCHEDULED"

    # CLOSED is final in Asset Hub: nothing more is sent.
    reopen = await system.client.patch(f"/assethub/v1/programs/{PROGRAM}", json={"status": "ACTIVE"})
    assert reopen.status_code == 409  # a CLOSED program cannot reopen: a conflict with its state
    assert reopen.json()["errors"][0]["field"] == "body.status"
    assert len(await syncs_sent(system)) == 2


async def test_a_suspended_program_refuses_new_events_until_it_is_active_again(system: System) -> None:
    await create(system)
    await change(system, status="SUSPENDED")
    await system.settle()
    refused = await create_event(system)
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("/program-not-active")
    await change(system, status="ACTIVE")
    await system.settle()
    assert (await create_event(system)).status_code == 201


# --- failures ------------------------------------------------------------------------------------------------


async def test_a_sync_that_breaks_its_contract_is_dead_with_the_field_named(system: System) -> None:
    await create(system)
    # A sender bug: an expected shed of zero.
    async with system.runtime.async_engine("assethub").begin() as connection:
        row = (
            await connection.execute(
                select(ah.outbox.c.position, ah.outbox.c.envelope).where(ah.outbox.c.type == "program-sync.v1")
            )
        ).one()
        envelope = json.loads(row.envelope)
        envelope["payload"]["expected_shed_kw"] = 0
        await connection.execute(
            update(ah.outbox).where(ah.outbox.c.position == row.position).values(envelope=json.dumps(envelope))
        )
    await system.settle()

    journey = await tracked(system, envelope["message_id"])
    assert journey["state"] == "dead"
    assert journey["last_problem"]["type"].endswith("/invalid-payload")
    assert [e["field"] for e in journey["last_problem"]["errors"]] == ["payload.expected_shed_kw"]
    assert (await system.client.get(f"/derms/v1/programs/{PROGRAM}")).status_code == 404
    assert (await assethub_program(system))["sync_state"] == "SENT"


async def test_a_sync_the_derms_cannot_order_is_refused_by_the_derms_and_dead(system: System) -> None:
    await create(system)
    async with system.runtime.async_engine("assethub").begin() as connection:
        row = (
            await connection.execute(
                select(ah.outbox.c.position, ah.outbox.c.envelope).where(ah.outbox.c.type == "program-sync.v1")
            )
        ).one()
        envelope = json.loads(row.envelope)
        envelope["sequence"] = 7  # not the payload's version
        await connection.execute(
            update(ah.outbox).where(ah.outbox.c.position == row.position).values(envelope=json.dumps(envelope))
        )
    await system.settle()

    journey = await tracked(system, envelope["message_id"])
    assert (journey["state"], journey["last_status"]) == ("dead", 422)
    assert journey["last_problem"]["type"].endswith("/invalid-envelope")
    assert (await system.client.get(f"/derms/v1/programs/{PROGRAM}")).status_code == 404


async def test_while_the_derms_is_down_a_sync_is_retried_then_delivered(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    down = httpx.AsyncClient(transport=httpx.MockTransport(refuse), base_url="http://derms.down")
    clients = system.worker.deliverer._clients  # the bridge's client of the DERMS, swapped for a dead one
    up = clients["derms"]
    monkeypatch.setitem(clients, "derms", down)
    await create(system)
    await system.settle()
    (sent,) = await syncs_sent(system)
    journey = await tracked(system, sent["message_id"])
    assert journey["state"] == "retrying"
    assert "ConnectError" in journey["journey"][-1]["detail"]
    assert (await assethub_program(system))["sync_state"] == "SENT"

    clients["derms"] = up
    await down.aclose()
    async with system.runtime.async_engine("bridge").begin() as connection:  # its backoff has passed
        await connection.execute(
            update(tracked_messages)
            .where(tracked_messages.c.message_id == sent["message_id"])
            .values(next_attempt_at=datetime.now(UTC))
        )
    await system.settle()
    assert (await tracked(system, sent["message_id"]))["state"] == "delivered"
    assert (await derms_program(system))["version"] == 1
    assert (await assethub_program(system))["sync_state"] == "APPLIED"


async def test_an_acknowledgement_of_a_version_asset_hub_never_sent_is_refused(system: System) -> None:
    await create(system)
    await system.settle()
    (sent,) = await syncs_sent(system)
    (ack,) = (await acks(system)).values()
    for key, sequence in ((PROGRAM, 5), ("NO-SUCH", 1), (PROGRAM, None)):
        forged = ack | {"message_id": f"forged-{key}-{sequence}", "business_key": key, "sequence": sequence}
        answer = await system.client.post(
            "/assethub/v1/messages",
            json=forged,
            headers={"Idempotency-Key": forged["message_id"]},
        )
        assert answer.status_code == 422, answer.text
        assert answer.json()["type"].endswith("/unknown-sync")
    assert sent["message_id"] == ack["payload"]["acknowledged_message_id"]
