"""The transport contract: the same hand-written expectations, run against every adapter.

The adapters are ``sql`` on SQLite (a migrated bridge database file), ``sql`` on PostgreSQL (a throw-away
database) and ``amqp`` on RabbitMQ (a throw-away virtual host). Every expected value below is written out
by hand — message ids, bodies, delivery counts, depths — never computed from a shared helper, so no adapter
can pass trivially by agreeing with itself. The only helper, :func:`collect`, gathers what an adapter
hands out (an adapter may hand out fewer messages per ``receive`` than are waiting); it expects nothing.

Each test uses queues of its own (a fresh prefix), so the RabbitMQ virtual host can be shared by the module.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.bridge.transport.amqp import AmqpTransport
from derbridge.bridge.transport.base import Delivery, Transport, TransportError, queue_name
from derbridge.bridge.transport.sql import SqlTransport
from derbridge.infra.db import create_async_db_engine
from derbridge.migrations.runner import upgrade

pytest_plugins = ["tests.support.transport"]

SLACK = 2.0
"""How much later than its timeout an empty ``receive`` may return."""


class DatabaseServer(Protocol):
    """What this module needs of ``tests/conftest.py``'s ``postgres`` fixture."""

    def create_database(self, label: str) -> str: ...


@dataclass(frozen=True)
class BackendSpec:
    """Where an adapter under test keeps its queues, and an address of the same kind nobody answers on."""

    kind: str
    url: str
    unreachable_url: str


@pytest.fixture(
    params=["sql-sqlite", pytest.param("sql-postgres", marks=pytest.mark.postgres), "amqp"],
)
def backend_spec(request: pytest.FixtureRequest, tmp_path: Path, closed_port: int) -> BackendSpec:
    """One adapter's storage: a migrated SQLite file, a migrated PostgreSQL database, a RabbitMQ vhost."""
    if request.param == "sql-sqlite":
        url = f"sqlite:///{tmp_path / 'bridge.db'}"
        upgrade("bridge", url)
        # A file that is not a SQLite database: as unusable as a file database gets. (Not a path SQLite
        # cannot open: aiosqlite then stops its worker thread without awaiting it, which races the end
        # of the test's event loop.)
        not_a_database = tmp_path / "not-a-database.db"
        not_a_database.write_bytes(b"this is not a SQLite database, not even its header" * 100)
        return BackendSpec("sql", url, f"sqlite:///{not_a_database}")
    if request.param == "sql-postgres":
        server: DatabaseServer = request.getfixturevalue("postgres")
        url = server.create_database("bridge")
        upgrade("bridge", url)
        return BackendSpec("sql", url, f"postgresql://postgres@127.0.0.1:{closed_port}/bridge")
    url = request.getfixturevalue("amqp_vhost_url")
    return BackendSpec("amqp", url, f"amqp://guest:guest@127.0.0.1:{closed_port}/")


class Backend:
    """Makes transports on one adapter's storage, and closes every one of them (and its engines) after."""

    def __init__(self, spec: BackendSpec) -> None:
        self.spec = spec
        self.prefix = f"contract{uuid.uuid4().hex[:8]}"
        self._engines: list[AsyncEngine] = []
        self._transports: list[Transport] = []

    def queue(self, flow: str) -> str:
        """A queue of this test's own."""
        return queue_name(self.prefix, flow)

    def transport(self, *, lease_seconds: float = 60.0, prefetch: int = 200) -> Transport:
        """A new transport instance (``lease_seconds`` is for ``sql``, ``prefetch`` for ``amqp``)."""
        return self._make(self.spec.url, lease_seconds=lease_seconds, prefetch=prefetch)

    def unreachable(self) -> Transport:
        """A transport of the same kind whose database or broker nobody answers for."""
        return self._make(self.spec.unreachable_url, lease_seconds=60.0, prefetch=200)

    def _make(self, url: str, *, lease_seconds: float, prefetch: int) -> Transport:
        transport: Transport
        if self.spec.kind == "sql":
            engine = create_async_db_engine(url)
            self._engines.append(engine)
            transport = SqlTransport(engine, lease_seconds=lease_seconds, poll_seconds=0.05)
        else:
            transport = AmqpTransport(url, prefetch=prefetch, connect_timeout=5)
        self._transports.append(transport)
        return transport

    async def aclose(self) -> None:
        for transport in self._transports:
            await transport.close()
        for engine in self._engines:
            await engine.dispose()


@pytest.fixture
async def backend(backend_spec: BackendSpec) -> AsyncIterator[Backend]:
    """Transports of one adapter, all closed at teardown."""
    made = Backend(backend_spec)
    try:
        yield made
    finally:
        await made.aclose()


async def collect(
    transport: Transport, queues: Sequence[str], count: int, *, within: float = 10.0, max_messages: int = 100
) -> list[Delivery]:
    """Receive until ``count`` deliveries came or ``within`` seconds passed; whatever came, in order."""
    deadline = time.monotonic() + within
    got: list[Delivery] = []
    while len(got) < count:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        got += await transport.receive(queues, min(max_messages, count - len(got)), min(remaining, 1.0))
    return got


def summary(deliveries: Sequence[Delivery]) -> list[tuple[str, str, bytes, int]]:
    """What a delivery says, as a comparable tuple."""
    return [(d.queue, d.message_id, d.body, d.delivery_count) for d in deliveries]


# --- publish and receive -------------------------------------------------------------------------------


async def test_published_messages_are_received_in_order_with_their_bytes_and_ids(backend: Backend) -> None:
    transport = backend.transport()
    queue = backend.queue("enroll")
    await transport.start([queue])

    await transport.publish(queue, [("m-1", b"first"), ("m-2", b"\x00\xff\r\n binary"), ("m-3", b"")])

    got = await collect(transport, [queue], 3)
    assert summary(got) == [
        (queue, "m-1", b"first", 1),
        (queue, "m-2", b"\x00\xff\r\n binary", 1),
        (queue, "m-3", b"", 1),
    ]
    # Held by us: nobody, not even we, receives them again meanwhile.
    assert await transport.receive([queue], 10, 0.3) == []


async def test_receive_hands_out_at_most_max_messages(backend: Backend) -> None:
    transport = backend.transport()
    queue = backend.queue("enroll")
    await transport.publish(queue, [("m-1", b"1"), ("m-2", b"2"), ("m-3", b"3"), ("m-4", b"4"), ("m-5", b"5")])

    first = await transport.receive([queue], 2, 5.0)
    assert 1 <= len(first) <= 2
    rest = await collect(transport, [queue], 5 - len(first))
    assert [d.message_id for d in first + rest] == ["m-1", "m-2", "m-3", "m-4", "m-5"]


async def test_ack_removes_messages_for_good(backend: Backend) -> None:
    transport = backend.transport()
    queue = backend.queue("enroll")
    await transport.start([queue])
    await transport.publish(queue, [("m-1", b"one"), ("m-2", b"two")])
    assert await transport.depth(queue) == 2

    got = await collect(transport, [queue], 2)
    assert [d.message_id for d in got] == ["m-1", "m-2"]
    assert await transport.depth(queue) == 2  # being processed still counts
    await transport.ack(got)

    assert await transport.depth(queue) == 0
    assert await transport.receive([queue], 10, 0.5) == []
    await transport.close()
    assert await backend.transport().receive([queue], 10, 0.5) == []


async def test_receive_on_an_empty_queue_returns_nothing_after_about_the_timeout(backend: Backend) -> None:
    transport = backend.transport()
    queue = backend.queue("enroll")
    await transport.start([queue])
    await transport.publish(queue, [])  # nothing to publish is not an error
    await transport.ack([])
    await transport.release([])

    started = time.monotonic()
    got = await transport.receive([queue], 10, 1.0)
    elapsed = time.monotonic() - started

    assert got == []
    assert 0.9 <= elapsed <= 1.0 + SLACK
    assert await transport.depth(queue) == 0
    assert await transport.depth(backend.queue("never-used")) == 0


# --- redelivery ----------------------------------------------------------------------------------------


async def test_an_unacknowledged_message_is_redelivered_after_its_receiver_closes(backend: Backend) -> None:
    queue = backend.queue("enroll")
    first = backend.transport(lease_seconds=1.0)
    await first.start([queue])
    await first.publish(queue, [("m-1", b"payload")])
    assert summary(await collect(first, [queue], 1)) == [(queue, "m-1", b"payload", 1)]

    await first.close()  # without acknowledging

    second = backend.transport(lease_seconds=1.0)
    # amqp: at once (the broker requeues on channel close); sql: when the 1 s lease has expired.
    again = await collect(second, [queue], 1, within=1.0 + 5.0)
    assert summary(again) == [(queue, "m-1", b"payload", 2)]
    await second.ack(again)
    assert await second.depth(queue) == 0


@pytest.mark.parametrize(
    "backend_spec", ["sql-sqlite", pytest.param("sql-postgres", marks=pytest.mark.postgres)], indirect=True
)
async def test_an_expired_lease_alone_redelivers(backend: Backend) -> None:
    # sql only: a receiver that neither acknowledges nor closes (it hangs, or its host died) loses its lease.
    queue = backend.queue("enroll")
    holder = backend.transport(lease_seconds=1.0)
    await holder.publish(queue, [("m-1", b"payload")])
    taken = await collect(holder, [queue], 1)
    assert summary(taken) == [(queue, "m-1", b"payload", 1)]

    other = backend.transport(lease_seconds=1.0)
    assert await other.receive([queue], 10, 0.3) == []  # still leased
    again = await collect(other, [queue], 1, within=1.0 + 5.0)
    assert summary(again) == [(queue, "m-1", b"payload", 2)]

    await holder.ack(taken)  # too late: the message is the other receiver's now, and stays
    assert await other.depth(queue) == 1
    await other.ack(again)
    assert await other.depth(queue) == 0


async def test_release_makes_a_message_deliverable_again_at_once(backend: Backend) -> None:
    queue = backend.queue("enroll")
    transport = backend.transport(lease_seconds=60.0)  # a long lease: only release() can bring it back soon
    await transport.publish(queue, [("m-1", b"payload"), ("m-2", b"next")])
    taken = await collect(transport, [queue], 2)
    assert [d.message_id for d in taken] == ["m-1", "m-2"]

    await transport.release(taken[:1])
    started = time.monotonic()
    again = await collect(transport, [queue], 1, within=5.0)
    assert time.monotonic() - started < 2.0
    assert summary(again) == [(queue, "m-1", b"payload", 2)]
    assert await transport.depth(queue) == 2
    await transport.ack([*again, taken[1]])
    assert await transport.depth(queue) == 0


# --- several receivers, several queues -----------------------------------------------------------------


async def test_two_receivers_never_hold_the_same_message(backend: Backend) -> None:
    queue = backend.queue("enroll")
    publisher = backend.transport()
    await publisher.publish(queue, [(f"m-{n:03d}", b"x") for n in range(200)])
    receivers = {"a": backend.transport(prefetch=10), "b": backend.transport(prefetch=10)}
    seen: dict[str, list[str]] = {"a": [], "b": []}
    held: dict[str, str] = {}  # message id -> the receiver holding it right now
    overlaps: list[str] = []
    deadline = time.monotonic() + 20.0

    async def work(name: str) -> None:
        transport = receivers[name]
        while len(seen["a"]) + len(seen["b"]) < 200 and time.monotonic() < deadline:
            got = await transport.receive([queue], 10, 0.2)
            for delivery in got:
                if delivery.message_id in held:
                    overlaps.append(delivery.message_id)
                held[delivery.message_id] = name
            seen[name] += [d.message_id for d in got]
            await asyncio.sleep(0.01)  # hold them a moment, so the other receiver works meanwhile
            await transport.ack(got)
            for delivery in got:
                held.pop(delivery.message_id, None)

    await asyncio.gather(work("a"), work("b"))

    assert overlaps == []
    assert set(seen["a"]) & set(seen["b"]) == set()
    assert sorted(seen["a"] + seen["b"]) == [f"m-{n:03d}" for n in range(200)]
    assert await publisher.depth(queue) == 0


async def test_a_receiver_gets_only_the_queues_it_asks_for(backend: Backend) -> None:
    queue_a, queue_b = backend.queue("a"), backend.queue("b")
    publisher = backend.transport()
    await publisher.start([queue_a, queue_b])
    await publisher.publish(queue_a, [("m-a", b"for a")])

    receiver = backend.transport()
    assert await receiver.receive([queue_b], 10, 0.5) == []
    assert await publisher.depth(queue_b) == 0
    assert await publisher.depth(queue_a) == 1

    await publisher.publish(queue_b, [("m-b", b"for b")])
    got = await collect(receiver, [queue_a, queue_b], 2)
    assert sorted(summary(got)) == [(queue_a, "m-a", b"for a", 1), (queue_b, "m-b", b"for b", 1)]
    await receiver.ack(got)
    assert await publisher.depth(queue_a) == 0
    assert await publisher.depth(queue_b) == 0


async def test_a_batch_of_a_thousand_is_all_received_and_acknowledged(backend: Backend) -> None:
    queue = backend.queue("enroll")
    transport = backend.transport()
    await transport.start([queue])
    await transport.publish(queue, [(f"m-{n:04d}", f"body {n}".encode()) for n in range(1000)])
    assert await transport.depth(queue) == 1000

    received: list[Delivery] = []
    deadline = time.monotonic() + 30.0
    while len(received) < 1000 and time.monotonic() < deadline:
        got = await transport.receive([queue], 250, 1.0)
        await transport.ack(got)
        received += got

    assert [d.message_id for d in received] == [f"m-{n:04d}" for n in range(1000)]
    assert [d.body for d in received] == [f"body {n}".encode() for n in range(1000)]
    assert {d.delivery_count for d in received} == {1}
    assert await transport.depth(queue) == 0
    assert await transport.receive([queue], 10, 0.3) == []


# --- failure -------------------------------------------------------------------------------------------


async def test_an_unreachable_database_or_broker_raises_transport_error(backend: Backend) -> None:
    queue = backend.queue("enroll")
    transport = backend.unreachable()
    started = time.monotonic()
    with pytest.raises(TransportError):
        await transport.publish(queue, [("m-1", b"payload")])
    with pytest.raises(TransportError):
        await transport.receive([queue], 10, 0.5)
    with pytest.raises(TransportError):
        await transport.depth(queue)
    with pytest.raises(TransportError):
        await transport.start([queue])
    assert time.monotonic() - started < 20.0
