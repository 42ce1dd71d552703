"""The DERMS's composition root: the one place where the DERMS is put together.

:func:`build` takes everything the DERMS depends on — its settings, its database engine, the business clock,
how to open a CIS loader, and its :class:`~derbridge.derms.ports.DermsPorts` (the hooks its gateway, the
edge, listens on) — and returns the running parts: the HTTP application, the inbox with the handler of each
message type the DERMS accepts (each in :mod:`derbridge.derms.handlers`, one module per flow), and the
periodic jobs. Nothing in the DERMS registers itself at import and no module global is written after it: a
flow's handler receives what it needs (the clock, the ports, the file store) from here, bound with
:func:`functools.partial`.

The DERMS does not import its edge: the process wires them (``derbridge.api.app``), giving this function the
edge's ports and its jobs (``gateway_jobs``, run under the DERMS's leases since they work on its database).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from fastapi import APIRouter, FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge import __version__
from derbridge.cis import api as cis_api
from derbridge.cis.loading import CisLoader
from derbridge.contracts import (
    device_score_transfer,
    device_status_check,
    enrollment_request,
    event_cancellation,
    event_outcome,
    event_reservation,
)
from derbridge.contracts import enrollment_sync as enrollment_sync_contract
from derbridge.contracts import program_sync as program_sync_contract
from derbridge.contracts.envelope import SystemName
from derbridge.derms.adapters import tables as t
from derbridge.derms.api import enrollment_routes, outcome_routes, routes
from derbridge.derms.handlers import (
    enrollment_requests,
    enrollment_sync,
    events,
    program_sync,
    score_snapshots,
    status_checks,
)
from derbridge.derms.ports import DermsPorts
from derbridge.derms.services.event_messages import ReservationFiles
from derbridge.filestore.factory import file_store_opener
from derbridge.infra.clock import Clock
from derbridge.infra.inbound import Inbox, inbound_router
from derbridge.infra.jobs import Job, JobRunner
from derbridge.infra.web import system_app
from derbridge.settings import Settings

TITLE = "derbridge DERMS API"
DESCRIPTION = (
    "The grid-side system: customers and locations from the CIS, programs, devices with availability "
    "and communication status, events, reservations, outcomes, score snapshots."
)


@dataclass(frozen=True)
class Derms:
    """The DERMS as built: what a process serves and runs."""

    app: FastAPI
    """The HTTP API, mounted by the process under ``/derms/v1``."""
    inbox: Inbox
    """The handler of each message type the DERMS accepts (``POST /derms/v1/messages``)."""
    jobs: tuple[Job, ...]
    """The periodic jobs, its gateway's included (each under a lease: one instance runs it at a time)."""
    engine: AsyncEngine
    clock: Clock
    reservation_files: ReservationFiles
    """Where reservation lists too long for a message go (F5)."""

    def job_runner(self) -> JobRunner:
        """A runner of :attr:`jobs` on the DERMS's lease table (started by whoever runs the jobs)."""
        return JobRunner(self.engine, t.job_leases, self.jobs, system="derms", clock=self.clock)


def build(
    settings: Settings,
    engine: AsyncEngine,
    *,
    clock: Clock,
    cis_loader: Callable[[], CisLoader],
    ports: DermsPorts,
    gateway_jobs: Sequence[Job] = (),
    gateway_routers: Sequence[APIRouter] = (),
) -> Derms:
    """The DERMS on ``engine``: its API, inbox and jobs, wired to ``settings``, ``clock``, the CIS loader
    factory (one loader per ``POST /cis-imports``) and its gateway's ``ports``, ``gateway_jobs`` and
    ``gateway_routers`` (the edge's client management under ``/derms/v1``)."""
    files = ReservationFiles.from_settings(settings)
    inbox = Inbox(
        SystemName.DERMS,
        t.inbox,
        handlers={
            # F1 · Asset Hub's answers to enrollment requests (the edge is told through the ports).
            enrollment_request.RESPONSE_TYPE: partial(
                enrollment_requests.handle_enrollment_response, clock=clock, ports=ports
            ),
            # F2 · a status check, answered at once from the stored communication status.
            device_status_check.TYPE: partial(status_checks.handle_status_check, clock=clock, ports=ports),
            # F3 · an enrollment's new state: device availability, released reservations (F5 updates).
            enrollment_sync_contract.TYPE: partial(
                enrollment_sync.apply_enrollment_sync, clock=clock, ports=ports, files=files
            ),
            # F4 · a score file to load (claim check through the file store).
            device_score_transfer.TYPE: partial(
                score_snapshots.load_score_snapshot, clock=clock, files=file_store_opener(settings)
            ),
            # F5, F6, F7 · Asset Hub acknowledges the event messages.
            event_reservation.ACK_TYPE: events.record_acknowledgement,
            event_cancellation.ACK_TYPE: events.record_acknowledgement,
            event_outcome.ACK_TYPE: events.record_acknowledgement,
            # F8 · a program's version from Asset Hub.
            program_sync_contract.TYPE: partial(program_sync.apply_program_sync, clock=clock),
        },
        batch_handlers={
            enrollment_request.RESPONSE_TYPE: partial(
                enrollment_requests.handle_enrollment_responses, clock=clock, ports=ports
            ),
            device_status_check.TYPE: partial(status_checks.handle_status_checks, clock=clock, ports=ports),
            enrollment_sync_contract.TYPE: partial(enrollment_sync.apply_enrollment_syncs, clock=clock, ports=ports),
        },
    )
    jobs = (
        # F5, F6, F7 · events start, end and close on time.
        Job("event-lifecycle", events.LIFECYCLE_EVERY, events.event_lifecycle_job),
        *gateway_jobs,
    )
    app = system_app(
        system="derms",
        title=TITLE,
        description=DESCRIPTION,
        version=__version__,
        routers=[
            routes.router,
            enrollment_routes.router,
            outcome_routes.router,
            inbound_router(inbox),
            cis_api.router,
            *gateway_routers,
        ],
        state={
            "engine": engine,
            "clock": clock,
            "settings": settings,
            "api_token": settings.resolved_api_token(),
            "derms_instance_id": settings.derms_instance_id,
            "cis_loader": cis_loader,
            "reservation_files": files,
        },
        access_log=settings.server.access_log,
    )
    return Derms(app=app, inbox=inbox, jobs=jobs, engine=engine, clock=clock, reservation_files=files)
