"""The transport port: an at-least-once queue per flow.

What every adapter guarantees (and ``tests/integration/test_transport_contract.py`` checks, with the same
hand-written expectations, on each):

- ``publish`` returns only when the messages are durable (a database commit, a broker confirm).
- A received message stays invisible to other receivers until it is acknowledged or released, or its
  receiver dies (lease expiry, broker connection loss); then it is delivered again with a higher
  ``delivery_count``. Nothing is lost; a message may arrive more than once, which the target's inbox
  absorbs.
- Messages of one queue are received in publication order (ties across concurrent publishers aside).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Delivery:
    """One received message."""

    queue: str
    message_id: str
    body: bytes
    delivery_count: int
    """1 on the first delivery; more when it was delivered before and not acknowledged."""
    handle: Any = field(compare=False, repr=False)
    """The adapter's own reference, used to acknowledge or release it."""


class TransportError(Exception):
    """The transport could not do what was asked (broker or database unreachable); try again."""


class Transport(ABC):
    """An at-least-once message queue with named queues."""

    name: str

    @abstractmethod
    async def start(self, queues: Sequence[str]) -> None:
        """Connect and make sure ``queues`` exist."""

    @abstractmethod
    async def close(self) -> None:
        """Release every connection; unacknowledged messages become deliverable again."""

    @abstractmethod
    async def publish(self, queue: str, messages: Sequence[tuple[str, bytes]]) -> None:
        """Put ``(message_id, body)`` pairs on ``queue``; durable when this returns."""

    @abstractmethod
    async def receive(self, queues: Sequence[str], max_messages: int, timeout: float) -> list[Delivery]:
        """Take up to ``max_messages`` from ``queues``, waiting up to ``timeout`` seconds for the first."""

    @abstractmethod
    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """Remove delivered messages for good."""

    @abstractmethod
    async def release(self, deliveries: Sequence[Delivery]) -> None:
        """Give messages back unprocessed: they are delivered again (to anyone) at once."""

    @abstractmethod
    async def depth(self, queue: str) -> int:
        """How many messages wait in ``queue``, including ones being processed."""


def queue_name(prefix: str, flow: str) -> str:
    """The queue of a flow: one queue per flow, so depth and throughput are seen per flow."""
    return f"{prefix}.{flow}"
