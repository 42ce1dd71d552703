"""Webhook delivery with retries (job ``edge-webhooks``), against a real receiver on a loopback port that
answers 500: it is retried after the backoff on the business clock, delivered once when the receiver
recovers (with the subscriber's bearer token), and given up (``failed_at``) after the configured maximum
attempts when it never does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from sqlalchemy import select

from derbridge.edge.tables import edge_notifications, edge_objects
from tests.support.edge import assert_schema, close_clients, make_client, off_loop, serve, ven_client

if TYPE_CHECKING:
    import openadr3

    from tests.support.system import System

pytest_plugins = ["tests.support.system"]

BACKOFF = 10.0
MAX_ATTEMPTS = 3


class FlakyReceiver:
    """A webhook endpoint on loopback: answers the echo challenge, then each POST with the next status of
    ``statuses`` (the last one for ever after), recording what it got."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = statuses
        self.posts: list[tuple[str | None, dict[str, Any], int]] = []
        self.app = FastAPI()

        @self.app.get("/hook")
        async def challenge(echo: str) -> PlainTextResponse:
            return PlainTextResponse(echo)

        @self.app.post("/hook")
        async def notify(request: Request) -> Response:
            status = self.statuses[min(len(self.posts), len(self.statuses) - 1)]
            self.posts.append((request.headers.get("authorization"), await request.json(), status))
            return Response(status_code=status)


@pytest.fixture
async def vtn(system: System) -> AsyncIterator[str]:
    """The embedded system on a loopback port; a short backoff and few attempts for the test."""
    edge = system.runtime.settings.edge
    edge.allow_http_callbacks = True
    edge.allow_private_callbacks = True
    edge.webhook_backoff_seconds = BACKOFF
    edge.webhook_max_attempts = MAX_ATTEMPTS
    async with serve(system.app) as base:
        try:
            yield base
        finally:
            close_clients()


async def subscribed_ven(system: System, vtn: str, hook: str) -> tuple[openadr3.OpenADRClient, str]:
    """A VEN subscribed to its resources' creation (bearer token ``hook-secret``); returns it and its ven id."""
    ven = await ven_client(vtn, make_client(system, "ECOBEE"))
    ven_id = (await off_loop(ven.create_ven, {"objectType": "VEN_VEN_REQUEST", "venName": "ecobee"})).json()["id"]
    made = await off_loop(
        ven.create_subscription,
        {
            "clientName": "ecobee",
            "objectOperations": [
                {
                    "objects": ["RESOURCE"],
                    "operations": ["CREATE"],
                    "callbackUrl": hook + "/hook",
                    "bearerToken": "hook-secret",
                }
            ],
        },
    )
    assert made.status_code == 201, made.text
    return ven, ven_id


async def create_resource(ven: openadr3.OpenADRClient, ven_id: str, name: str) -> str:
    made = await off_loop(
        ven.create_resource, {"objectType": "VEN_RESOURCE_REQUEST", "resourceName": name, "venID": ven_id}
    )
    assert made.status_code == 201, made.text
    resource_id: str = made.json()["id"]
    return resource_id


async def notifications(system: System) -> list[dict[str, Any]]:
    n = edge_notifications
    async with system.runtime.async_engine("derms").connect() as connection:
        return [dict(r) for r in (await connection.execute(select(n).order_by(n.c.notification_id))).mappings()]


async def deliver(system: System) -> int:
    """One round of the DERMS's jobs (``edge-webhooks`` among them) at the clock's time; what it delivered."""
    return (await system.run_jobs())["derms:edge-webhooks"]


async def test_a_refused_notification_is_retried_after_the_backoff_and_delivered_once(system: System, vtn: str) -> None:
    receiver = FlakyReceiver([500, 200])
    async with serve(receiver.app) as hook:
        ven, ven_id = await subscribed_ven(system, vtn, hook)
        resource_id = await create_resource(ven, ven_id, "e-01")
        queued_at = system.clock.now()

        assert await deliver(system) == 0
        assert [status for _, _, status in receiver.posts] == [500]
        [row] = await notifications(system)
        assert (row["attempts"], row["last_error"], row["delivered_at"]) == (1, "HTTP 500", None)
        assert row["next_attempt_at"] == queued_at + timedelta(seconds=BACKOFF)

        # Not due before the backoff has passed on the business clock: no attempt.
        system.clock.advance(timedelta(seconds=BACKOFF - 1))
        assert await deliver(system) == 0
        assert len(receiver.posts) == 1

        system.clock.advance(timedelta(seconds=1))
        assert await deliver(system) == 1
        [row] = await notifications(system)
        assert (row["attempts"], row["delivered_at"], row["next_attempt_at"], row["last_error"]) == (
            2,
            system.clock.now(),
            None,
            None,
        )
        # Delivered: never sent again, however long the job keeps running.
        system.clock.advance(timedelta(hours=2))
        assert await deliver(system) == 0
    assert [status for _, _, status in receiver.posts] == [500, 200]
    for token, body, _ in receiver.posts:
        assert token == "Bearer hook-secret"
        assert_schema(body, "notification")
        assert (body["objectType"], body["operation"], body["object"]["id"]) == ("RESOURCE", "CREATE", resource_id)


async def test_a_notification_never_accepted_is_given_up_after_the_maximum_attempts(system: System, vtn: str) -> None:
    receiver = FlakyReceiver([500])
    async with serve(receiver.app) as hook:
        ven, ven_id = await subscribed_ven(system, vtn, hook)
        await create_resource(ven, ven_id, "e-01")
        start = system.clock.now()

        # Attempts at 0 s, then after 10 s and a doubled 20 s of backoff; none before its time.
        attempted_at = []
        for wait in (0.0, BACKOFF, 2 * BACKOFF):
            if wait:
                system.clock.advance(timedelta(seconds=wait - 1))
                await deliver(system)
                assert len(receiver.posts) == len(attempted_at)
                system.clock.advance(timedelta(seconds=1))
            assert await deliver(system) == 0
            attempted_at.append(system.clock.now())
            assert len(receiver.posts) == len(attempted_at)
        assert attempted_at == [start, start + timedelta(seconds=10), start + timedelta(seconds=30)]

        [row] = await notifications(system)
        assert row["attempts"] == MAX_ATTEMPTS
        assert (row["failed_at"], row["next_attempt_at"], row["delivered_at"]) == (attempted_at[-1], None, None)
        assert row["last_error"] == "HTTP 500"
        # Given up: no further attempt, even much later.
        system.clock.advance(timedelta(days=1))
        assert await deliver(system) == 0
    assert len(receiver.posts) == MAX_ATTEMPTS
    assert {token for token, _, _ in receiver.posts} == {"Bearer hook-secret"}


async def test_an_unreachable_receiver_is_retried_like_an_error_answer(system: System, vtn: str) -> None:
    receiver = FlakyReceiver([200])
    async with serve(receiver.app) as hook:
        ven, ven_id = await subscribed_ven(system, vtn, hook)
    # The receiver is gone (its port refuses connections): the attempt fails and is scheduled again.
    await create_resource(ven, ven_id, "e-01")
    assert await deliver(system) == 0
    [row] = await notifications(system)
    assert row["attempts"] == 1
    assert row["last_error"].startswith("ConnectError")
    assert row["next_attempt_at"] == system.clock.now() + timedelta(seconds=BACKOFF)
    assert row["failed_at"] is None
    assert receiver.posts == []


async def test_the_bearer_token_is_encrypted_at_rest_and_still_sent_and_shown_to_its_owner(
    system: System, vtn: str
) -> None:
    # Issue 15, finding 8: the subscriber's webhook bearer token lay in plain text in the subscription's
    # row and in every queued notification, readable by anyone who could read the database file.
    receiver = FlakyReceiver([200])
    async with serve(receiver.app) as hook:
        ven, ven_id = await subscribed_ven(system, vtn, hook)
        await create_resource(ven, ven_id, "e-01")
        async with system.runtime.async_engine("derms").connect() as connection:
            stored = (
                await connection.execute(
                    select(edge_objects.c.body, edge_objects.c.id).where(edge_objects.c.object_type == "SUBSCRIPTION")
                )
            ).one()
        assert "hook-secret" not in json.dumps(stored.body)
        assert stored.body["objectOperations"][0]["bearerToken"].startswith("fernet:")
        [row] = await notifications(system)
        assert row["bearer_token"].startswith("fernet:")
        assert "hook-secret" not in row["bearer_token"]

        assert await deliver(system) == 1
        assert [token for token, _, _ in receiver.posts] == ["Bearer hook-secret"]
        shown = (await off_loop(ven.get_subscription_by_id, stored.id)).json()
        assert shown["objectOperations"][0]["bearerToken"] == "hook-secret"
