"""Asset Hub's composition root: the one place where Asset Hub is put together.

:func:`build` takes everything Asset Hub depends on — its settings, its database engine, the business clock,
how to open a CIS loader — and returns the running parts: the HTTP application (every router, in order),
the inbox with the handler of each message type Asset Hub accepts, and the periodic jobs. Nothing in Asset
Hub registers itself at import and no module global is written after it: a flow's handler receives what it
needs (the clock, the file store, the settings) from here, bound with :func:`functools.partial`.

Which code runs when a message arrives is read here, top to bottom: each flow's handlers and jobs are in
:mod:`derbridge.assethub.handlers` (docs/ARCHITECTURE.md has the table).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import partial

from fastapi import FastAPI
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge import __version__
from derbridge.assethub.adapters import tables as t
from derbridge.assethub.api import enrollment_routes, routes, score_routes, status_check_routes
from derbridge.assethub.handlers import (
    enrollment_requests,
    enrollment_sync,
    events,
    program_sync,
    score_transfer,
    status_checks,
)
from derbridge.cis import api as cis_api
from derbridge.cis.loading import CisLoader
from derbridge.contracts import (
    device_status_check,
    enrollment_request,
    event_cancellation,
    event_outcome,
    event_reservation,
)
from derbridge.contracts import enrollment_sync as enrollment_sync_contract
from derbridge.contracts import program_sync as program_sync_contract
from derbridge.contracts.device_score_transfer import ACK_TYPE as SCORE_TRANSFER_ACK
from derbridge.contracts.envelope import SystemName
from derbridge.filestore.factory import file_store_opener
from derbridge.infra.clock import Clock
from derbridge.infra.inbound import Inbox, inbound_router
from derbridge.infra.jobs import Job, JobRunner
from derbridge.infra.web import system_app
from derbridge.settings import Settings

TITLE = "derbridge Asset Hub API"
DESCRIPTION = (
    "The customer-side system: customers from the CIS, programs, devices, enrollments, status checks, "
    "events and participation, scores. Every call carries the service credential as a bearer token."
)


@dataclass(frozen=True)
class AssetHub:
    """Asset Hub as built: what a process serves and runs."""

    app: FastAPI
    """The HTTP API, mounted by the process under ``/assethub/v1``."""
    inbox: Inbox
    """The handler of each message type Asset Hub accepts (``POST /assethub/v1/messages``)."""
    jobs: tuple[Job, ...]
    """The periodic jobs (each under a lease: one instance runs it at a time)."""
    engine: AsyncEngine
    clock: Clock

    def job_runner(self) -> JobRunner:
        """A runner of :attr:`jobs` on Asset Hub's lease table (started by whoever runs the jobs)."""
        return JobRunner(self.engine, t.job_leases, self.jobs, system="assethub", clock=self.clock)


def build(settings: Settings, engine: AsyncEngine, *, clock: Clock, cis_loader: Callable[[], CisLoader]) -> AssetHub:
    """Asset Hub on ``engine``: its API, inbox and jobs, wired to ``settings``, ``clock`` and the CIS loader
    factory (one loader per ``POST /cis-imports``)."""
    files = file_store_opener(settings)
    inbox = Inbox(
        SystemName.ASSETHUB,
        t.inbox,
        handlers={
            # F1 · an aggregator's enrollment requests, forwarded by the DERMS: validated and answered.
            enrollment_request.TYPE: partial(enrollment_requests.handle_enrollment_request, clock=clock),
            # F2 · the DERMS's answer to a status check.
            device_status_check.RESPONSE_TYPE: partial(status_checks.handle_status_check_response, clock=clock),
            # F3 · the DERMS acknowledges an enrollment sync.
            enrollment_sync_contract.ACK_TYPE: partial(enrollment_sync.apply_enrollment_sync_ack, clock=clock),
            # F4 · the DERMS acknowledges a score file.
            SCORE_TRANSFER_ACK: score_transfer.record_acknowledgement,
            # F5, F6, F7 · an event's reservations, its cancellation, its outcomes.
            event_reservation.TYPE: partial(events.apply_reservation, clock=clock, files=files),
            event_cancellation.TYPE: partial(events.apply_cancellation, clock=clock),
            event_outcome.TYPE: partial(events.apply_outcomes, clock=clock),
            # F8 · the DERMS acknowledges a program's version.
            program_sync_contract.ACK_TYPE: program_sync.apply_program_sync_ack,
        },
        batch_handlers={
            enrollment_request.TYPE: partial(enrollment_requests.handle_enrollment_requests, clock=clock),
            device_status_check.RESPONSE_TYPE: partial(status_checks.handle_status_check_responses, clock=clock),
            enrollment_sync_contract.ACK_TYPE: partial(enrollment_sync.apply_enrollment_sync_acks, clock=clock),
        },
    )
    jobs = (
        # F2 · checks for newly accepted enrollments, then the checks that timed out.
        Job("enrollment-setup", timedelta(seconds=5), status_checks.enrollment_setup_job),
        Job("status-check-timeouts", timedelta(seconds=5), status_checks.status_check_timeouts_job),
        # F4 · the scheduled score transfer (``scores.schedule``).
        Job(
            score_transfer.JOB_NAME,
            score_transfer.JOB_EVERY,
            partial(score_transfer.scheduled_transfer, settings=settings),
        ),
    )
    app = system_app(
        system="assethub",
        title=TITLE,
        description=DESCRIPTION,
        version=__version__,
        routers=[
            routes.router,
            enrollment_routes.router,
            status_check_routes.router,
            score_routes.router,
            inbound_router(inbox),
            cis_api.router,
        ],
        state={
            "engine": engine,
            "clock": clock,
            "settings": settings,
            "api_token": settings.resolved_api_token(),
            "derms_instance_id": settings.derms_instance_id,
            "cis_loader": cis_loader,
        },
        access_log=settings.server.access_log,
    )
    return AssetHub(app=app, inbox=inbox, jobs=jobs, engine=engine, clock=clock)
