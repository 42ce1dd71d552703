"""What only the ``amqp`` transport promises, on a real RabbitMQ: quorum queues with a dead-letter exchange,
the poison-message guard, and surviving the loss of its connection.

The shared guarantees are in ``test_transport_contract.py``; these tests add the broker's side of the story,
read with ``rabbitmqctl`` in a virtual host of this module's own.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

import aio_pika
import pytest

from derbridge.bridge.transport.amqp import AmqpTransport
from derbridge.bridge.transport.base import Delivery, TransportError

if TYPE_CHECKING:
    from tests.support.transport import AmqpVhost

pytest_plugins = ["tests.support.transport"]

RECONNECT_WITHIN = 20.0


@pytest.fixture
def prefix() -> str:
    """A queue prefix of the test's own: the virtual host is shared by the module."""
    return f"amqp{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def make_transport(amqp_vhost: AmqpVhost) -> AsyncIterator[Callable[..., AmqpTransport]]:
    """Makes transports on the module's virtual host and closes every one at teardown."""
    made: list[AmqpTransport] = []

    def make(**options: Any) -> AmqpTransport:
        transport = AmqpTransport(amqp_vhost.url, **{"connect_timeout": 5, **options})
        made.append(transport)
        return transport

    try:
        yield make
    finally:
        for transport in made:
            await transport.close()


def listing(vhost: AmqpVhost, command: str, *columns: str) -> list[dict[str, Any]]:
    """``rabbitmqctl COMMAND COLUMNS`` in the virtual host, as a list of objects."""
    rows: list[dict[str, Any]] = json.loads(vhost.ctl(command, "--formatter", "json", *columns))
    return rows


async def close_broker_connections(vhost: AmqpVhost, *, blocking: bool) -> None:
    """Have the broker close every client connection of the virtual host, as an operator or a restart would.

    ``blocking`` runs ``rabbitmqctl`` on the event loop's thread: the client then learns of the close only
    when it next reads its socket — after the test has already started using the connection again.
    """
    reason = "derbridge test: connection lost"
    closed = vhost.close_connections(reason) if blocking else await asyncio.to_thread(vhost.close_connections, reason)
    assert closed >= 1, "the test meant to cut a live connection"


async def receive_through_outage(
    transport: AmqpTransport, queues: Sequence[str], count: int, within: float
) -> list[Delivery]:
    """Receive ``count`` deliveries, taking "unreachable (reconnecting)" answers as "not yet"."""
    deadline = time.monotonic() + within
    got: list[Delivery] = []
    while len(got) < count and time.monotonic() < deadline:
        try:
            got += await transport.receive(queues, count - len(got), 1.0)
        except TransportError:
            await asyncio.sleep(0.2)
    return got


def summary(deliveries: Sequence[Delivery]) -> list[tuple[str, str, bytes, int]]:
    """What a delivery says, as a comparable tuple."""
    return [(d.queue, d.message_id, d.body, d.delivery_count) for d in deliveries]


async def test_queues_are_durable_quorum_queues_dead_lettering_to_a_fanout_exchange(
    amqp_vhost: AmqpVhost, make_transport: Callable[..., AmqpTransport], prefix: str
) -> None:
    transport = make_transport()
    await transport.start([f"{prefix}.enroll", f"{prefix}.dispatch"])

    queues = {
        row["name"]: row
        for row in listing(amqp_vhost, "list_queues", "name", "type", "durable", "arguments")
        if row["name"].startswith(prefix)
    }
    assert {name: (row["type"], row["durable"]) for name, row in queues.items()} == {
        f"{prefix}.enroll": ("quorum", True),
        f"{prefix}.dispatch": ("quorum", True),
        f"{prefix}.dead": ("quorum", True),
    }
    enroll_arguments = {name: value for name, _type, value in queues[f"{prefix}.enroll"]["arguments"]}
    assert enroll_arguments == {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": f"{prefix}.dead",
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-delivery-limit": 1000,
    }
    exchanges = [
        (row["name"], row["type"], row["durable"])
        for row in listing(amqp_vhost, "list_exchanges", "name", "type", "durable")
        if row["name"].startswith(prefix)
    ]
    assert exchanges == [(f"{prefix}.dead", "fanout", True)]
    bindings = [
        (row["source_name"], row["destination_name"])
        for row in listing(amqp_vhost, "list_bindings", "source_name", "destination_name")
        if row["source_name"].startswith(prefix)
    ]
    assert bindings == [(f"{prefix}.dead", f"{prefix}.dead")]


async def test_a_message_failing_past_the_delivery_limit_goes_to_the_dead_letter_queue(
    make_transport: Callable[..., AmqpTransport], prefix: str
) -> None:
    queue, dead = f"{prefix}.enroll", f"{prefix}.dead"
    transport = make_transport(delivery_limit=1)
    await transport.publish(queue, [("m-1", b"poison")])

    first = await transport.receive([queue], 10, 5.0)
    assert summary(first) == [(queue, "m-1", b"poison", 1)]
    await transport.release(first)
    second = await transport.receive([queue], 10, 5.0)
    assert summary(second) == [(queue, "m-1", b"poison", 2)]
    await transport.release(second)  # the second failure: past the limit of 1

    assert summary(await transport.receive([dead], 10, 5.0)) == [(dead, "m-1", b"poison", 1)]
    assert await transport.receive([queue], 10, 0.3) == []
    assert await transport.depth(queue) == 0


async def test_an_unacknowledged_message_survives_the_loss_of_the_consumer_connection(
    amqp_vhost: AmqpVhost, make_transport: Callable[..., AmqpTransport], prefix: str
) -> None:
    queue = f"{prefix}.enroll"
    transport = make_transport()
    await transport.publish(queue, [("m-1", b"payload")])
    taken = await transport.receive([queue], 10, 5.0)
    assert summary(taken) == [(queue, "m-1", b"payload", 1)]

    await close_broker_connections(amqp_vhost, blocking=False)
    await transport.ack(taken)  # on a closed channel: logged, not raised — the broker keeps the message

    started = time.monotonic()
    again = await receive_through_outage(transport, [queue], 1, RECONNECT_WITHIN)
    assert summary(again) == [(queue, "m-1", b"payload", 2)]
    assert time.monotonic() - started < RECONNECT_WITHIN
    await transport.ack(again)
    assert await transport.depth(queue) == 0


async def test_a_message_held_by_a_crashed_consumer_is_redelivered_to_another(
    amqp_vhost: AmqpVhost, make_transport: Callable[..., AmqpTransport], prefix: str
) -> None:
    # A consumer of another process (a plain, non-reconnecting connection) takes the message and dies.
    queue = f"{prefix}.enroll"
    transport = make_transport()
    await transport.start([queue])
    await transport.publish(queue, [("m-1", b"payload")])
    crashed = await aio_pika.connect(amqp_vhost.url)
    try:
        channel = await crashed.channel()
        taken = await (await channel.declare_queue(queue, passive=True)).get(timeout=5, fail=True)
        assert taken is not None
        assert taken.message_id == "m-1"
    finally:
        await crashed.close()  # without acknowledging

    again = await transport.receive([queue], 10, 5.0)
    assert summary(again) == [(queue, "m-1", b"payload", 2)]
    await transport.ack(again)
    assert await transport.depth(queue) == 0


@pytest.mark.parametrize("blocking", [False, True], ids=["noticed", "unnoticed"])
async def test_the_same_transport_works_again_after_the_broker_closed_its_connection(
    amqp_vhost: AmqpVhost, make_transport: Callable[..., AmqpTransport], prefix: str, blocking: bool
) -> None:
    # "unnoticed": the client learns of the close only while publishing, and must publish again itself.
    queue = f"{prefix}.enroll"
    transport = make_transport(connect_timeout=15)
    await transport.start([queue])
    await transport.publish(queue, [("m-1", b"before")])
    before = await transport.receive([queue], 10, 5.0)
    assert summary(before) == [(queue, "m-1", b"before", 1)]
    await transport.ack(before)

    await close_broker_connections(amqp_vhost, blocking=blocking)
    started = time.monotonic()
    await transport.publish(queue, [("m-2", b"after")])
    after = await receive_through_outage(transport, [queue], 1, RECONNECT_WITHIN)

    assert summary(after) == [(queue, "m-2", b"after", 1)]
    assert time.monotonic() - started < RECONNECT_WITHIN
    await transport.ack(after)
    assert await transport.depth(queue) == 0


async def test_a_message_for_a_queue_deleted_behind_our_back_is_an_error_not_a_loss(
    amqp_vhost: AmqpVhost, make_transport: Callable[..., AmqpTransport], prefix: str
) -> None:
    queue = f"{prefix}.enroll"
    transport = make_transport()
    await transport.start([queue])
    await asyncio.to_thread(amqp_vhost.ctl, "delete_queue", queue)

    with pytest.raises(TransportError, match="refused"):
        await transport.publish(queue, [("m-1", b"payload")])


async def test_a_queue_declared_otherwise_is_reported_not_silently_used(
    amqp_vhost: AmqpVhost, make_transport: Callable[..., AmqpTransport], prefix: str
) -> None:
    queue = f"{prefix}.enroll"
    other = await aio_pika.connect(amqp_vhost.url)
    try:
        await (await other.channel()).declare_queue(queue, durable=True)  # a classic queue
    finally:
        await other.close()

    transport = make_transport()
    with pytest.raises(TransportError, match="declaring queue"):
        await transport.start([queue])


async def test_close_leaves_no_connection_behind(
    amqp_vhost: AmqpVhost, make_transport: Callable[..., AmqpTransport], prefix: str
) -> None:
    queue = f"{prefix}.enroll"
    transport = make_transport()
    await transport.publish(queue, [("m-1", b"payload")])
    assert len(await transport.receive([queue], 10, 5.0)) == 1
    await transport.close()

    deadline = time.monotonic() + 5.0
    while amqp_vhost.connections() and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
    assert amqp_vhost.connections() == []
    with pytest.raises(TransportError, match="closed"):
        await transport.publish(queue, [("m-2", b"payload")])
