"""Rate limits on the edge's credentials (issue 15, finding 1): a moving window per remote address and per
client id, kept by the ``limits`` library in this process's memory.

- Token requests per address (``edge.token_requests_per_address``): every request to ``/auth/token``
  costs an argon2 check, right or wrong.
- Refused secrets per client id (``edge.token_failures_per_client``), from any address: a guesser spread
  over many addresses. Higher than the per-address limit, so one guessing address is stopped before the
  client it guesses at is.
- Refused credentials per address (``edge.auth_failures_per_address``): wrong secrets at the token
  endpoint and refused bearer tokens on every VTN operation. Over it, the address gets 429 on the whole
  VTN, checked before any hashing or signature check.

Over a limit the caller gets 429 with ``Retry-After`` (seconds until the window lets one more through).
The counts live in the process: replicas do not share them (N replicas allow N times as much), and a
restart forgets them. docs/security.md says so.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter

from derbridge.infra.metrics import EDGE_AUTH_FAILURES
from derbridge.settings import EdgeSettings

# Client ids are short (``ven-<16 hex>``); a longer one names no client, and must not grow the counts.
_MAX_KEY = 128


class TooManyAttempts(Exception):
    """Over a rate limit: retry after ``retry_after`` seconds."""

    def __init__(self, retry_after: int, what: str) -> None:
        super().__init__(what)
        self.retry_after = retry_after
        self.what = what


class AuthThrottle:
    """The edge's credential rate limits in this process (one per VTN application)."""

    def __init__(self, settings: EdgeSettings) -> None:
        self._limiter = MovingWindowRateLimiter(MemoryStorage())
        self._requests_per_address = parse_many(settings.token_requests_per_address)
        self._failures_per_client = parse_many(settings.token_failures_per_client)
        self._failures_per_address = parse_many(settings.auth_failures_per_address)

    def _wait(self, items: list[RateLimitItem], kind: str, key: str) -> int | None:
        """Seconds until ``key`` is under every limit of ``items`` again; None when it is under them now."""
        for item in items:
            if not self._limiter.test(item, kind, key[:_MAX_KEY]):
                reset = self._limiter.get_window_stats(item, kind, key[:_MAX_KEY]).reset_time
                return max(1, math.ceil(reset - time.time()))
        return None

    def _refuse(self, wait: int | None, what: str) -> None:
        if wait is not None:
            EDGE_AUTH_FAILURES.labels("rate_limited").inc()
            raise TooManyAttempts(wait, what)

    def check_address(self, address: str) -> None:
        """Before any credential of ``address`` is checked: refuse it while it is over its failures."""
        self._refuse(
            self._wait(self._failures_per_address, "failures", address),
            "Too many refused credentials from this address.",
        )

    def token_request(self, address: str, client_id: str) -> None:
        """Before a token request's secret is checked: refuse it while the address or the client id is
        over a limit, else count it against the address."""
        self.check_address(address)
        self._refuse(
            self._wait(self._failures_per_client, "client", client_id),
            "Too many wrong secrets for this client id.",
        )
        self._refuse(
            self._wait(self._requests_per_address, "requests", address), "Too many token requests from this address."
        )
        for item in self._requests_per_address:
            self._limiter.hit(item, "requests", address[:_MAX_KEY])

    def failed(self, address: str, client_id: str | None = None) -> None:
        """Count a refused credential of ``address`` (and of ``client_id`` at the token endpoint)."""
        for item in self._failures_per_address:
            self._limiter.hit(item, "failures", address[:_MAX_KEY])
        if client_id is not None:
            for item in self._failures_per_client:
                self._limiter.hit(item, "client", client_id[:_MAX_KEY])
