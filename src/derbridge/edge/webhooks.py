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
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.derms.jobs import jobs
from derbridge.edge.tables import edge_notifications as n
from derbridge.edge.token_vault import vault
from derbridge.settings import EdgeSettings

log = structlog.get_logger("derbridge.edge.webhooks")

BATCH = 200
CONCURRENCY = 16

_settings = EdgeSettings()


def use_settings(settings: EdgeSettings) -> None:
    """Give the delivery job this process's edge settings (jobs receive only an engine)."""
    global _settings
    _settings = settings


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
            refused = await non_global_address(parts.hostname)
            if refused is not None:
                return refused
        echo = secrets.token_urlsafe(16)
        separator = "&" if parts.query else "?"
        try:
            async with httpx.AsyncClient(timeout=self.settings.webhook_timeout_seconds, follow_redirects=False) as http:
                answer = await http.get(url + separator + urlencode({"echo": echo}))
        except httpx.HTTPError as error:
            return f"did not answer the echo challenge ({type(error).__name__})"
        if answer.status_code != 200:
            return f"answered the echo challenge with {answer.status_code}, not 200"
        text = answer.text.strip().strip('"')
        if text != echo:
            return "did not send back the echo value"
        return None


async def non_global_address(host: str) -> str | None:
    """Why ``host`` may not be a callback (it resolves to a loopback, private, link-local, multicast or
    reserved address, or does not resolve), or None when every address it resolves to is global."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return "does not resolve"
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global or address.is_multicast:
            return f"resolves to a non-public address ({address}); callbacks must reach a public host"
    return None


def backoff(attempts: int, settings: EdgeSettings) -> timedelta:
    """The wait before attempt ``attempts + 1``: doubling from the base, capped."""
    return timedelta(
        seconds=min(settings.webhook_backoff_seconds * 2 ** max(attempts - 1, 0), settings.webhook_backoff_cap_seconds)
    )


async def _post(http: httpx.AsyncClient, row: Any) -> str | None:
    headers = {"Authorization": f"Bearer {vault().open(row.bearer_token)}"} if row.bearer_token else {}
    try:
        answer = await http.post(row.callback_url, json=row.body, headers=headers)
    except httpx.HTTPError as error:
        return f"{type(error).__name__}: {error}"[:500]
    if 200 <= answer.status_code < 300:
        return None
    return f"HTTP {answer.status_code}"


async def deliver_due(engine: AsyncEngine, now: datetime, settings: EdgeSettings | None = None) -> int:
    """Attempt every due notification once (oldest first, up to a batch); returns how many were delivered."""
    settings = settings or _settings
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
    async with httpx.AsyncClient(timeout=settings.webhook_timeout_seconds, follow_redirects=False) as http:

        async def attempt(row: Any) -> str | None:
            async with gate:
                return await _post(http, row)

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


@jobs.job("edge-webhooks", every=timedelta(seconds=1))
async def webhook_job(engine: AsyncEngine, now: datetime) -> int:
    """Deliver the due webhook notifications."""
    return await deliver_due(engine, now)
