"""The edge gateway (OpenADR 3.1 VTN) built in one place: its application, its jobs and the DERMS hooks it
answers, each given what it needs.

The edge lives on the DERMS database and serves wherever the DERMS does (docs/edge.md). :func:`build` makes,
once, everything the edge shares — the webhook token vault (from ``edge.webhook_token_key`` or the data
dir's key file) and the business clock — and hands them explicitly to:

- the VTN application (:func:`derbridge.edge.api.create_edge_app`), to mount at
  :data:`derbridge.edge.api.PREFIX`;
- the edge's jobs, run by the DERMS's :class:`~derbridge.infra.jobs.JobRunner` with the DERMS's own:
  ``edge-mirror`` (every 5 s, :func:`derbridge.edge.mirror.mirror_job`) and ``edge-webhooks`` (every
  second, :func:`derbridge.edge.webhooks.webhook_job`);
- the DERMS's ports (:class:`derbridge.derms.ports.DermsPorts`), to build the DERMS with: F1 answers and F3
  state changes notify the resources' subscribers (:mod:`derbridge.edge.enrollment_status`), and an agent's
  status check asks the device's VEN for a fresh reading (:mod:`derbridge.edge.fresh_readings`).

Importing an edge module registers nothing and sets nothing: a process has an edge only once it calls
:func:`build`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from derbridge.contracts import device_status_check
from derbridge.contracts.envelope import Envelope
from derbridge.derms.ports import DermsPorts
from derbridge.edge import enrollment_status, fresh_readings, mirror, webhooks
from derbridge.edge.api import create_edge_app
from derbridge.edge.token_vault import TokenVault, webhook_token_keys
from derbridge.infra.clock import Clock
from derbridge.infra.jobs import Job
from derbridge.settings import Settings

MIRROR_EVERY = timedelta(seconds=5)
WEBHOOKS_EVERY = timedelta(seconds=1)


@dataclass(frozen=True)
class Edge:
    """One process's edge gateway, built by :func:`build`."""

    app: FastAPI
    """The VTN application, to mount at :data:`derbridge.edge.api.PREFIX`."""
    jobs: tuple[Job, ...]
    """``edge-mirror`` (every 5 s) and ``edge-webhooks`` (every second), run with the DERMS's jobs."""
    ports: DermsPorts
    """The hooks the DERMS calls in its inbox transactions: give them to the DERMS's ``build``."""


def build(settings: Settings, engine: AsyncEngine, *, clock: Clock) -> Edge:
    """The edge on the DERMS database ``engine``, on the business ``clock``. Reads (or makes, once, in the
    data dir) the webhook token keys and the access-token keys."""
    vault = TokenVault(webhook_token_keys(settings))
    edge_settings = settings.edge

    # Closures rather than functools.partial: mypy checks each against Job's function type and the ports'
    # Protocols (a partial's signature is not checked).

    async def mirror_job(engine: AsyncEngine, now: datetime) -> int:
        return await mirror.mirror_job(engine, now, vault=vault)

    async def webhook_job(engine: AsyncEngine, now: datetime) -> int:
        return await webhooks.webhook_job(engine, now, settings=edge_settings, vault=vault)

    async def requests_answered(
        connection: AsyncConnection, head_end_system: str, request_ids: Sequence[str], now: datetime
    ) -> None:
        await enrollment_status.notify_answered(connection, head_end_system, request_ids, now, vault=vault)

    async def enrollment_states_changed(
        connection: AsyncConnection, enrollment_ids: Sequence[str], now: datetime
    ) -> None:
        await enrollment_status.notify_state_changed(connection, enrollment_ids, now, vault=vault)

    async def request_fresh_readings(
        connection: AsyncConnection,
        checks: Sequence[tuple[Envelope, device_status_check.StatusCheckRequest]],
        now: datetime,
    ) -> None:
        await fresh_readings.request_fresh_readings(connection, checks, now, vault=vault)

    return Edge(
        app=create_edge_app(settings, engine, clock=clock, vault=vault),
        jobs=(Job("edge-mirror", MIRROR_EVERY, mirror_job), Job("edge-webhooks", WEBHOOKS_EVERY, webhook_job)),
        ports=DermsPorts(
            requests_answered=(requests_answered,),
            enrollment_states_changed=(enrollment_states_changed,),
            fresh_readings=(request_fresh_readings,),
        ),
    )
