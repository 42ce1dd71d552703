"""The bridge: small messages from Asset Hub's outbox through relay, transport and worker to the DERMS."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select

from derbridge.assethub.adapters import tables as ah
from derbridge.bench.core import (
    Baseline,
    Result,
    Stopwatch,
    peak_rss_mb,
    process_peak_rss_mb,
    progress,
    reset_peak_rss,
    scaled,
)
from derbridge.bench.scenarios.common import (
    NOW,
    BenchFailure,
    close_worker,
    count_rows,
    embedded_system,
    make_result,
    scenario_stopwatch,
    up_worker,
)
from derbridge.bridge.tables import queue_messages, tracked_messages
from derbridge.contracts import device_status_check as check_contract
from derbridge.contracts.registry import new_envelope
from derbridge.derms.adapters import tables as dm
from derbridge.embedded import EmbeddedSystem
from derbridge.infra.ids import new_id
from derbridge.infra.outbox import outbox_rows
from derbridge.settings import Settings


def _status_check_messages(count: int) -> list[Any]:
    return [
        new_envelope(
            check_contract.TYPE,
            check_contract.StatusCheckRequest(
                check_id=(check_id := new_id()),
                reason=check_contract.CheckReason.AGENT_TROUBLESHOOT,
                requested_by="bench",
                device=check_contract.CheckedDevice(
                    head_end_system="ECOBEE",
                    nic_id=f"{100_000_000_000 + i}",
                    device_type="THERMOSTAT",
                    manufacturer="ecobee",
                    model="Premium",
                ),
            ),
            business_key=f"bench:{i}",
            correlation_id=check_id,
            occurred_at=NOW,
        )
        for i in range(count)
    ]


async def _raw_queue_table(system: EmbeddedSystem, bodies: list[tuple[str, bytes]]) -> Baseline:
    """Insert every body into the bridge's queue table, then claim and delete them 500 at a time."""
    engine = system.runtime.async_engine("bridge")
    queue = "bench.raw"
    with Stopwatch() as watch:
        for start in range(0, len(bodies), 500):
            async with engine.begin() as connection:
                await connection.execute(
                    insert(queue_messages),
                    [
                        {"queue": queue, "message_id": m, "body": b, "enqueued_at": NOW, "deliveries": 0}
                        for m, b in bodies[start : start + 500]
                    ],
                )
        taken = 0
        while taken < len(bodies):
            async with engine.begin() as connection:
                ids = (
                    await connection.scalars(
                        select(queue_messages.c.id)
                        .where(queue_messages.c.queue == queue)
                        .order_by(queue_messages.c.id)
                        .limit(500)
                    )
                ).all()
                await connection.execute(delete(queue_messages).where(queue_messages.c.id.in_(ids)))
            taken += len(ids)
    return Baseline(
        what="raw queue table: insert 500 rows per transaction, then select and delete 500 per transaction",
        seconds=watch.seconds,
        rate=len(bodies) / watch.seconds,
    )


async def _raw_rabbitmq(url: str, bodies: list[tuple[str, bytes]]) -> Baseline:
    """Publish every body (confirmed, persistent, to a quorum queue as the transport's) 500 at a time,
    then consume and acknowledge them all."""
    import aio_pika

    connection = await aio_pika.connect_robust(url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.set_qos(prefetch_count=500)
        queue = await channel.declare_queue("bench.raw", durable=True, arguments={"x-queue-type": "quorum"})
        with Stopwatch() as watch:
            for start in range(0, len(bodies), 500):
                await asyncio.gather(
                    *(
                        channel.default_exchange.publish(
                            aio_pika.Message(b, message_id=m, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                            routing_key=queue.name,
                        )
                        for m, b in bodies[start : start + 500]
                    )
                )
            received = 0
            async with queue.iterator() as messages:
                async for message in messages:
                    await message.ack()
                    received += 1
                    if received == len(bodies):
                        break
        await queue.delete(if_unused=False, if_empty=False)
    finally:
        await connection.close()
    return Baseline(
        what="raw aio-pika: publish with confirms 500 at a time to a quorum queue, then consume and ack",
        seconds=watch.seconds,
        rate=len(bodies) / watch.seconds,
    )


async def bridge_throughput(settings: Settings, workdir: Path, quick: bool) -> Result:
    """Small messages (F2 requests) from Asset Hub's outbox through relay, transport, worker and the
    DERMS's inbox (dedup, handler), with the worker running as under ``derbridge up``."""
    count = scaled(20_000, quick)
    settings = settings.model_copy(
        update={"bridge": settings.bridge.model_copy(update={"relay_systems": ["assethub"]})}
    )
    async with embedded_system(settings) as system:
        envelopes = _status_check_messages(count)
        bodies = [(e.message_id, e.model_dump_json().encode()) for e in envelopes]
        async with system.runtime.async_engine("assethub").begin() as connection:
            for start in range(0, count, 5_000):
                await connection.execute(insert(ah.outbox), outbox_rows(envelopes[start : start + 5_000]))
        del envelopes
        progress(f"bridge: {count:,} messages on {settings.bridge.transport}")
        stop = asyncio.Event()
        reset_peak_rss()
        with scenario_stopwatch(settings, "bridge-throughput") as watch:
            worker = up_worker(system)
            running = asyncio.create_task(worker.run(stop))
            # Looking every 0.1 s: the count is a query on the bridge database, competing with the flow.
            while await count_rows(system, "bridge", tracked_messages, tracked_messages.c.state == "delivered") < count:
                await asyncio.sleep(0.1)
                if running.done():
                    running.result()
                    raise BenchFailure("the bridge worker stopped")
        peak = peak_rss_mb()
        stop.set()
        await running
        await close_worker(worker)
        answered = await count_rows(system, "derms", dm.outbox)
        if answered != count:
            raise BenchFailure(f"the DERMS answered {answered:,} of {count:,} status checks")
        if settings.bridge.transport == "amqp":
            baseline = await _raw_rabbitmq(settings.bridge.amqp_url.get_secret_value(), bodies)
        else:
            baseline = await _raw_queue_table(system, bodies)
    postgres = settings.database_url("bridge").startswith("postgresql")
    return make_result(
        settings,
        "bridge-throughput",
        sizes={"messages": count},
        seconds=watch.seconds,
        rate=count / watch.seconds,
        unit="messages",
        target=(
            "≥ 50 % of raw RabbitMQ (ratio ≥ 0.5)"
            if settings.bridge.transport == "amqp"
            else ("≥ 5,000 msg/s" if postgres else "none on SQLite (quality.md sets sql/PostgreSQL and amqp)")
        ),
        baseline=baseline,
        peak_rss_mb=peak,
        process_peak_rss_mb=process_peak_rss_mb(),
        quick=quick,
        details={
            "message_bytes": sum(len(b) for _, b in bodies) // max(1, count),
            "cpu_seconds": round(watch.cpu_seconds, 2),
            "messages_per_cpu_second": round(count / max(watch.cpu_seconds, 1e-9)),
        },
    )
