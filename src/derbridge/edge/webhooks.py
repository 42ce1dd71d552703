"""Webhooks: checking a subscription's callback URL, and delivering notifications from the
``edge_notifications`` outbox with retries.

- **Check** (Definition.md, "Webhooks"): the callback must be HTTPS (plain HTTP only with
  ``edge.allow_http_callbacks``, for a lab or a loopback test), and must answer ``GET <url>?echo=<random>``
  with 200 and the random value as its body; otherwise the subscription is refused.
- **Delivery**: the ``edge-webhooks`` job (every second, under the DERMS's job lease) POSTs each due
  notification with the subscription's ``bearerToken`` as ``Authorization: Bearer``. A 2xx answer
  delivers it; anything else (an error status, a refused connection, a timeout) schedules another attempt
  after an exponential backoff (``edge.webhook_backoff_seconds`` doubling up to the cap); after
  ``edge.webhook_max_attempts`` it is given up (``failed_at``) and logged. Redirects are not followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpcore
import httpx
import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.edge.tables import edge_notifications as n
from derbridge.edge.token_vault import TokenVault
from derbridge.settings import EdgeSettings

log = structlog.get_logger("derbridge.edge.webhooks")

BATCH = 200
CONCURRENCY = 16


@dataclass
class CallbackChecker:
    """Checks a callback URL before a subscription names it."""

    settings: EdgeSettings

    async def check(self, url: str) -> str | None:
        """None when ``url`` may be used; else why not."""
        parts = urlsplit(url)
        allowed = {"https", "http"} if self.settings.allow_http_callbacks else {"https"}
        if parts.scheme not in allowed or not parts.hostname:
            return "must be an https URL" if "http" not in allowed else "must be an http or https URL"
        if not self.settings.allow_private_callbacks:
            refused = await non_global_address(parts.hostname, parts.port or 443)
            if refused is not None:
                return refused
        echo = secrets.token_urlsafe(16)
        separator = "&" if parts.query else "?"
        try:
            async with checked_client(self.settings) as http:
                answer = await http.get(url + separator + urlencode({"echo": echo}))
        except httpx.HTTPError as error:
            if isinstance(error.__cause__, DestinationRefused) or str(error).startswith(REFUSED_PREFIX):
                return str(error)  # the name resolved elsewhere when the VTN connected (DNS rebinding)
            return f"did not answer the echo challenge ({type(error).__name__})"
        if answer.status_code != 200:
            return f"answered the echo challenge with {answer.status_code}, not 200"
        text = answer.text.strip().strip('"')
        if text != echo:
            return "did not send back the echo value"
        return None


# --- Destination checks where the connection is made ------------------------------------------------
#
# A name checked once and resolved again to connect can answer differently the second time (DNS
# rebinding): the check must be made on the addresses the connection then uses. ``CheckedBackend`` is the
# network backend of every client the VTN calls callbacks with (echo and deliveries): it resolves the name
# itself (``resolve``), refuses it if any address is not public, and connects to those addresses, while
# TLS (SNI and certificate) and the Host header still use the name.

REFUSED_PREFIX = "resolves to a non-public address"
_NAT64 = (ipaddress.IPv6Network("64:ff9b::/96"), ipaddress.IPv6Network("64:ff9b:1::/48"))
"""The well-known NAT64 prefix (RFC 6052) and the local-use one (RFC 8215): the IPv4 address is the low 32
bits (the /96 form; operators of the local-use prefix use it too)."""
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (IPv4-mapped or -compatible, NAT64, 6to4, Teredo), if any:
    a gateway or relay would deliver to that IPv4 address."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    if any(address in prefix for prefix in _NAT64) or (address in _IPV4_COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def refusal(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why the VTN may not call ``address`` (not public, or an IPv6 form of an IPv4 one that is not), or None."""
    inner = embedded_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    if inner is not None and (not inner.is_global or inner.is_multicast):
        return f"{REFUSED_PREFIX} ({address}, which carries {inner}); callbacks must reach a public host"
    if not address.is_global or address.is_multicast:
        return f"{REFUSED_PREFIX} ({address}); callbacks must reach a public host"
    return None


async def resolve(host: str, port: int) -> list[str]:
    """The addresses of ``host`` (an address is itself); the one function that resolves callback names."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]).split("%")[0] for info in infos))


async def non_global_address(host: str, port: int = 443) -> str | None:
    """Why ``host`` may not be a callback (it resolves to a loopback, private, link-local, multicast or
    reserved address, in any IPv6 form, or does not resolve), or None when every address is public."""
    try:
        addresses = await resolve(host, port)
    except OSError:
        return "does not resolve"
    if not addresses:
        return "does not resolve"
    for address in addresses:
        refused = refusal(ipaddress.ip_address(address))
        if refused is not None:
            return refused
    return None


class DestinationRefused(httpcore.ConnectError):
    """The callback's name resolved, when the VTN connected, to an address it may not call."""


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """Connects to the addresses of a callback's name only if every one is allowed (see above)."""

    def __init__(self, allow_private: bool) -> None:
        self.allow_private = allow_private
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """Resolve ``host`` now, check every address, and connect to the first one that answers."""
        try:
            addresses = await resolve(host, port)
        except OSError as error:
            raise httpcore.ConnectError(f"{host} does not resolve: {error}") from error
        if not addresses:
            raise httpcore.ConnectError(f"{host} does not resolve")
        if not self.allow_private:
            for address in addresses:
                refused = refusal(ipaddress.ip_address(address))
                if refused is not None:
                    raise DestinationRefused(refused)
        failure: Exception | None = None
        for address in addresses:
            try:
                return await self.inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as error:
                failure = error
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None
    ) -> httpcore.AsyncNetworkStream:
        """Never: callbacks are URLs."""
        raise httpcore.ConnectError("callbacks are not Unix sockets")

    async def sleep(self, seconds: float) -> None:
        """As the default backend."""
        await self.inner.sleep(seconds)


def checked_client(settings: EdgeSettings) -> httpx.AsyncClient:
    """The HTTP client the VTN calls callbacks with: no proxy from the environment (it would connect for
    us, unchecked), no redirects, and :class:`CheckedBackend` under it."""
    transport = httpx.AsyncHTTPTransport(trust_env=False)
    # httpx offers no way to give its pool a network backend; the pool's attribute is the one place. A
    # test (tests/security/test_webhook_destinations.py) fails if an httpcore release renames it.
    pool = transport._pool
    if not hasattr(pool, "_network_backend"):
        raise RuntimeError("this httpcore release has no _network_backend: webhook destinations cannot be checked")
    pool._network_backend = CheckedBackend(settings.allow_private_callbacks)
    return httpx.AsyncClient(
        transport=transport, timeout=settings.webhook_timeout_seconds, follow_redirects=False, trust_env=False
    )


def backoff(attempts: int, settings: EdgeSettings) -> timedelta:
    """The wait before attempt ``attempts + 1``: doubling from the base, capped."""
    return timedelta(
        seconds=min(settings.webhook_backoff_seconds * 2 ** max(attempts - 1, 0), settings.webhook_backoff_cap_seconds)
    )


async def _post(http: httpx.AsyncClient, row: Any, vault: TokenVault) -> str | None:
    headers = {"Authorization": f"Bearer {vault.open(row.bearer_token)}"} if row.bearer_token else {}
    try:
        answer = await http.post(row.callback_url, json=row.body, headers=headers)
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"[:500]
    if 200 <= answer.status_code < 300:
        return None
    return f"HTTP {answer.status_code}"


async def deliver_due(engine: AsyncEngine, now: datetime, settings: EdgeSettings, vault: TokenVault) -> int:
    """Attempt every due notification once (oldest first, up to a batch), with the bearer tokens opened by
    ``vault``; returns how many were delivered."""
    async with engine.connect() as connection:
        due = (
            await connection.execute(
                select(n)
                .where(n.c.next_attempt_at.is_not(None), n.c.next_attempt_at <= now)
                .order_by(n.c.next_attempt_at, n.c.notification_id)
                .limit(BATCH)
            )
        ).all()
    if not due:
        return 0
    gate = asyncio.Semaphore(CONCURRENCY)
    async with checked_client(settings) as http:

        async def attempt(row: Any) -> str | None:
            async with gate:
                return await _post(http, row, vault)

        # One subscription's notifications go in order: deliver them one after another, subscriptions at once.
        by_subscription: dict[str, list[Any]] = {}
        for row in due:
            by_subscription.setdefault(row.subscription_id, []).append(row)

        async def in_order(rows: list[Any]) -> list[tuple[Any, str | None]]:
            results: list[tuple[Any, str | None]] = []
            for row in rows:
                error = await attempt(row)
                results.append((row, error))
                if error is not None:
                    break  # the later ones wait for this one's retry
            return results

        outcomes = [
            r for group in await asyncio.gather(*(in_order(v) for v in by_subscription.values())) for r in group
        ]
    delivered = 0
    async with engine.begin() as connection:
        for row, error in outcomes:
            attempts = row.attempts + 1
            if error is None:
                delivered += 1
                values: dict[str, Any] = {
                    "attempts": attempts,
                    "delivered_at": now,
                    "next_attempt_at": None,
                    "last_error": None,
                }
            elif attempts >= settings.webhook_max_attempts:
                log.warning("webhook given up", subscription_id=row.subscription_id, attempts=attempts, error=error)
                values = {"attempts": attempts, "failed_at": now, "next_attempt_at": None, "last_error": error}
            else:
                values = {
                    "attempts": attempts,
                    "next_attempt_at": now + backoff(attempts, settings),
                    "last_error": error,
                }
            await connection.execute(update(n).where(n.c.notification_id == row.notification_id).values(**values))
    return delivered


async def webhook_job(engine: AsyncEngine, now: datetime, *, settings: EdgeSettings, vault: TokenVault) -> int:
    """The ``edge-webhooks`` job: deliver the due webhook notifications (``settings`` and ``vault`` are bound
    by :func:`derbridge.edge.system.build`)."""
    return await deliver_due(engine, now, settings, vault)
