"""Builds a bridge worker from settings: transport, tracking, delivery clients and relays.

The bridge imports neither system: the outbox tables it relays are passed in by the caller that wires the
systems (``outboxes``: system name -> that system's outbox table)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping, Sequence

import httpx
from sqlalchemy import Table
from starlette.types import ASGIApp

from derbridge.bridge.delivery import Deliverer
from derbridge.bridge.relay import Relay
from derbridge.bridge.tracking import Tracker
from derbridge.bridge.transport.base import Transport
from derbridge.bridge.transport.sql import SqlTransport
from derbridge.bridge.worker import MAX_BATCHES_IN_FLIGHT, BridgeWorker
from derbridge.runtime import Runtime
from derbridge.settings import BridgeSettings

TARGET_SYSTEMS = ("assethub", "derms")


def build_transport(runtime: Runtime) -> Transport:
    """The transport the settings name."""
    settings = runtime.settings.bridge
    if settings.transport == "amqp":
        from derbridge.bridge.transport.amqp import AmqpTransport

        # The window must cover every batch the worker holds (unacknowledged until settled) plus a full one
        # waiting: with a window of 200 and four batches of 100 in flight, each acknowledgement let only a
        # few messages through, and the worker went on with batches of about eight (its cost is per batch).
        prefetch = max(200, settings.batch_size * (MAX_BATCHES_IN_FLIGHT + 1))
        return AmqpTransport(settings.amqp_url.get_secret_value(), prefetch=prefetch)
    return SqlTransport(
        runtime.async_engine("bridge"), lease_seconds=settings.lease_seconds, poll_seconds=settings.poll_seconds
    )


def target_client(settings: BridgeSettings, url: str, timeout: httpx.Timeout) -> httpx.AsyncClient:
    """The HTTP client to one target system's URL: trusting ``tls_ca_file`` when set (else the system's
    CAs), and presenting ``tls_client_cert`` when set (a target served with mutual TLS asks for it)."""
    verify: ssl.SSLContext | bool = True
    if settings.tls_ca_file is not None or settings.tls_client_cert is not None:
        verify = ssl.create_default_context(cafile=str(settings.tls_ca_file) if settings.tls_ca_file else None)
        if settings.tls_client_cert is not None:
            key = str(settings.tls_client_key) if settings.tls_client_key is not None else None
            verify.load_cert_chain(str(settings.tls_client_cert), key)
    return httpx.AsyncClient(base_url=url, timeout=timeout, verify=verify)


def build_deliverer(
    runtime: Runtime, in_process: ASGIApp | None, in_process_systems: Sequence[str] = TARGET_SYSTEMS
) -> Deliverer:
    """One HTTP client per target system: to its URL when configured, else in-process to ``in_process``
    when that application serves the system (``in_process_systems``)."""
    settings = runtime.settings.bridge
    timeout = httpx.Timeout(settings.http_timeout_seconds)
    clients: dict[str, httpx.AsyncClient] = {}
    for system in TARGET_SYSTEMS:
        url = settings.targets.get(system)
        if url:
            clients[system] = target_client(settings, url, timeout)
        elif in_process is not None and system in in_process_systems:
            clients[system] = httpx.AsyncClient(
                transport=httpx.ASGITransport(app=in_process, raise_app_exceptions=False),
                base_url="http://in-process",
                timeout=timeout,
            )
    return Deliverer(clients, runtime.settings.resolved_api_token())


def build_worker(
    runtime: Runtime,
    in_process: ASGIApp | None,
    transport: Transport | None = None,
    in_process_systems: Sequence[str] = TARGET_SYSTEMS,
    bridge_settings: BridgeSettings | None = None,
    *,
    outboxes: Mapping[str, Table],
) -> BridgeWorker:
    """A worker that relays the outboxes of the settings' ``relay_systems`` (their tables in ``outboxes``,
    system name -> outbox table) and delivers to the configured targets."""
    settings = bridge_settings or runtime.settings.bridge
    transport = transport or build_transport(runtime)
    relays = [
        Relay(
            system,
            runtime.async_engine(system),
            outboxes[system],
            transport,
            prefix=settings.queue_prefix,
            batch=settings.relay_batch_size,
        )
        for system in settings.relay_systems
    ]
    return BridgeWorker(
        transport,
        Tracker(runtime.async_engine("bridge")),
        build_deliverer(runtime, in_process, in_process_systems),
        relays,
        settings,
    )
