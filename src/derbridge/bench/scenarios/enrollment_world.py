"""F1's given state and gateway, shared by F1 single and F1 bulk: a utility whose aggregators send
enrollment requests to the edge VTN, and how far the requests got."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx

from derbridge.assethub.adapters import tables as ah
from derbridge.bench.core import Stopwatch, progress
from derbridge.bench.scenarios.common import EDGE, NOW, count_rows, expect_ok
from derbridge.bench.world import accepted_devices, create_programs, generate, report_online
from derbridge.cis.importer import import_extract
from derbridge.derms.adapters import tables as dm
from derbridge.edge.auth import add_client
from derbridge.edge.domain import Role
from derbridge.embedded import EmbeddedSystem, SettleTimeout
from derbridge.runtime import Runtime
from derbridge.sim.aggregator import load_aggregators
from derbridge.sim.ven import enrollment_attributes
from derbridge.usecases.cis_import import loaders as cis_loaders


class EnrollmentGateway(Protocol):
    """Where aggregators send enrollment requests: the edge VTN (quality.md's F1 is "through the edge API")."""

    async def send_one(self, head_end_system: str, resource: dict[str, Any]) -> None:
        """One enrollment request (one resource)."""

    async def send_batch(self, head_end_system: str, resources: Sequence[dict[str, Any]]) -> None:
        """Many enrollment requests of one head-end."""


class EdgeGateway:
    """Enrollment requests as an aggregator's VEN sends them to the edge VTN: one client per head-end
    (``edge.auth.add_client``, as ``derbridge edge client add``), a token from ``POST /auth/token``, its VEN,
    then ``POST /resources`` (one resource = one device = one request) or ``POST /resources/batch``.

    Calls go through the in-process ASGI transport (``EmbeddedSystem.client``, the same app ``derbridge up``
    serves), not the synchronous ``openadr3`` client: that one needs a real port and a thread per call,
    which would measure the client rather than the VTN."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client
        self.tokens: dict[str, str] = {}
        self.vens: dict[str, str] = {}

    async def connect(self, runtime: Runtime, head_ends: Sequence[str]) -> None:
        """A VEN client, a token and a VEN for each head-end."""
        for head_end in head_ends:
            made = await asyncio.to_thread(
                add_client, runtime.sync_engine("derms"), f"{head_end} (bench)", head_end, Role.VEN
            )
            token = expect_ok(
                await self.client.post(
                    f"{EDGE}/auth/token",
                    data={
                        "grant_type": "client_credentials",
                        "client_id": made.client_id,
                        "client_secret": made.client_secret,
                    },
                ),
                "edge token",
            )["access_token"]
            self.tokens[head_end] = token
            ven = expect_ok(
                await self.client.post(
                    f"{EDGE}/vens",
                    json={"objectType": "VEN_VEN_REQUEST", "venName": f"{head_end}-bench"},
                    headers=self._auth(head_end),
                ),
                "edge ven",
                201,
            )
            self.vens[head_end] = str(ven["id"])

    def _auth(self, head_end: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[head_end]}"}

    def resources(self, head_end: str, request: dict[str, Any]) -> list[dict[str, Any]]:
        """The resources of one inventory request: one per device, named ``<request id>.<sequence>``, with
        the enrollment attributes the simulator's VEN sends (``sim.ven.enrollment_attributes``)."""
        return [
            {
                "objectType": "VEN_RESOURCE_REQUEST",
                "resourceName": f"{request['request_id']}.{device['sequence']}",
                "venID": self.vens[head_end],
                "attributes": enrollment_attributes(request, device),
            }
            for device in request["devices"]
        ]

    async def send_one(self, head_end_system: str, resource: dict[str, Any]) -> None:
        """``POST /resources``: one enrollment request."""
        expect_ok(
            await self.client.post(f"{EDGE}/resources", json=resource, headers=self._auth(head_end_system)),
            "edge resource",
            201,
        )

    async def send_batch(self, head_end_system: str, resources: Sequence[dict[str, Any]]) -> None:
        """``POST /resources/batch`` (≤ 5,000 resources, all or none)."""
        expect_ok(
            await self.client.post(
                f"{EDGE}/resources/batch", json={"resources": list(resources)}, headers=self._auth(head_end_system)
            ),
            "edge resource batch",
            201,
        )


@dataclass
class Enrollment:
    gateway: EdgeGateway
    resources: list[tuple[str, dict[str, Any]]]
    """``(head-end, resource)``: every device of every inventory request, one enrollment request each."""


async def enrollment_world(system: EmbeddedSystem, workdir: Path, requests: int) -> Enrollment:
    """A utility whose inventories hold about ``requests`` enrollment requests (one per device, as the edge
    takes them): its CIS imported into both systems, the program (mirrored on the VTN), every device
    reporting ONLINE (so that device setup can succeed at once), and each aggregator's VEN on the VTN."""
    customers = max(1, int(requests / 1.031 / DEVICES_PER_REQUEST))
    progress(f"F1: generating {customers:,} customers, importing the CIS, reporting devices online")
    utility = generate(customers, workdir / "utility")
    runtime = system.runtime
    loaders = cis_loaders(runtime)
    await asyncio.to_thread(import_extract, utility.cis_extract, loaders)
    await create_programs(system)
    await report_online(system.client, accepted_devices(workdir / "utility"), NOW)
    await system.run_jobs()  # the edge mirrors the program
    aggregators = load_aggregators(workdir / "utility" / "aggregators")
    gateway = EdgeGateway(system.client)
    await gateway.connect(runtime, [a.head_end_system for a in aggregators])
    resources = [
        (a.head_end_system, resource)
        for a in aggregators
        for request in a.requests
        for resource in gateway.resources(a.head_end_system, request)
    ]
    return Enrollment(gateway=gateway, resources=resources)


DEVICES_PER_REQUEST = 1.2
"""About how many devices an inventory request holds (the generator's mix): sizes count edge requests."""


@dataclass(frozen=True)
class Reached:
    active: int
    accepted: int
    unanswered: int

    @property
    def completed(self) -> bool:
        return self.unanswered == 0 and self.active >= self.accepted


async def _reached(system: EmbeddedSystem) -> Reached:
    r = dm.enrollment_requests
    return Reached(
        active=await count_rows(system, "assethub", ah.enrollments, ah.enrollments.c.state == "ACTIVE"),
        accepted=await count_rows(system, "derms", r, r.c.answer == "ACCEPTED"),
        unanswered=await count_rows(system, "derms", r, r.c.answer.is_(None)),
    )


async def until_active(system: EmbeddedSystem, deadline: float) -> Reached:
    """Run the bridge and the jobs until every request is answered and every accepted one is ACTIVE in
    Asset Hub, or until ``deadline`` (``time.monotonic()``) passes. A run cut off by the deadline reports
    what it reached (``completed: false``) so that the whole suite keeps to its time budget."""
    while True:
        with contextlib.suppress(SettleTimeout):
            await system.settle(jobs=True, timeout=max(1.0, deadline - time.monotonic()))
        reached = await _reached(system)
        if reached.completed or time.monotonic() > deadline:
            return reached


def f1_details(watch: Stopwatch, reached: Reached) -> dict[str, Any]:
    return {
        "phases": watch.laps,
        "cpu_seconds": round(watch.cpu_seconds, 2),
        "gateway": "edge VTN (/openadr3/3.1.0) over the in-process ASGI transport, VEN token from /auth/token",
        "active": reached.active,
        "accepted": reached.accepted,
        "unanswered": reached.unanswered,
        "completed": reached.completed,
    }
