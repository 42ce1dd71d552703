"""The ``amqp`` transport: RabbitMQ quorum queues, publisher confirms, manual acks, a dead-letter exchange.

How the port's guarantees (:mod:`derbridge.bridge.transport.base`) are met:

- **Durable on return.** Every queue is a durable *quorum* queue (a replicated Raft log), every message is
  published ``PERSISTENT`` with its ``message_id``, on a channel in publisher-confirm mode. A batch is
  published concurrently and ``publish`` returns only once the broker confirmed every message of it. A
  message the broker cannot route (its queue was deleted behind our back) is returned and reported as
  :class:`~derbridge.bridge.transport.base.TransportError`, never dropped silently.
- **One holder at a time.** Consumption uses manual acks: a message delivered to this transport belongs
  to its channel until :meth:`AmqpTransport.ack` (``basic.ack``), :meth:`AmqpTransport.release`
  (``basic.nack`` with requeue) or the loss of the channel, when the broker makes it deliverable again.
  Each queue is consumed through ``queue.consume`` with ``prefetch`` as the per-consumer window; the
  deliveries feed an in-process buffer from which ``receive`` takes. A queue is consumed from the first
  ``receive`` that names it, not from ``start``: a process that only publishes must not pull (and sit
  on) a prefetch window of messages that other workers could process.
- **Delivery count.** Quorum queues count failed deliveries (a nack with requeue, or a consumer whose
  channel closed while holding the message) in the ``x-delivery-count`` header; our ``delivery_count`` is
  that plus one (absent → 1; 2 if the broker flags a redelivery without counting, as a classic queue
  made outside derbridge would). Messages still in our prefetch buffer when the channel closes count as
  delivered: the broker cannot tell them apart from ones being processed.
- **Poison guard and dead letters.** Each queue ``<prefix>.<flow>`` dead-letters to the durable fanout
  exchange ``<prefix>.dead``, bound to the durable quorum queue ``<prefix>.dead`` (``<prefix>`` is the
  queue name up to its last dot, as :func:`~derbridge.bridge.transport.base.queue_name` builds it). The
  bridge itself dead-letters in its tracking, with the target's problem detail; the broker's
  dead-lettering is only a guard against a message that crashes every consumer that takes it: after
  ``delivery_limit`` (default 1,000, generous on purpose: a message released to wait for a retry also
  counts) failed deliveries the queue moves it to ``<prefix>.dead`` instead of looping forever. Dead
  lettering is ``at-least-once`` (RabbitMQ >= 3.10; quorum queues allow it only with ``x-overflow:
  reject-publish``, and as we set no length limit that overflow mode never triggers). Queue arguments are
  fixed at declaration: a queue that exists with other ones makes ``start`` fail with a TransportError.
- **Reconnects.** The connection is ``connect_robust``: after a broker restart or a network drop it
  reconnects every ``reconnect_interval`` seconds and re-declares the channel, its QoS, the queues and the
  consumers. Messages taken on the old channel can no longer be acknowledged — the broker has already
  made them deliverable again — so acknowledging one is logged and ignored (the redelivery is absorbed by
  tracking and the target's inbox), and ones still buffered are dropped. ``publish`` waits up to
  ``connect_timeout`` for the connection to come back and republishes what was not confirmed (the port is
  at-least-once: a message whose confirm was lost with the connection may then be queued twice).
  A broker that cannot be reached raises :class:`~derbridge.bridge.transport.base.TransportError`.
- **Order.** A queue delivers in publication order (a batch is written to the channel in its order; the
  confirms are awaited together). Redeliveries come back ahead of newer messages but
  not necessarily in their original order; per-key ``sequence`` numbers make that harmless.
- **Depth** is the queue's ready messages (a passive declare's ``message_count``, which RabbitMQ gives
  *without* unacknowledged ones) plus the messages this transport holds unsettled (buffered or being
  processed). Messages held by *other* processes' consumers are not counted; RabbitMQ reports them only
  through its management API, which we do not require.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import aio_pika
import structlog
from aio_pika.abc import (
    AbstractIncomingMessage,
    AbstractRobustChannel,
    AbstractRobustConnection,
    AbstractRobustQueue,
)
from aio_pika.exceptions import (
    CONNECTION_EXCEPTIONS,
    ChannelInvalidStateError,
    ChannelNotFoundEntity,
    DeliveryError,
    MessageProcessError,
)
from yarl import URL

from derbridge.bridge.transport.base import Delivery, Transport, TransportError

log = structlog.get_logger(__name__)

# What a lost or refused broker connection raises through aio-pika/aiormq (aio-pika's own list, which
# includes OSError and RuntimeError), plus the timeouts we put around waits.
_BROKER_ERRORS: tuple[type[BaseException], ...] = (*CONNECTION_EXCEPTIONS, TimeoutError)

DEAD = "dead"
"""The last part of the dead-letter exchange's and queue's name: ``<prefix>.dead``."""

_RETRY_PAUSE = 0.2
"""Seconds between publish attempts while a dropped connection is being noticed and restored."""


def dead_letter_name(queue: str) -> str:
    """The dead-letter exchange and queue of ``queue`` (``derbridge.enroll`` → ``derbridge.dead``)."""
    prefix, dot, _flow = queue.rpartition(".")
    return f"{prefix if dot else queue}.{DEAD}"


def _masked(url: str) -> str:
    parsed = URL(url)
    return str(parsed.with_password("***")) if parsed.password else url


def _delivery_count(message: AbstractIncomingMessage) -> int:
    count = (message.headers or {}).get("x-delivery-count")
    if isinstance(count, int):
        return count + 1
    # No header: first delivery — unless the broker flags a redelivery (a classic queue made outside
    # derbridge does that without counting); "more than once" is then the truth we can tell.
    return 2 if message.redelivered else 1


def _alive(message: AbstractIncomingMessage) -> bool:
    """Whether ``message`` can still be settled: its channel is the one it came on, and still open."""
    try:
        message.channel  # noqa: B018 - the property raises when the delivering channel is closed
    except ChannelInvalidStateError:
        return False
    return True


class AmqpTransport(Transport):
    """Queues on a RabbitMQ broker (see the module documentation for the guarantees and their limits)."""

    name = "amqp"
    LINGER_SECONDS = 0.005
    """How long ``receive`` waits for the next message once one arrived, to fill its batch: a batch closes
    when the stream pauses that long (or it is full, or :attr:`MAX_LINGER_SECONDS` passed)."""
    MAX_LINGER_SECONDS = 0.05
    """How long ``receive`` keeps filling a batch from a steady stream, at most, after its first message."""

    def __init__(
        self,
        url: str,
        *,
        prefetch: int = 200,
        connect_timeout: float = 10,
        reconnect_interval: float = 1.0,
        confirm_timeout: float = 30.0,
        delivery_limit: int = 1000,
    ) -> None:
        """``url`` is ``amqp://user:password@host:port/vhost``; ``prefetch`` is each consumer's window of
        unacknowledged messages; ``connect_timeout`` bounds connecting and waiting for a reconnect;
        ``confirm_timeout`` bounds waiting for the broker's publisher confirms; ``delivery_limit`` is the
        poison-message guard (failed deliveries before the broker dead-letters a message)."""
        self._url = url
        self._prefetch = prefetch
        self._connect_timeout = connect_timeout
        self._reconnect_interval = reconnect_interval
        self._confirm_timeout = confirm_timeout
        self._delivery_limit = delivery_limit
        self._connection: AbstractRobustConnection | None = None
        self._channel: AbstractRobustChannel | None = None
        self._opening = asyncio.Lock()
        # Declaring and subscribing take round trips: without the lock, two tasks receiving from a new queue
        # at once would each subscribe, and the transport would hold two prefetch windows of it.
        self._setting_up = asyncio.Lock()
        self._closed = False
        self._declared: dict[str, AbstractRobustQueue] = {}
        self._consuming: set[str] = set()
        # Per queue: deliveries not yet handed out by receive(), and every delivery not yet settled
        # (buffered or handed out) — the latter is what depth() adds to the broker's ready count.
        self._buffers: dict[str, asyncio.Queue[AbstractIncomingMessage]] = defaultdict(asyncio.Queue)
        self._held: dict[str, set[AbstractIncomingMessage]] = defaultdict(set)
        self._arrived = asyncio.Event()

    # --- connection --------------------------------------------------------------------------------

    async def start(self, queues: Sequence[str]) -> None:
        """Connect (again, after :meth:`close`) and declare ``queues`` with their dead-letter exchange."""
        self._closed = False
        channel = await self._ready_channel(self._connect_timeout)
        for queue in queues:
            await self._declare(channel, queue)

    async def close(self) -> None:
        """Close the channel and the connection; the broker makes every unsettled message deliverable."""
        async with self._opening:
            self._closed = True
            channel, connection = self._channel, self._connection
            self._channel = self._connection = None
            self._declared.clear()
            self._consuming.clear()
            self._buffers.clear()
            self._held.clear()
            self._arrived.set()  # wake a receive() still waiting: it finds nothing and returns
            if channel is not None:
                try:
                    await channel.close()
                except _BROKER_ERRORS as error:  # already gone with its connection: nothing left to do
                    log.debug("amqp channel close failed", error=str(error))
            if connection is not None:
                try:
                    await connection.close()
                except _BROKER_ERRORS as error:
                    log.debug("amqp connection close failed", error=str(error))

    async def _open(self) -> AbstractRobustChannel:
        async with self._opening:
            if self._closed:
                raise TransportError("the amqp transport is closed")
            if self._channel is not None:
                return self._channel
            try:
                connection = await aio_pika.connect_robust(
                    self._url,
                    timeout=self._connect_timeout,
                    reconnect_interval=self._reconnect_interval,
                    client_properties={"connection_name": "derbridge bridge"},
                )
            except _BROKER_ERRORS as error:
                raise TransportError(f"the broker at {_masked(self._url)} does not answer: {error!r}") from error
            try:
                channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
                await channel.set_qos(prefetch_count=self._prefetch)
            except _BROKER_ERRORS as error:
                await connection.close()
                raise TransportError(f"opening a channel on {_masked(self._url)} failed: {error!r}") from error
            self._connection, self._channel = connection, channel
            return channel

    async def _ready_channel(self, timeout: float) -> AbstractRobustChannel:
        """The channel, once usable: waits (up to ``timeout``) for a reconnect in progress to finish."""
        channel = await self._open()
        try:
            await asyncio.wait_for(channel.ready(), timeout=max(timeout, 0.001))
        except TimeoutError as error:
            raise TransportError(f"the broker at {_masked(self._url)} is unreachable (reconnecting)") from error
        return channel

    def _connected(self) -> bool:
        return self._connection is not None and self._connection.connected.is_set()

    async def _declare(self, channel: AbstractRobustChannel, queue: str) -> AbstractRobustQueue:
        """Declare ``queue`` (and its dead-letter exchange and queue) once per transport.

        The robust channel remembers the declarations and the binding and repeats them after a reconnect.
        """
        known = self._declared.get(queue)
        if known is not None:
            return known
        async with self._setting_up:
            return await self._declare_locked(channel, queue)

    async def _declare_locked(self, channel: AbstractRobustChannel, queue: str) -> AbstractRobustQueue:
        known = self._declared.get(queue)
        if known is not None:
            return known
        dead = dead_letter_name(queue)
        quorum: dict[str, Any] = {"x-queue-type": "quorum"}
        try:
            if dead not in self._declared:
                exchange = await channel.declare_exchange(dead, aio_pika.ExchangeType.FANOUT, durable=True)
                dead_queue = await channel.declare_queue(dead, durable=True, arguments=quorum)
                await dead_queue.bind(exchange)
                self._declared[dead] = dead_queue
            if queue == dead:
                return self._declared[dead]
            declared = await channel.declare_queue(
                queue,
                durable=True,
                arguments={
                    **quorum,
                    "x-dead-letter-exchange": dead,
                    "x-delivery-limit": self._delivery_limit,
                    "x-dead-letter-strategy": "at-least-once",
                    "x-overflow": "reject-publish",
                },
            )
        except _BROKER_ERRORS as error:
            raise TransportError(f"declaring queue {queue} failed: {error!r}") from error
        self._declared[queue] = declared
        return declared

    # --- publishing ----------------------------------------------------------------------------------

    async def publish(self, queue: str, messages: Sequence[tuple[str, bytes]]) -> None:
        """Publish ``messages`` to ``queue`` concurrently; return when the broker confirmed every one."""
        if not messages:
            return
        deadline = time.monotonic() + self._connect_timeout
        pending = list(messages)
        while True:
            channel = await self._ready_channel(deadline - time.monotonic())
            await self._declare(channel, queue)
            results = await asyncio.gather(
                *(
                    channel.default_exchange.publish(
                        aio_pika.Message(body, message_id=message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                        routing_key=queue,
                        mandatory=True,  # an unroutable message comes back as an error instead of vanishing
                        timeout=self._confirm_timeout,
                    )
                    for message_id, body in pending
                ),
                return_exceptions=True,
            )
            failed = [(message, r) for message, r in zip(pending, results, strict=True) if isinstance(r, BaseException)]
            if not failed:
                return
            errors = [error for _, error in failed]
            refused = [e for e in errors if isinstance(e, DeliveryError)]  # nacked or returned: final
            if refused:
                raise TransportError(
                    f"the broker refused {len(refused)} message(s) for {queue}: {refused[0]!r}"
                ) from refused[0]
            lost = (*_BROKER_ERRORS, asyncio.CancelledError)  # the channel went away: confirms lost with it
            for error in errors:
                if not isinstance(error, lost):
                    raise error
            if time.monotonic() >= deadline:
                raise TransportError(f"publishing to {queue} failed: {errors[0]!r}") from errors[0]
            log.info("amqp publish interrupted; republishing unconfirmed messages", queue=queue, count=len(failed))
            pending = [message for message, _ in failed]
            await asyncio.sleep(_RETRY_PAUSE)  # let the connection notice the loss and start recovering

    # --- consuming -----------------------------------------------------------------------------------

    async def receive(self, queues: Sequence[str], max_messages: int, timeout: float) -> list[Delivery]:
        """Up to ``max_messages`` deliveries, round-robin across ``queues``, each queue in order.

        The first call naming a queue subscribes to it. An empty answer while the connection is down (being
        restored) is a :class:`TransportError` instead, so that an outage is seen, not mistaken for quiet.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self._consume(queues)
        deliveries: list[Delivery] = []
        filled_by: float | None = None  # the batch closes then, unless more messages come
        latest: float | None = None  # and then at the latest
        while True:
            self._arrived.clear()
            taken = self._take(queues, max_messages - len(deliveries))
            deliveries += taken
            if len(deliveries) >= max_messages or self._closed:
                break
            if deliveries:
                # The broker pushes messages one by one as the publisher's confirms come: wait while they keep
                # coming, so that a batch is a batch (the worker's cost is per batch) rather than what arrived
                # in the first few milliseconds — batches of three or four took most of the worker's CPU
                # away from the relay feeding it. A lone message waits only LINGER_SECONDS.
                now = loop.time()
                latest = latest if latest is not None else now + self.MAX_LINGER_SECONDS
                if taken:
                    filled_by = min(now + self.LINGER_SECONDS, latest)
                wait = (filled_by or now) - now
            else:
                wait = deadline - loop.time()
            if wait <= 0:
                break
            try:
                await asyncio.wait_for(self._arrived.wait(), timeout=wait)
            except TimeoutError:
                continue
        if not deliveries and not self._closed and not self._connected():
            # An empty answer must not hide an outage: the caller logs and backs off.
            raise TransportError(f"the broker at {_masked(self._url)} is unreachable (reconnecting)")
        return deliveries

    async def _consume(self, queues: Sequence[str]) -> None:
        if all(queue in self._consuming for queue in queues):
            return
        channel = await self._ready_channel(self._connect_timeout)
        async with self._setting_up:
            for queue in queues:
                if queue not in self._consuming:
                    await self._subscribe(channel, queue)

    async def _subscribe(self, channel: AbstractRobustChannel, queue: str) -> None:
        declared = await self._declare_locked(channel, queue)

        async def on_message(message: AbstractIncomingMessage) -> None:
            self._on_message(queue, message)

        try:
            # robust: the consumer is registered again on the new channel after a reconnect.
            await declared.consume(on_message, no_ack=False)
        except _BROKER_ERRORS as error:
            raise TransportError(f"consuming {queue} failed: {error!r}") from error
        self._consuming.add(queue)

    def _on_message(self, queue: str, message: AbstractIncomingMessage) -> None:
        if self._closed:
            return  # our channel is closing: the broker gives the message back
        self._held[queue].add(message)
        self._buffers[queue].put_nowait(message)
        self._arrived.set()

    def _take(self, queues: Sequence[str], max_messages: int) -> list[Delivery]:
        # Round-robin, so that a busy queue cannot starve the others when max_messages is small.
        deliveries: list[Delivery] = []
        active = [queue for queue in queues if queue in self._buffers]
        while active and len(deliveries) < max_messages:
            for queue in list(active):
                message = self._next_alive(queue)
                if message is None:
                    active.remove(queue)
                    continue
                deliveries.append(
                    Delivery(
                        queue=queue,
                        # We always publish with an id; a foreign publisher may not, and the bridge needs one
                        # that is the same for every copy: the body's digest.
                        message_id=message.message_id or hashlib.sha256(message.body).hexdigest(),
                        body=message.body,
                        delivery_count=_delivery_count(message),
                        handle=message,
                    )
                )
                if len(deliveries) >= max_messages:
                    break
        return deliveries

    def _next_alive(self, queue: str) -> AbstractIncomingMessage | None:
        buffer = self._buffers[queue]
        while not buffer.empty():
            message = buffer.get_nowait()
            if _alive(message):
                return message
            # Taken on a channel that has since closed: the broker already made it deliverable again, and
            # the restored consumer will receive that copy.
            self._held[queue].discard(message)
        return None

    async def ack(self, deliveries: Sequence[Delivery]) -> None:
        """``basic.ack`` each delivery; one taken on a channel that has since closed is only logged. The acks
        are written together (one await per batch, not one per message); never ``multiple=True``, which
        would also acknowledge other batches' messages of the channel that are still being processed."""
        await asyncio.gather(*(self._settle(delivery, requeue=None) for delivery in deliveries))

    async def release(self, deliveries: Sequence[Delivery]) -> None:
        """``basic.nack`` with requeue: the broker delivers them again (to any consumer) at once."""
        await asyncio.gather(*(self._settle(delivery, requeue=True) for delivery in deliveries))

    async def _settle(self, delivery: Delivery, *, requeue: bool | None) -> None:
        message: AbstractIncomingMessage = delivery.handle
        self._held[delivery.queue].discard(message)
        try:
            async with asyncio.timeout(self._confirm_timeout):  # a write to a dying socket must not hang us
                if requeue is None:
                    await message.ack()
                else:
                    await message.nack(requeue=requeue)
        except MessageProcessError:
            return  # settled before: settling is idempotent, as on the sql transport
        except _BROKER_ERRORS as error:
            # The channel it came on is gone (reconnect, close): the broker has already made the message
            # deliverable again. Harmless: the copy it redelivers is absorbed by tracking and the inbox.
            log.debug(
                "amqp settle on a closed channel; the broker redelivers the message",
                queue=delivery.queue,
                message_id=delivery.message_id,
                action="ack" if requeue is None else "release",
                error=repr(error),
            )

    # --- inspection ----------------------------------------------------------------------------------

    async def depth(self, queue: str) -> int:
        """Ready messages in ``queue`` plus the ones this transport holds unsettled (0 if it does not exist)."""
        channel = await self._ready_channel(self._connect_timeout)
        try:
            underlay = await channel.get_underlay_channel()
            # A throw-away channel: a passive declare of a missing queue closes the channel it runs on, and
            # our consuming channel must not pay for that (its deliveries would be lost with it).
            probe = await underlay.connection.channel(publisher_confirms=False, timeout=self._connect_timeout)
            try:
                declared = await probe.queue_declare(queue, passive=True, timeout=self._connect_timeout)
                ready = int(declared.message_count or 0)
            except ChannelNotFoundEntity:
                ready = 0
            finally:
                await probe.close()
        except _BROKER_ERRORS as error:
            raise TransportError(f"reading the depth of {queue} failed: {error!r}") from error
        held = self._held.get(queue, set())
        for message in [m for m in held if not _alive(m)]:
            held.discard(message)
        return ready + len(held)
