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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import structlog
from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import Table, text

from derbridge import __version__
from derbridge.bridge.api import create_bridge_app
from derbridge.bridge.assembly import build_transport, build_worker
from derbridge.bridge.tracking import Tracker
from derbridge.bridge.worker import BridgeWorker, flow_queues
from derbridge.infra.collector import serving_pace
from derbridge.infra.jobs import JobRunner
from derbridge.infra.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE, install_problem_handlers
from derbridge.infra.web import BodySizeLimit, SecurityHeaders
from derbridge.migrations.runner import System
from derbridge.runtime import Runtime

if TYPE_CHECKING:
    from derbridge.assethub.system import AssetHub
    from derbridge.cis.loading import CisLoader
    from derbridge.derms.system import Derms
    from derbridge.edge.system import Edge

log = structlog.get_logger("derbridge.server")

Component = Literal["assethub", "derms", "bridge"]
ALL_COMPONENTS: tuple[Component, ...] = ("assethub", "derms", "bridge")


@dataclass(frozen=True)
class Systems:
    """The systems one process serves, each built by its composition root (None: not served here)."""

    assethub: AssetHub | None = None
    derms: Derms | None = None
    edge: Edge | None = None
    """The DERMS's gateway (OpenADR 3.1 VTN): built wherever the DERMS is, on the DERMS database."""


def build_systems(runtime: Runtime, components: Sequence[Component] = ALL_COMPONENTS) -> Systems:
    """Build the systems among ``components`` on ``runtime``'s engines and clock: the edge first, since
    the DERMS is wired to its ports and runs its jobs (see docs/edge.md)."""
    # Imported here: a process that serves only the bridge loads neither system.
    from derbridge.assethub import system as assethub_system
    from derbridge.derms import system as derms_system
    from derbridge.edge import client_routes as edge_client_routes
    from derbridge.edge import system as edge_system

    settings, clock = runtime.settings, runtime.clock
    assethub = derms = edge = None
    if "assethub" in components:
        assethub = assethub_system.build(
            settings,
            runtime.async_engine("assethub"),
            clock=clock,
            cis_loader=_cis_loader_factory(runtime, "assethub"),
        )
    if "derms" in components:
        edge = edge_system.build(settings, runtime.async_engine("derms"), clock=clock)
        derms = derms_system.build(
            settings,
            runtime.async_engine("derms"),
            clock=clock,
            cis_loader=_cis_loader_factory(runtime, "derms"),
            ports=edge.ports,
            gateway_jobs=edge.jobs,
            gateway_routers=[edge_client_routes.router],
        )
    return Systems(assethub=assethub, derms=derms, edge=edge)


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
    systems: Systems | None = None,
) -> FastAPI:
    """The HTTP surface of this process. With ``run_bridge`` the bridge worker runs in its lifespan and
    delivers to the systems mounted here in-process (and to ``bridge.targets`` for the others); with
    ``run_jobs`` the mounted systems' periodic jobs run too (each under a lease, one instance at a time).

    The systems are built here (:func:`build_systems`) unless the caller built them (the embedded system,
    which steps their jobs itself)."""
    settings = runtime.settings
    if systems is None:
        systems = build_systems(runtime, components)
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
    if systems.assethub is not None:
        root.mount("/assethub/v1", systems.assethub.app)
        mounted.append("assethub")
    if systems.derms is not None:
        root.mount("/derms/v1", systems.derms.app)
        mounted.append("derms")
    if systems.edge is not None:
        from derbridge.edge.api import PREFIX as EDGE_PREFIX

        root.mount(EDGE_PREFIX, systems.edge.app)
    # The jobs of the systems served here, each under a lease (one instance at a time across processes);
    # made now so that /readyz can ask them, started by the lifespan.
    runners: dict[str, JobRunner] = {}
    if run_jobs and systems.assethub is not None:
        runners["assethub"] = systems.assethub.job_runner()
    if run_jobs and systems.derms is not None:
        runners["derms"] = systems.derms.job_runner()
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
