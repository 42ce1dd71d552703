"""F2 · device-status-check, the DERMS's end: answer from the latest communication status it stores.

Asset Hub asks with ``device-status-check.v1``; the DERMS answers at once, from ``communication_status``
(fed by the edge: any report, heartbeat or request from an aggregator about the device), with one
``device-status-check-response.v1`` in its outbox, written in the inbox transaction
(:mod:`derbridge.derms.handlers.status_checks`). What it answers is the rule
:func:`derbridge.derms.domain.status_check.status_answer`.

**Fresh readings (extension point).** flows.md lets the DERMS also ask the aggregator for a fresh reading
(an OpenADR event with an OPERATING_STATE report request) and answer a second time when it arrives; the
first answer never waits for it. That request belongs to the edge gateway: the DERMS's composition root
wires its requester to the port :attr:`~derbridge.derms.ports.DermsPorts.fresh_readings`, which the
handler (:func:`~derbridge.derms.handlers.status_checks.handle_status_check`) calls after the first answer,
inside the same transaction (so the edge can record its outgoing request atomically with the check). When
the reading arrives, the edge records it (:mod:`derbridge.derms.services.communication`) and calls
:func:`answer_status_check` again for the same ``check_id``: Asset Hub takes a newer second answer.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from derbridge.contracts import device_status_check as contract
from derbridge.contracts.envelope import Envelope
from derbridge.contracts.registry import new_envelope
from derbridge.derms.adapters import tables as t
from derbridge.derms.domain.status_check import status_answer
from derbridge.infra.outbox import write_outbox


async def answer_status_check(
    connection: AsyncConnection,
    check_id: str,
    head_end_system: str,
    nic_id: str,
    *,
    causation_id: str | None,
    now: datetime,
    source_instance: str = "default",
    target_instance: str = "default",
) -> contract.StatusCheckResponse:
    """Answer check ``check_id`` about ``head_end_system:nic_id`` from what is stored now, writing the
    ``device-status-check-response.v1`` to the DERMS outbox in the caller's transaction."""
    status = t.communication_status
    stored = (
        (
            await connection.execute(
                select(status).where(status.c.head_end_system == head_end_system, status.c.nic_id == nic_id)
            )
        )
        .mappings()
        .first()
    )
    device_known = stored is not None or (
        await connection.scalar(
            select(t.devices.c.device_id).where(
                t.devices.c.head_end_system == head_end_system, t.devices.c.nic_id == nic_id
            )
        )
        is not None
    )
    answer = status_answer(check_id, dict(stored) if stored is not None else None, device_known=device_known)
    await write_outbox(
        connection,
        t.outbox,
        [
            new_envelope(
                contract.RESPONSE_TYPE,
                answer,
                business_key=f"{head_end_system}:{nic_id}",
                correlation_id=check_id,
                causation_id=causation_id,
                occurred_at=now,
                source_instance=source_instance,
                target_instance=target_instance,
            )
        ],
    )
    return answer


async def answer_status_checks(
    connection: AsyncConnection, messages: Sequence[tuple[Envelope, contract.StatusCheckRequest]], now: datetime
) -> list[contract.StatusCheckResponse]:
    """:func:`answer_status_check` for a run of checks, set-based: one read of the stored statuses, one of
    the devices known without a status, one outbox write — the same answers, in the same order."""
    status, devices = t.communication_status, t.devices
    keys = sorted({(p.device.head_end_system, p.device.nic_id) for _, p in messages})
    stored: dict[tuple[str, str], dict[str, Any]] = {}
    known: set[tuple[str, str]] = set()
    # A run is at most one batch delivery (MAX_BATCH messages): its keys fit one IN list on both databases.
    rows = await connection.execute(select(status).where(tuple_(status.c.head_end_system, status.c.nic_id).in_(keys)))
    stored |= {(r["head_end_system"], r["nic_id"]): dict(r) for r in rows.mappings()}
    unstored = [k for k in keys if k not in stored]
    if unstored:
        rows = await connection.execute(
            select(devices.c.head_end_system, devices.c.nic_id).where(
                tuple_(devices.c.head_end_system, devices.c.nic_id).in_(unstored)
            )
        )
        known |= {(r.head_end_system, r.nic_id) for r in rows}
    envelopes: list[Envelope] = []
    answers: list[contract.StatusCheckResponse] = []
    for envelope, payload in messages:
        key = (payload.device.head_end_system, payload.device.nic_id)
        answer = status_answer(payload.check_id, stored.get(key), device_known=key in stored or key in known)
        envelopes.append(
            new_envelope(
                contract.RESPONSE_TYPE,
                answer,
                business_key=f"{key[0]}:{key[1]}",
                correlation_id=payload.check_id,
                causation_id=envelope.message_id,
                occurred_at=now,
                source_instance=envelope.target.instance,
                target_instance=envelope.source.instance,
            )
        )
        answers.append(answer)
    await write_outbox(connection, t.outbox, envelopes)
    return answers
