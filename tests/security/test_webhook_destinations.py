"""Issue 15, finding 7: webhook destinations are checked where they are used.

Before, a callback's name was checked once, at subscription; the echo request and every delivery resolved
it again (DNS rebinding to an internal address), and a private IPv4 inside NAT64 (64:ff9b::/96), 6to4
(2002::/16) or an IPv4-mapped address passed. Now the VTN resolves the name when it connects (the echo and
every delivery), refuses it if any address is not public, and connects to the address it checked. The
resolver here is the module's own resolution function, replaced: no network and no real DNS.
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime

import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI, Request, Response
from fastapi.responses import PlainTextResponse
from pydantic import ValidationError
from sqlalchemy import insert, select

from derbridge.edge import webhooks
from derbridge.edge.schemas import SubscriptionRequest
from derbridge.edge.tables import edge_notifications
from derbridge.edge.token_vault import TokenVault
from derbridge.edge.webhooks import CallbackChecker, deliver_due
from derbridge.runtime import Runtime
from derbridge.settings import EdgeSettings
from tests.support.edge import serve

AT = datetime(2026, 12, 7, 0, 1, tzinfo=UTC)
VAULT = TokenVault([Fernet.generate_key().decode()])
"""A vault of its own: the notifications here carry no bearer token to open."""


class Resolver:
    """Answers for host names: each lookup of a name takes the next answer (the last one for ever after)."""

    def __init__(self, answers: dict[str, Sequence[Sequence[str]]]) -> None:
        self.answers = answers
        self.calls: list[str] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append(host)
        answers = self.answers[host]
        return list(answers[min(self.calls.count(host) - 1, len(answers) - 1)])


class Receiver:
    """A webhook endpoint on loopback recording what reached it."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None]] = []
        self.app = FastAPI()

        @self.app.get("/hook")
        async def challenge(echo: str, request: Request) -> PlainTextResponse:
            self.requests.append(("GET", request.headers.get("host")))
            return PlainTextResponse(echo)

        @self.app.post("/hook")
        async def notify(request: Request) -> Response:
            self.requests.append(("POST", request.headers.get("host")))
            return Response(status_code=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, int]]:
    hook = Receiver()
    async with serve(hook.app) as base:
        yield hook, int(base.rsplit(":", 1)[1])


def use_resolver(monkeypatch: pytest.MonkeyPatch, answers: dict[str, Sequence[Sequence[str]]]) -> Resolver:
    resolver = Resolver(answers)
    monkeypatch.setattr(webhooks, "resolve", resolver)
    return resolver


async def test_a_name_that_rebinds_to_loopback_after_the_check_gets_no_echo_request(
    monkeypatch: pytest.MonkeyPatch, receiver: tuple[Receiver, int]
) -> None:
    hook, port = receiver
    resolver = use_resolver(monkeypatch, {"rebind.example": [["93.184.216.34"], ["127.0.0.1"]]})
    checker = CallbackChecker(EdgeSettings(allow_http_callbacks=True, webhook_timeout_seconds=5))
    refused = await checker.check(f"http://rebind.example:{port}/hook")
    assert refused is not None
    assert "non-public" in refused
    assert "127.0.0.1" in refused
    assert resolver.calls == ["rebind.example", "rebind.example"]  # resolved again to connect
    assert hook.requests == []


async def notification(runtime: Runtime, url: str) -> None:
    now = datetime(2026, 12, 7, tzinfo=UTC)
    async with runtime.async_engine("derms").begin() as connection:
        await connection.execute(
            insert(edge_notifications).values(
                subscription_id="sub-1",
                callback_url=url,
                body={"x": 1},
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
        )


async def test_every_delivery_resolves_again_and_refuses_a_name_now_pointing_to_loopback(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, receiver: tuple[Receiver, int]
) -> None:
    hook, port = receiver
    use_resolver(monkeypatch, {"hooks.example": [["127.0.0.1"]]})
    await notification(runtime, f"http://hooks.example:{port}/hook")
    settings = EdgeSettings(allow_http_callbacks=True, webhook_timeout_seconds=5)
    assert await deliver_due(runtime.async_engine("derms"), AT, settings, VAULT) == 0
    async with runtime.async_engine("derms").connect() as connection:
        error = await connection.scalar(select(edge_notifications.c.last_error))
    assert "non-public" in error
    assert hook.requests == []
    await runtime.aclose()


async def test_a_delivery_connects_to_the_address_it_resolved_and_checked(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch, receiver: tuple[Receiver, int]
) -> None:
    # hooks.example resolves nowhere but through our resolver: the delivery reaching the receiver shows the
    # connection went to the checked address, with the name kept in the Host header (and TLS's SNI).
    hook, port = receiver
    use_resolver(monkeypatch, {"hooks.example": [["127.0.0.1"]]})
    await notification(runtime, f"http://hooks.example:{port}/hook")
    settings = EdgeSettings(allow_http_callbacks=True, allow_private_callbacks=True, webhook_timeout_seconds=5)
    assert await deliver_due(runtime.async_engine("derms"), AT, settings, VAULT) == 1
    assert hook.requests == [("POST", f"hooks.example:{port}")]
    await runtime.aclose()


@pytest.mark.parametrize(
    ("address", "inside"),
    [
        ("64:ff9b::7f00:1", "127.0.0.1"),  # NAT64 of loopback
        ("64:ff9b::a9fe:a9fe", "169.254.169.254"),  # NAT64 of the cloud metadata address
        ("64:ff9b:1::a00:1", "10.0.0.1"),  # local-use NAT64 (RFC 8215)
        ("2002:a00:1::1", "10.0.0.1"),  # 6to4 of a private address
        ("2002:7f00:1::", "127.0.0.1"),
        ("::ffff:192.168.1.1", "192.168.1.1"),  # IPv4-mapped
        ("::10.0.0.1", "10.0.0.1"),  # IPv4-compatible (deprecated)
    ],
)
async def test_a_private_ipv4_inside_an_ipv6_address_is_refused(
    monkeypatch: pytest.MonkeyPatch, address: str, inside: str
) -> None:
    use_resolver(monkeypatch, {"wrapped.example": [[address]]})
    refused = await CallbackChecker(EdgeSettings(allow_http_callbacks=True)).check("http://wrapped.example/hook")
    assert refused is not None
    assert "non-public" in refused
    assert inside in refused
    assert webhooks.refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ["64:ff9b::808:808", "2002:808:808::1", "93.184.216.34", "2606:4700::1111"])
def test_public_addresses_in_any_form_pass(address: str) -> None:
    assert webhooks.refusal(ipaddress.ip_address(address)) is None


def test_a_subscription_names_at_most_a_few_object_operations() -> None:
    operation = {"objects": ["EVENT"], "operations": ["CREATE"], "callbackUrl": "https://a.example/h"}
    SubscriptionRequest.model_validate({"clientName": "c", "objectOperations": [operation] * 8})
    with pytest.raises(ValidationError, match="objectOperations"):
        SubscriptionRequest.model_validate({"clientName": "c", "objectOperations": [operation] * 9})
