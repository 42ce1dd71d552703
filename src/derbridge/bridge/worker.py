"""The bridge worker: relays outboxes, consumes the flow queues, delivers, and schedules what must wait.

For each message taken from a queue:

1. **Track** it (:meth:`Tracker.see`): a copy of a message already delivered or dead, or scheduled for
   later, is acknowledged without a second delivery.
2. **Route** it (:mod:`derbridge.bridge.routing`): its payload must match its contract, else it is dead.
3. **Deliver** it (:class:`Deliverer`) and **settle** the attempt in tracking: delivered, retrying at
   ``now + backoff``, parked until ``wake_on``, or dead.
4. **Acknowledge** the queue copy — only after the settlement committed, so a crash in between means a
   redelivery (absorbed by tracking and the target's inbox), never a loss.

The scheduler puts retrying and parked messages whose time came back on their queue, and the relays move
each system's outbox to the transport. Any number of workers may run against the same database and
broker: every step tolerates duplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import timedelta

import structlog
from pydantic import ValidationError

from derbridge.bridge.delivery import AttemptResult, Deliverer, Outcome
from derbridge.bridge.relay import Relay
from derbridge.bridge.routing import RouteError, route
from derbridge.bridge.tracking import MessageState, Settlement, Tracker, backoff_delay
from derbridge.bridge.transport.base import Delivery, Transport, TransportError, queue_name
from derbridge.contracts.envelope import Envelope, Flow
from derbridge.contracts.registry import BY_TYPE
from derbridge.infra import metrics
from derbridge.infra.db import utcnow
from derbridge.infra.outbox import deserialize, watch_outbox
from derbridge.settings import BridgeSettings

log = structlog.get_logger("derbridge.bridge")

MAX_BATCHES_IN_FLIGHT = 4


def _counts_by_flow(settled: Sequence[tuple[Envelope, Settlement]]) -> dict[str, dict[str, int]]:
    """How many messages of each flow ended in each state, e.g. ``{"enrollment-sync": {"delivered": 12}}``."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for envelope, settlement in settled:
        counts[envelope.flow.value][settlement.state.value] += 1
    return {flow: dict(states) for flow, states in counts.items()}


def flow_queues(prefix: str) -> dict[str, Flow]:
    """Every flow's queue name, mapped to its flow."""
    return {queue_name(prefix, flow.value): flow for flow in Flow}


class BridgeWorker:
    """Runs the bridge's loops until asked to stop."""

    def __init__(
        self,
        transport: Transport,
        tracker: Tracker,
        deliverer: Deliverer,
        relays: Sequence[Relay],
        settings: BridgeSettings,
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.transport = transport
        self.tracker = tracker
        self.deliverer = deliverer
        self.relays = list(relays)
        self.settings = settings
        self.queues = flow_queues(settings.queue_prefix)
        self._rng = rng or random.Random()  # jitter, not security: the default generator is right
        self._in_flight: set[asyncio.Task[None]] = set()
        # Batches in flight each make one call per target; the bound keeps a slow target from piling up calls.
        self._delivery_slots = asyncio.Semaphore(max(1, settings.concurrency // 4))
        # Set when a transaction of this process wrote an outbox the worker relays: the relay loop wakes at
        # once instead of after its poll interval (a status check's round trip is two relay hops).
        self._outbox_written = asyncio.Event()
        for relay in self.relays:
            watch_outbox(relay.engine, self._outbox_written)

    # --- one message -------------------------------------------------------------------------------

    async def process(self, deliveries: Sequence[Delivery]) -> None:
        """Track, route, deliver, settle and acknowledge a batch of queue copies.

        Tracking is read and written once per batch (set-based); deliveries run concurrently. The batch is
        acknowledged only after its settlements committed: a crash in between means redelivery, not loss.
        """
        now = utcnow()
        # Bound once per batch: the module's logger is a lazy proxy that builds a bound logger at every call,
        # which cost more than the (usually filtered out) per-message lines themselves.
        batch_log = log.bind()
        envelopes: list[Envelope] = []
        # Each message's text as it came off the queue: tracking stores it and the target receives it as is.
        # It is what the relay published (the outbox's serialisation), so dumping the parsed envelope again
        # at each hop would only cost time (it was most of the worker's per-message work with the parse).
        texts: dict[str, str] = {}
        for delivery in deliveries:
            try:
                envelope = deserialize(delivery.body)
                texts.setdefault(envelope.message_id, delivery.body.decode())
                envelopes.append(envelope)
            except (ValidationError, UnicodeDecodeError) as error:
                flow = self.queues.get(delivery.queue)
                await self.tracker.see_unreadable(
                    delivery.message_id, flow.value if flow else delivery.queue, delivery.body, str(error)[:2000]
                )
                log.error("unreadable message kept as dead", message_id=delivery.message_id, queue=delivery.queue)
        tracked = await self.tracker.see(envelopes, now, texts=texts)
        chosen: dict[str, Envelope] = {}
        received: dict[str, int] = defaultdict(int)
        for envelope in envelopes:
            state = tracked[envelope.message_id]
            if state.new and envelope.message_id not in chosen:
                received[envelope.flow.value] += 1
            if state.should_deliver(now) and envelope.message_id not in chosen:
                chosen[envelope.message_id] = envelope
            else:
                batch_log.debug("duplicate copy acknowledged", message_id=envelope.message_id, state=state.state)
        for flow_name, count in received.items():  # a metric's labels looked up once per batch, not per message
            metrics.BRIDGE_RECEIVED.labels(flow_name).inc(count)
        results = await self._attempt_all(list(chosen.values()), texts)
        settlements: list[tuple[str, int, Settlement]] = []
        counted: list[tuple[Envelope, Settlement]] = []
        for envelope, result in zip(chosen.values(), results, strict=True):
            attempt = tracked[envelope.message_id].attempts + 1
            settlement = self._settlement(result, attempt)
            settlements.append((envelope.message_id, attempt, settlement))
            counted.append((envelope, settlement))
            batch_log.debug(
                "delivery attempt",
                message_id=envelope.message_id,
                correlation_id=envelope.correlation_id,
                flow=envelope.flow.value,
                outcome=result.outcome.value,
                state=settlement.state.value,
                status_code=result.status_code,
                attempt=attempt,
                duration_ms=result.duration_ms,
            )
        if counted or len(envelopes) > len(chosen):
            # One line per batch at INFO (each message's attempt is at DEBUG): thousands of messages make a
            # readable log of counts, and `derbridge messages` holds each message's journey.
            batch_log.info(
                "batch settled",
                settled=_counts_by_flow(counted),
                duplicates=len(envelopes) - len(chosen),
            )
        self._count(counted)
        await self.tracker.settle(settlements, attempted_at=now)
        await self.transport.ack(deliveries)
        await self._announce(counted)

    async def _announce(self, settled: Sequence[tuple[Envelope, Settlement]]) -> None:
        """Wake what waited for the prerequisites this batch delivered (``MessageContract.announces``): an
        enrollment sync parked for ``program:<code>`` goes again as soon as that program's sync arrived, an
        enrollment request parked for ``enrollment-request:<id>`` as soon as that earlier request's message
        was judged. After the acknowledgement: a crash before it only leaves the parked message to its slow
        backoff. An announcement that comes before the waiting message's park is settled (two batches in
        parallel) finds nothing parked yet; that park sees the announcement instead when it is settled
        (``Tracker.parked_for_past_announcements``) and is due at once."""
        conditions = set()
        for envelope, settlement in settled:
            contract = BY_TYPE.get(envelope.type)
            if contract is not None and settlement.state is MessageState.DELIVERED:
                condition = contract.announcement(envelope)
                if condition is not None:
                    conditions.add(condition)
        if conditions:
            try:
                await self.tracker.wake(conditions)
            except Exception:  # the batch is settled and acknowledged already: nothing of it is redone
                log.warning("waking parked messages failed; they go again at their park backoff", exc_info=True)

    async def _attempt_all(self, envelopes: list[Envelope], texts: Mapping[str, str]) -> list[AttemptResult]:
        """Route every envelope (a contract breach is dead at once), then deliver the rest in batches."""
        refused: dict[str, AttemptResult] = {}
        routable: list[Envelope] = []
        for envelope in envelopes:
            try:
                route(envelope)
                routable.append(envelope)
            except RouteError as error:
                refused[envelope.message_id] = AttemptResult(Outcome.DEAD, None, str(error), error.problem)
        async with self._delivery_slots:
            delivered = await self.deliverer.deliver_many(routable, texts) if routable else []
        outcomes = dict(zip((e.message_id for e in routable), delivered, strict=True)) | refused
        return [outcomes[e.message_id] for e in envelopes]

    def _settlement(self, result: AttemptResult, attempt: int) -> Settlement:
        """The state an attempt leads to: retries back off until they give up, parks back off slowly."""
        now = utcnow()

        def settled(state: MessageState, detail: str = result.detail, after: timedelta | None = None) -> Settlement:
            return Settlement(
                state=state,
                outcome=result.outcome.value,
                status_code=result.status_code,
                detail=detail[:2000],
                problem=result.problem,
                duration_ms=result.duration_ms,
                next_attempt_at=now + after if after is not None else None,
                wake_on=result.wake_on if state is MessageState.PARKED else None,
            )

        if result.outcome is Outcome.DELIVERED:
            return settled(MessageState.DELIVERED)
        if result.outcome is Outcome.PARK:
            park = self.settings.park
            # Half to full jitter: a parked message waits at least half its backoff, at most the cap.
            return settled(
                MessageState.PARKED,
                after=backoff_delay(attempt, park.base_seconds, park.cap_seconds, 0.5 + self._rng.random() / 2),
            )
        if result.outcome is Outcome.RETRY:
            retry = self.settings.retry
            if attempt >= retry.max_attempts:
                return settled(MessageState.DEAD, f"gave up after {attempt} attempts; last: {result.detail}")
            return settled(
                MessageState.RETRYING,
                after=backoff_delay(attempt, retry.base_seconds, retry.cap_seconds, self._rng.random()),
            )
        return settled(MessageState.DEAD)

    @staticmethod
    def _count(settled: Sequence[tuple[Envelope, Settlement]]) -> None:
        """Count a batch's settlements per flow and state, and observe each delivered message's latency.
        Counters are incremented once per flow and state (a labels lookup per message cost as much as the
        increment's purpose)."""
        counts: dict[tuple[str, MessageState], int] = defaultdict(int)
        latencies: dict[str, list[float]] = defaultdict(list)
        now = utcnow()
        for envelope, settlement in settled:
            flow = envelope.flow.value
            counts[(flow, settlement.state)] += 1
            if settlement.state is MessageState.DELIVERED:
                latencies[flow].append(max(0.0, (now - envelope.occurred_at).total_seconds()))
        for (flow, state), count in counts.items():
            if state is MessageState.DELIVERED:
                metrics.BRIDGE_DELIVERED.labels(flow).inc(count)
            elif state is MessageState.RETRYING:
                metrics.BRIDGE_RETRIED.labels(flow).inc(count)
            elif state is MessageState.PARKED:
                metrics.BRIDGE_PARKED.labels(flow).inc(count)
            else:
                metrics.BRIDGE_DEAD.labels(flow).inc(count)
        for flow, seconds in latencies.items():
            histogram = metrics.BRIDGE_LATENCY.labels(flow)
            for value in seconds:
                histogram.observe(value)

    # --- loops ---------------------------------------------------------------------------------------

    async def consume_once(self) -> int:
        """Take one batch from the queues and start processing it; returns the batch size. A few batches
        are in flight at once, so that one slow target does not stall the others."""
        if len(self._in_flight) >= MAX_BATCHES_IN_FLIGHT:
            await asyncio.wait(self._in_flight, return_when=asyncio.FIRST_COMPLETED)
            return 0
        deliveries = await self.transport.receive(
            list(self.queues), self.settings.batch_size, self.settings.poll_seconds
        )
        if deliveries:
            task = asyncio.create_task(self._guarded(deliveries))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)
        return len(deliveries)

    async def wait_in_flight(self) -> None:
        """Wait until every delivery taken so far is settled (tests and graceful shutdown)."""
        while self._in_flight:
            await asyncio.wait(set(self._in_flight))

    async def _guarded(self, deliveries: Sequence[Delivery]) -> None:
        try:
            await self.process(deliveries)
        except Exception:  # the copies stay unacknowledged: they come back, nothing is lost
            log.exception("processing a batch failed; it will be delivered again", messages=len(deliveries))
            with contextlib.suppress(Exception):
                await self.transport.release(deliveries)

    async def schedule_once(self) -> int:
        """Put due retrying/parked (and stale pending) messages back on their queues; returns how many.

        Claim, then publish (:meth:`Tracker.claim_due`): the claim marks them pending before any copy is on
        a queue, so a worker that delivers a copy at once settles it for good, and two schedulers never
        publish the same message twice. A crash after the claim and before the publication leaves them
        pending with nothing queued, until the stale-pending sweep (a pending message untouched for
        ``max(5 * lease, 300 s)``) publishes them again — late, never lost.
        """
        now = utcnow()
        stale = now - timedelta(seconds=max(self.settings.lease_seconds * 5, 300))
        claimed = await self.tracker.claim_due(now, self.settings.batch_size, stale)
        by_flow: dict[str, list[tuple[str, bytes]]] = defaultdict(list)
        for message_id, flow, envelope in claimed:
            by_flow[flow].append((message_id, envelope.encode()))
        for flow, messages in by_flow.items():
            await self.transport.publish(queue_name(self.settings.queue_prefix, flow), messages)
        return len(claimed)

    async def relay_once(self) -> int:
        """One batch from every system's outbox; returns how many were published."""
        published = 0
        for relay in self.relays:
            published += await relay.publish_once()
        return published

    async def measure_once(self) -> None:
        """Refresh the queue-depth gauges."""
        for queue, flow in self.queues.items():
            metrics.BRIDGE_QUEUE_DEPTH.labels(flow.value).set(await self.transport.depth(queue))

    async def run(self, stop: asyncio.Event) -> None:
        """Run every loop until ``stop`` is set, then let in-flight deliveries finish."""
        await self.transport.start(list(self.queues))
        loops = [
            asyncio.create_task(
                self._loop(stop, self.relay_once, self.settings.poll_seconds, self._outbox_written), name="relay"
            ),
            asyncio.create_task(self._loop(stop, self.consume_once, 0), name="consume"),
            asyncio.create_task(self._loop(stop, self.schedule_once, self.settings.poll_seconds * 5), name="schedule"),
            asyncio.create_task(self._loop(stop, self.measure_once, 15.0), name="measure"),
        ]
        await stop.wait()
        for task in loops:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        if self._in_flight:
            await asyncio.wait(self._in_flight, timeout=self.settings.http_timeout_seconds)

    @staticmethod
    async def _loop(
        stop: asyncio.Event, step: Callable[[], Awaitable[object]], idle: float, wake: asyncio.Event | None = None
    ) -> None:
        """Repeat ``step``; sleep ``idle`` when it found nothing to do (or until ``wake`` is set), back off
        when it failed."""
        failures = 0
        while not stop.is_set():
            if wake is not None:
                wake.clear()  # before the step: a signal during it makes the next wait return at once
            try:
                did = await step()
                failures = 0
            except (TransportError, OSError) as error:
                failures += 1
                log.warning("bridge loop failed; retrying", step=step.__name__, error=str(error), failures=failures)
                did = None
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                continue
            except Exception:
                failures += 1
                log.exception("bridge loop failed; retrying", step=step.__name__, failures=failures)
                await asyncio.sleep(min(30.0, 0.5 * 2**failures))
                continue
            if not did and idle > 0:
                await _idle(stop, idle, wake)


async def _idle(stop: asyncio.Event, seconds: float, wake: asyncio.Event | None) -> None:
    """Wait ``seconds``, or less when ``stop`` (or ``wake``) is set."""
    if wake is None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=seconds)
        return
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()
