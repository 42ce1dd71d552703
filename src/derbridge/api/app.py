"""The HTTP server of one process: each system's API mounted under its prefix, plus health and metrics.

Each system is its own FastAPI application with its own OpenAPI document (``/assethub/v1/openapi.json``,
``/derms/v1/openapi.json``), because each is a separate system of record that a utility may replace.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text

from derbridge import __version__
from derbridge.assethub.api import routes as assethub_routes
from derbridge.derms.api import routes as derms_routes
from derbridge.infra.problems import PROBLEM_BASE, PROBLEM_MEDIA_TYPE, install_problem_handlers
from derbridge.infra.web import BodySizeLimit, instrument
from derbridge.migrations.runner import SYSTEMS
from derbridge.runtime import Runtime


def _system_app(runtime: Runtime, system: str, title: str, description: str) -> FastAPI:
    app = FastAPI(title=title, version=__version__, description=description)
    app.state.engine = runtime.async_engine("assethub" if system == "assethub" else "derms")
    app.state.api_token = runtime.settings.resolved_api_token()
    app.state.derms_instance_id = runtime.settings.derms_instance_id
    install_problem_handlers(app)
    instrument(app, system)
    return app


def create_app(runtime: Runtime) -> FastAPI:
    """The whole HTTP surface of this process."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await runtime.aclose()

    root = FastAPI(title="derbridge", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None)
    install_problem_handlers(root)

    assethub = _system_app(
        runtime,
        "assethub",
        "derbridge Asset Hub API",
        "The customer-side system: customers from the CIS, programs, devices, enrollments, status checks, "
        "events and participation, scores. Every call carries the service credential as a bearer token.",
    )
    assethub_routes.mount(assethub)
    derms = _system_app(
        runtime,
        "derms",
        "derbridge DERMS API",
        "The grid-side system: customers and locations from the CIS, programs, devices with availability "
        "and communication status, events, reservations, outcomes, score snapshots.",
    )
    derms_routes.mount(derms)
    root.mount("/assethub/v1", assethub)
    root.mount("/derms/v1", derms)

    @root.get("/healthz", tags=["operations"])
    async def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @root.get("/readyz", tags=["operations"], response_model=None)
    async def readyz() -> JSONResponse:
        """Readiness: every system's database answers a query."""
        checks: dict[str, str] = {}
        for system in SYSTEMS:
            try:
                async with runtime.async_engine(system).connect() as connection:
                    await connection.execute(text("SELECT 1"))
                checks[system] = "ok"
            except Exception as error:  # any failure means not ready: report which system, and why
                checks[system] = f"unavailable: {type(error).__name__}"
        if all(v == "ok" for v in checks.values()):
            return JSONResponse({"status": "ready", "checks": checks})
        return JSONResponse(
            {
                "type": PROBLEM_BASE + "not-ready",
                "title": "Not ready",
                "status": 503,
                "detail": "A database does not answer; see checks.",
                "checks": checks,
            },
            status_code=503,
            media_type=PROBLEM_MEDIA_TYPE,
        )

    @root.get("/metrics", tags=["operations"], response_model=None)
    async def metrics() -> Response:
        """Prometheus metrics of this process."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return root


def create_asgi(runtime: Runtime) -> BodySizeLimit:
    """The application as served: ``create_app`` behind the request body limit."""
    return BodySizeLimit(create_app(runtime), runtime.settings.server.max_body_bytes)
