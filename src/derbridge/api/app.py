"""The HTTP server of one process: each system's API mounted under its prefix, the bridge's operations
API, health and metrics — and, in the embedded mode, the bridge worker itself.

Each system is its own FastAPI application with its own OpenAPI document (``/assethub/v1/openapi.json``,
``/derms/v1/openapi.json``, ``/bridge/v1/openapi.json``), because each is a separate system that a
utility may replace or run apart.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

import structlog
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Table, text

from derbridge import __version__
from derbridge.assethub.api import routes as assethub_routes
from derbridge.bridge.api import create_bridge_app
from derbridge.bridge.assembly import build_transport, build_worker
from derbridge.bridge.tracking import Tracker
from derbridge.bridge.worker import BridgeWorker, flow_queues
from derbridge.derms.api import routes as derms_routes
from derbridge.infra.collector import serving_pace
from derbridge.infra.docs_ui import install_api_docs
from derbridge.infra.jobs import JobRunner
from derbridge.infra.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE, install_problem_handlers
from derbridge.infra.text import install_text_guard
from derbridge.infra.web import BodySizeLimit, SecurityHeaders, instrument
from derbridge.migrations.runner import System
from derbridge.runtime import Runtime

if TYPE_CHECKING:
    from derbridge.cis.loading import CisLoader

log = structlog.get_logger("derbridge.server")

Component = Literal["assethub", "derms", "bridge"]
ALL_COMPONENTS: tuple[Component, ...] = ("assethub", "derms", "bridge")

_DESCRIPTIONS = {
    "assethub": (
        "derbridge Asset Hub API",
        "The customer-side system: customers from the CIS, programs, devices, enrollments, status checks, "
        "events and participation, scores. Every call carries the service credential as a bearer token.",
    ),
    "derms": (
        "derbridge DERMS API",
        "The grid-side system: customers and locations from the CIS, programs, devices with availability "
        "and communication status, events, reservations, outcomes, score snapshots.",
    ),
}


def configure_flows(runtime: Runtime, system: Literal["assethub", "derms"]) -> None:
    """Give the flows that need them (file store, thresholds, schedule) this process's settings: their
    message handlers and jobs receive only a connection or an engine."""
    if system == "assethub":
        from derbridge.assethub.services import events as assethub_events
        from derbridge.assethub.services import score_transfer

        score_transfer.use_settings(runtime.settings)
        assethub_events.use_settings(runtime.settings)
    else:
        from derbridge.derms.services import event_messages, score_snapshots

        event_messages.use_settings(runtime.settings)
        score_snapshots.use_settings(runtime.settings)


def _system_app(runtime: Runtime, system: Literal["assethub", "derms"]) -> FastAPI:
    configure_flows(runtime, system)
    title, description = _DESCRIPTIONS[system]
    app = FastAPI(title=title, version=__version__, description=description, docs_url=None, redoc_url=None)
    app.state.engine = runtime.async_engine(system)
    app.state.api_token = runtime.settings.resolved_api_token()
    app.state.derms_instance_id = runtime.settings.derms_instance_id
    app.state.cis_loader = _cis_loader_factory(runtime, system)
    install_problem_handlers(app)
    install_text_guard(app)
    instrument(app, system, access_log=runtime.settings.server.access_log)
    install_api_docs(app)
    (assethub_routes if system == "assethub" else derms_routes).mount(app)
    return app


def _cis_loader_factory(runtime: Runtime, system: Literal["assethub", "derms"]) -> Callable[[], CisLoader]:
    """A new CIS loader of ``system`` per import (``POST …/cis-imports``): the importer is the CLI's, on the
    system's synchronous engine, made when the first import comes."""

    def new_loader() -> CisLoader:
        if system == "assethub":
            from derbridge.assethub.adapters.cis_loader import AssetHubCisLoader

            return AssetHubCisLoader(runtime.sync_engine("assethub"))
        from derbridge.derms.adapters.cis_loader import DermsCisLoader

        return DermsCisLoader(runtime.sync_engine("derms"))

    return new_loader


def _job_runner(runtime: Runtime, system: Literal["assethub", "derms"]) -> JobRunner:
    if system == "assethub":
        from derbridge.assethub.adapters.tables import job_leases as assethub_leases
        from derbridge.assethub.jobs import jobs as assethub_jobs

        return JobRunner(runtime.async_engine("assethub"), assethub_leases, assethub_jobs, system="assethub")
    from derbridge.derms.adapters.tables import job_leases as derms_leases
    from derbridge.derms.jobs import jobs as derms_jobs

    return JobRunner(runtime.async_engine("derms"), derms_leases, derms_jobs, system="derms")


def relayed_outboxes() -> dict[str, Table]:
    """Each system's outbox table, which the bridge worker relays (the bridge imports neither system)."""
    from derbridge.assethub.adapters.tables import outbox as assethub_outbox
    from derbridge.derms.adapters.tables import outbox as derms_outbox

    return {"assethub": assethub_outbox, "derms": derms_outbox}


def _sentence(text: str) -> str:
    """``text`` as a sentence: its first letter upper case, a full stop at the end."""
    return text[:1].upper() + text[1:] + "."


def _watch(task: asyncio.Task[None], stop: asyncio.Event) -> None:
    """Say so loudly if a job loop or the bridge worker ends before the process stops (neither should: each
    survives failures)."""

    def ended(done: asyncio.Task[None]) -> None:
        if stop.is_set():
            return
        error = None if done.cancelled() else done.exception()
        log.error("loop ended before the process stops; /readyz reports it", task=done.get_name(), error=repr(error))

    task.add_done_callback(ended)


async def _jobs_readiness(runners: Mapping[str, JobRunner]) -> tuple[dict[str, str], list[dict[str, Any]]]:
    """Per system whose jobs this process runs: "ok", "late", "not running" (the loop is not alive) or
    "unavailable: …"; and the late jobs, each with when it last completed and the limit it passed."""
    checks: dict[str, str] = {}
    late: list[dict[str, Any]] = []
    for system, runner in runners.items():
        if not runner.alive:
            checks[system] = "not running"
            continue
        try:
            found = await runner.late_jobs()
        except Exception as error:  # the database check says more; here: the jobs cannot be vouched for
            checks[system] = f"unavailable: {type(error).__name__}"
            continue
        checks[system] = "late" if found else "ok"
        late += [
            {
                "system": system,
                "job": job.job,
                "last_completed_at": job.last_completed_at.isoformat() if job.last_completed_at else None,
                "late_after_seconds": job.late_after_seconds,
            }
            for job in found
        ]
    return checks, late


def create_app(
    runtime: Runtime,
    *,
    components: Sequence[Component] = ALL_COMPONENTS,
    run_bridge: bool = False,
    run_jobs: bool = False,
) -> FastAPI:
    """The HTTP surface of this process. With ``run_bridge`` the bridge worker runs in its lifespan and
    delivers to the systems mounted here in-process (and to ``bridge.targets`` for the others); with
    ``run_jobs`` the mounted systems' periodic jobs run too (each under a lease, one instance at a time)."""
    settings = runtime.settings
    transport = build_transport(runtime) if "bridge" in components else None

    # The bridge worker's task once the lifespan started it: /readyz reports whether it is still running.
    bridge_task: asyncio.Task[None] | None = None

    def worker_alive() -> bool:
        return bridge_task is not None and not bridge_task.done()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        stop = asyncio.Event()
        worker: BridgeWorker | None = None
        worker_task: asyncio.Task[None] | None = None
        nonlocal bridge_task
        if transport is not None:
            await transport.start(list(flow_queues(settings.bridge.queue_prefix)))
        if run_bridge and transport is not None:
            worker = build_worker(
                runtime, app, transport, [s for s in mounted if s != "bridge"], outboxes=relayed_outboxes()
            )
            worker_task = asyncio.create_task(worker.run(stop), name="bridge-worker")
            bridge_task = worker_task
            _watch(worker_task, stop)
        job_tasks = [asyncio.create_task(runner.run(stop), name=f"{system}-jobs") for system, runner in runners.items()]
        for task in job_tasks:
            _watch(task, stop)
        try:
            with serving_pace():
                yield
        finally:
            stop.set()
            await asyncio.gather(*job_tasks, return_exceptions=True)
            if worker is not None and worker_task is not None:
                with contextlib.suppress(asyncio.CancelledError):
                    await worker_task
                await worker.deliverer.close()
            if transport is not None:
                await transport.close()
            await runtime.aclose()

    root = FastAPI(title="derbridge", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    # Here too, not only in create_asgi: the embedded system (demo, flow tests) serves this app directly.
    # A header already set (by create_asgi's copy, or a docs page's own policy) is left as it is.
    root.add_middleware(SecurityHeaders)
    install_problem_handlers(root)
    mounted: list[System] = []
    for system in ("assethub", "derms"):
        if system in components:
            root.mount(f"/{system}/v1", _system_app(runtime, system))
            mounted.append(system)
    # The jobs of the systems served here, each under a lease (one instance at a time across processes);
    # made now so that /readyz can ask them, started by the lifespan.
    runners: dict[str, JobRunner] = {
        system: _job_runner(runtime, system) for system in mounted if run_jobs and system in ("assethub", "derms")
    }
    if "derms" in components:
        # The edge gateway (OpenADR 3.1 VTN) is the DERMS's gateway: it serves wherever the DERMS does, on
        # the DERMS database; its jobs run with the DERMS's (see docs/edge.md).
        from derbridge.edge.api import PREFIX as EDGE_PREFIX
        from derbridge.edge.api import create_edge_app

        root.mount(EDGE_PREFIX, create_edge_app(runtime))
    if transport is not None:
        root.mount(
            "/bridge/v1",
            create_bridge_app(
                Tracker(runtime.async_engine("bridge")),
                transport,
                settings.bridge.queue_prefix,
                settings.resolved_api_token(),
            ),
        )
        mounted.append("bridge")

    @root.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @root.get("/readyz", tags=["operations"], response_model=None)
    async def readyz() -> JSONResponse:
        """Readiness: the database of every component served here answers a query, and the periodic jobs of
        the systems served here are running and on time — each completed (in this process or another: the
        lease table tells) within 3 times its interval + 60 s, and this process's job loop is alive."""
        checks: dict[str, str] = {}
        # A bridge process also reads the outboxes it relays: their databases are its own readiness too
        # (a `serve bridge` whose Asset Hub database is down relays nothing, yet its own database answers).
        relayed = [s for s in settings.bridge.relay_systems if run_bridge and s not in mounted]
        for name, system in [(s, s) for s in mounted] + [(f"{s} outbox", s) for s in relayed]:
            try:
                async with runtime.async_engine(system).connect() as connection:
                    await connection.execute(text("SELECT 1"))
                checks[name] = "ok"
            except Exception as error:  # any failure means not ready: report which system, and why
                checks[name] = f"unavailable: {type(error).__name__}"
        if run_bridge:
            checks["bridge worker"] = "ok" if worker_alive() else "not running"
        jobs, late = await _jobs_readiness(runners)
        body: dict[str, Any] = {"checks": checks}
        if jobs:
            body["jobs"] = jobs
        if all(v == "ok" for v in checks.values()) and all(v == "ok" for v in jobs.values()):
            return JSONResponse({"status": "ready"} | body)
        reasons = []
        if any(v.startswith("unavailable") for v in checks.values()):
            reasons.append("a database does not answer; see checks")
        if checks.get("bridge worker") == "not running":
            reasons.append("the bridge worker is not running")
        if late:
            named = ", ".join(f"{job['system']} {job['job']}" for job in late)
            reasons.append(f"late jobs (not completed within 3 times their interval + 60 s): {named}")
        stopped = [system for system, state in jobs.items() if state == "not running"]
        if stopped:
            reasons.append(f"the job loop of {', '.join(stopped)} is not running")
        unavailable = [system for system, state in jobs.items() if state.startswith("unavailable")]
        if unavailable and not reasons:
            reasons.append(f"the jobs of {', '.join(unavailable)} cannot be checked; see jobs")
        return JSONResponse(
            {
                "type": PROBLEM_BASE + "not-ready",
                "title": "Not ready",
                "status": 503,
                "detail": _sentence("; ".join(reasons)),
                **body,
                "late_jobs": late,
            },
            status_code=503,
            media_type=PROBLEM_MEDIA_TYPE,
        )

    @root.get("/metrics", tags=["operations"], response_model=None)
    async def metrics() -> Response:
        """Prometheus metrics of this process."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return root


def create_asgi(
    runtime: Runtime,
    *,
    components: Sequence[Component] = ALL_COMPONENTS,
    run_bridge: bool = False,
    run_jobs: bool = False,
) -> SecurityHeaders:
    """The application as served: ``create_app`` behind the request body limit, every answer (the body
    limit's 413 too) with the security headers."""
    return SecurityHeaders(
        BodySizeLimit(
            create_app(runtime, components=components, run_bridge=run_bridge, run_jobs=run_jobs),
            runtime.settings.server.max_body_bytes,
        )
    )
