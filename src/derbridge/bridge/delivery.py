"""Delivery: hand a message to its target system's inbound API, and read what the answer means.

The target is called exactly as a third-party system would be: ``POST <base>/<system>/v1/messages`` with
the envelope, ``Idempotency-Key: <message_id>`` and the service credential. In the embedded mode the
"HTTP call" is served in-process by an ASGI transport: same request, same code, no socket.

Outcome classes (architecture.md):

| answer | outcome |
| --- | --- |
| 2xx (applied, or already applied) | DELIVERED |
| 5xx, 401, 408, 425, 429, timeout, connection refused or reset | RETRY (capped exponential backoff, full jitter) |
| 409 with problem type ``missing-prerequisite`` and ``wake_on`` | PARK until ``wake_on`` is announced |
| any other 4xx | DEAD, with the target's problem detail |
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx

from derbridge.contracts.envelope import Envelope
from derbridge.infra.outbox import serialize
from derbridge.infra.problems import PROBLEM_BASE

BATCH_CHUNK = 200
"""Messages per batch call: enough to spread the call's cost, small enough to keep transactions short."""

BATCH_BYTES = 4 * 1024 * 1024
"""Bytes of envelopes per batch call, at most (a message bigger than that goes alone): well under the
servers' body limit (``server.max_body_bytes``, 16 MiB), which would refuse a whole call with 413 — and a 413
is final. Two hundred bulk F1 messages of 5,000 requests each make hundreds of megabytes."""

RETRYABLE_4XX = frozenset({401, 408, 425, 429})
"""4xx answers that say "not now" rather than "never". A 401 is the deployment's fault, not the message's:
the bridge and the target disagree on the service credential (a rollover under way, a replica not yet
restarted with the new value); dead-lettering every message until then would leave the operator a replay
of all of them. Retried on the backoff, it goes through once the credential is fixed, and is dead only
when the retries are exhausted."""


class Outcome(StrEnum):
    """What one delivery attempt means for the message."""

    DELIVERED = "delivered"
    RETRY = "retry"
    PARK = "park"
    DEAD = "dead"


@dataclass(frozen=True)
class AttemptResult:
    """One attempt's outcome, with what an operator needs to understand it."""

    outcome: Outcome
    status_code: int | None
    detail: str
    problem: dict[str, Any] | None = None
    wake_on: str | None = None
    duration_ms: int = 0


def _problem(response: httpx.Response) -> dict[str, Any] | None:
    try:
        body = response.json()
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


def classify_response(response: httpx.Response, duration_ms: int = 0) -> AttemptResult:
    """The outcome an HTTP answer from a target means (see the module docstring)."""
    status = response.status_code
    if 200 <= status < 300:
        body = _problem(response) or {}
        return AttemptResult(Outcome.DELIVERED, status, str(body.get("status", "applied")), None, None, duration_ms)
    return classify_problem(status, _problem(response), response.reason_phrase, duration_ms)


def classify_problem(
    status: int, problem: dict[str, Any] | None, reason: str | None = None, duration_ms: int = 0
) -> AttemptResult:
    """The outcome of a refusal with ``status`` and its problem detail (one message's, or a whole call's)."""
    detail = str((problem or {}).get("detail") or reason or f"HTTP {status}")
    if status >= 500 or status in RETRYABLE_4XX:
        return AttemptResult(Outcome.RETRY, status, detail, problem, None, duration_ms)
    if (
        status == 409
        and problem is not None
        and problem.get("type") == PROBLEM_BASE + "missing-prerequisite"
        and isinstance(problem.get("wake_on"), str)
    ):
        return AttemptResult(Outcome.PARK, status, detail, problem, str(problem["wake_on"]), duration_ms)
    return AttemptResult(Outcome.DEAD, status, detail, problem, None, duration_ms)


def classify_error(error: Exception, duration_ms: int = 0) -> AttemptResult:
    """A call that got no answer (refused, reset, timed out) is worth retrying."""
    return AttemptResult(Outcome.RETRY, None, f"{type(error).__name__}: {error}".strip(), None, None, duration_ms)


class Deliverer:
    """Delivers envelopes to the systems' inbound APIs through one HTTP client per target."""

    def __init__(self, clients: dict[str, httpx.AsyncClient], token: str) -> None:
        self._clients = clients
        self._headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    async def deliver(self, envelope: Envelope) -> AttemptResult:
        """One attempt at delivering ``envelope`` to its target system."""
        system = envelope.target.system.value
        client = self._clients.get(system)
        if client is None:
            return AttemptResult(Outcome.DEAD, None, f"no route to the system {system!r}: configure bridge.targets")
        started = time.perf_counter()
        try:
            response = await client.post(
                f"/{system}/v1/messages",
                content=serialize(envelope),
                headers=self._headers | {"Idempotency-Key": envelope.message_id},
            )
        except httpx.HTTPError as error:
            return classify_error(error, int((time.perf_counter() - started) * 1000))
        return classify_response(response, int((time.perf_counter() - started) * 1000))

    async def deliver_many(
        self, envelopes: Sequence[Envelope], texts: Mapping[str, str] | None = None
    ) -> list[AttemptResult]:
        """Deliver many envelopes with one call per target system and chunk (``POST …/messages/batch``);
        the target applies each alone (a savepoint) and answers each. Results come back in order.
        ``texts`` (by message id) are the envelopes already serialised, sent as they are."""
        results: dict[str, AttemptResult] = {}
        by_system: dict[str, list[Envelope]] = {}
        for envelope in envelopes:
            by_system.setdefault(envelope.target.system.value, []).append(envelope)

        async def deliver_system(system: str, batch: list[Envelope]) -> None:
            client = self._clients.get(system)
            for chunk in _chunks(batch, texts):
                if client is None:
                    for envelope, _ in chunk:
                        results[envelope.message_id] = AttemptResult(
                            Outcome.DEAD, None, f"no route to the system {system!r}: configure bridge.targets"
                        )
                    continue
                results.update(await self._post_batch(client, system, chunk))

        await asyncio.gather(*(deliver_system(system, batch) for system, batch in by_system.items()))
        return [results[e.message_id] for e in envelopes]

    async def _post_batch(
        self, client: httpx.AsyncClient, system: str, serialized: list[tuple[Envelope, str]]
    ) -> dict[str, AttemptResult]:
        chunk = [envelope for envelope, _ in serialized]
        body = '{"messages":[' + ",".join(text for _, text in serialized) + "]}"
        started = time.perf_counter()
        try:
            response = await client.post(f"/{system}/v1/messages/batch", content=body, headers=self._headers)
        except httpx.HTTPError as error:
            failed = classify_error(error, int((time.perf_counter() - started) * 1000))
            return {e.message_id: failed for e in chunk}
        duration_ms = int((time.perf_counter() - started) * 1000)
        if response.status_code != 200:
            whole = classify_response(response, duration_ms)
            return {e.message_id: whole for e in chunk}
        answers = {item["message_id"]: item for item in response.json()["results"]}
        results: dict[str, AttemptResult] = {}
        for envelope in chunk:
            item = answers.get(envelope.message_id)
            if item is None:  # the target skipped it: treat as not delivered, try again
                results[envelope.message_id] = AttemptResult(Outcome.RETRY, None, "no answer for this message")
            elif item["status_code"] == 200:
                answer = item.get("answer") or {}
                results[envelope.message_id] = AttemptResult(
                    Outcome.DELIVERED, 200, str(answer.get("status", "applied")), None, None, duration_ms
                )
            else:
                results[envelope.message_id] = classify_problem(
                    int(item["status_code"]), item.get("problem"), None, duration_ms
                )
        return results

    async def close(self) -> None:
        """Close every client."""
        for client in self._clients.values():
            await client.aclose()


def _chunks(envelopes: list[Envelope], texts: Mapping[str, str] | None = None) -> list[list[tuple[Envelope, str]]]:
    """``envelopes`` serialised (their text from ``texts`` when there), in order, cut into calls of at most
    :data:`BATCH_CHUNK` messages and :data:`BATCH_BYTES` bytes (a single bigger message makes a call of its
    own)."""
    chunks: list[list[tuple[Envelope, str]]] = []
    size = 0
    for envelope in envelopes:
        text = texts.get(envelope.message_id) if texts else None
        if text is None:
            text = serialize(envelope)
        if not chunks or len(chunks[-1]) >= BATCH_CHUNK or size + len(text) > BATCH_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append((envelope, text))
        size += len(text) + 1
    return chunks
