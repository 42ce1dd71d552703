"""What every HTTP API of ours shares: the service credential, the body-size limit, security headers,
request metrics and keyset pages."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Generic, TypeVar

import structlog
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AfterValidator, AwareDatetime, BaseModel, Field
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from derbridge.infra.clock import Clock
from derbridge.infra.docs_ui import install_api_docs
from derbridge.infra.metrics import HTTP_REQUEST_SECONDS
from derbridge.infra.problems import ProblemError, install_problem_handlers, problem_response
from derbridge.infra.text import install_text_guard

T = TypeVar("T")

NO_NUL = r"^[^\x00]*$"
"""Pattern of every free-text id, filter and cursor: PostgreSQL text cannot hold NUL, so a value with one
can match nothing and is refused as invalid input (422 naming the field) instead of failing in the
database."""

MAX_BIGINT = 2**63 - 1
"""The largest integer id a table holds (BIGINT): a larger one is invalid input, not a database error."""

IdPath = Annotated[str, Path(max_length=64, pattern=NO_NUL)]
"""A string identifier in a path."""

IntIdPath = Annotated[int, Path(ge=1, le=MAX_BIGINT)]
"""An integer identifier (``device_id``) in a path."""

IntIdQuery = Annotated[int | None, Query(ge=1, le=MAX_BIGINT)]
"""An optional integer identifier filter."""

FilterQuery = Annotated[str | None, Query(max_length=64, pattern=NO_NUL)]
"""An optional equality filter on an identifier."""


def _in_utc(value: datetime) -> datetime:
    try:
        return value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:00:00-05:00 is in the year 10000 in UTC
        raise ValueError("has no UTC equivalent (the year must stay within 1..9999 in UTC)") from None


UtcDateTime = Annotated[AwareDatetime, AfterValidator(_in_utc)]
"""A timezone-aware instant in a request body, converted to UTC as the databases store it; one with no UTC
equivalent is invalid input (422 naming the field) rather than a failure when it is stored."""

_bearer = HTTPBearer(auto_error=False, description="The service credential (see `derbridge config show`).")


async def require_service_token(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> None:
    """Refuse a call that does not carry the service credential (401, with a problem detail)."""
    expected: str = request.app.state.api_token
    if credentials is None or not secrets.compare_digest(credentials.credentials.encode(), expected.encode()):
        raise ProblemError(
            401,
            "unauthorized",
            "Service credential required",
            "Send 'Authorization: Bearer <token>' with the service credential: DERBRIDGE_API_TOKEN, or "
            "the api-token file in the data directory.",
            headers={"WWW-Authenticate": "Bearer"},
        )
    note_client(request, SERVICE_CLIENT)


SERVICE_CLIENT = "service"
"""The access log's client id of a call made with the service credential."""


def note_client(request: Request, client_id: str) -> None:
    """Record who is calling, once authenticated, for the access log (``scope["state"]``, which the
    middleware of :func:`instrument` reads when the response is sent)."""
    request.state.client_id = client_id


class Page(BaseModel, Generic[T]):
    """One page of a listing in a stable order. Pass ``next_after`` as ``after`` for the next page."""

    items: list[T]
    next_after: str | None = Field(description="The cursor of the next page; null on the last page.")


class PageParams(BaseModel):
    """Keyset paging: ``after`` is the last key of the previous page (exclusive)."""

    limit: int
    after: str | None


async def page_params(
    limit: Annotated[int, Query(ge=1, le=1000, description="Items per page.")] = 100,
    after: Annotated[str | None, Query(max_length=200, pattern=NO_NUL, description="Cursor from `next_after`.")] = None,
) -> PageParams:
    """The paging query parameters of a listing."""
    return PageParams(limit=limit, after=after)


class BodySizeLimit:
    """Refuse bodies over ``max_bytes`` with 413 before the application reads them.

    The declared Content-Length is checked first; a chunked body is counted as it streams.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        seen = 0
        exceeded = False
        started = False

        async def counting_receive() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    exceeded = True
                    raise HTTPException(
                        413, f"The body is over {self.max_bytes} bytes. Send a smaller body, or split the batch."
                    )
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if exceeded and not started:
                # The application's answer to a body it could not finish reading: what it makes of the
                # exception depends on the framework (FastAPI answers 400 "error parsing the body", and
                # BaseHTTPMiddleware wraps the exception in an ExceptionGroup). The 413 below replaces it.
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except Exception:
            if not exceeded or started:
                raise
        if exceeded and not started:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        from starlette.requests import Request as StarletteRequest

        response = problem_response(
            StarletteRequest(scope, receive),
            413,
            "payload-too-large",
            "Request body too large",
            f"The body is over {self.max_bytes} bytes. Send a smaller body, or split the batch.",
        )
        await response(scope, receive, send)


SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    # An API answer is data, never a page: it may load nothing and be framed by nobody. The docs pages set
    # their own policy (infra/docs_ui.py), which this one does not replace.
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)
HSTS = (b"strict-transport-security", b"max-age=31536000")
"""Sent only over HTTPS: served with TLS, or behind a trusted proxy that said ``X-Forwarded-Proto: https``
(uvicorn then makes the request's scheme https). Over plain HTTP the header means nothing to a browser."""


class SecurityHeaders:
    """Pure ASGI middleware adding the standard security headers to every response that does not set its
    own: ``X-Content-Type-Options: nosniff``, ``X-Frame-Options: DENY``, ``Referrer-Policy: no-referrer``,
    a Content-Security-Policy that loads nothing and forbids framing, and ``Strict-Transport-Security``
    when the request came over HTTPS."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        extra = SECURITY_HEADERS + ((HSTS,) if scope.get("scheme") == "https" else ())

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend((name, value) for name, value in extra if name not in present)
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)


_access = structlog.get_logger("derbridge.access")


class _RequestTimer:
    """Pure ASGI middleware timing each request. Not ``@app.middleware("http")``: Starlette's
    BaseHTTPMiddleware runs every request through an extra task and memory stream, which costs more than
    many of our handlers (the bridge delivers thousands of messages a second through these apps)."""

    def __init__(self, app: ASGIApp, system: str, access_log: bool = True) -> None:
        self.app = app
        self.system = system
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def remember_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, remember_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", "unmatched")
            elapsed = time.perf_counter() - started
            method = scope.get("method", "")
            HTTP_REQUEST_SECONDS.labels(self.system, method, template, str(status or 500)).observe(elapsed)
            if self.access_log:
                # The route template, never the path or query: their values may be personal data.
                _access.info(
                    "http request",
                    system=self.system,
                    method=method,
                    route=scope.get("root_path", "") + template if route is not None else "unmatched",
                    status=status or 500,
                    duration_ms=round(elapsed * 1000, 1),
                    client_id=(scope.get("state") or {}).get("client_id"),
                )


def instrument(app: FastAPI, system: str, access_log: bool = True) -> None:
    """Time every request of ``app`` by route template and status (no ids in labels: bounded series), and,
    with ``access_log``, log one ``http request`` line for it (method, route template, status, duration,
    the client id once authenticated: see :func:`note_client`)."""
    app.add_middleware(_RequestTimer, system=system, access_log=access_log)


async def system_engine(request: Request) -> AsyncEngine:
    """The database engine of the system whose application serves the request (``app.state.engine``).
    ``async`` (like every dependency here): FastAPI runs a plain function in its thread pool, a thread hop
    per request."""
    engine: AsyncEngine = request.app.state.engine
    return engine


SystemEngine = Annotated[AsyncEngine, Depends(system_engine)]
"""A route parameter: the serving system's database engine."""


async def business_now(request: Request) -> datetime:
    """The business time of the request: the clock the serving system was built with (``app.state.clock``;
    the wall clock in production, a simulated one in the demo and the flow tests)."""
    clock: Clock = request.app.state.clock
    return clock.now()


BusinessNow = Annotated[datetime, Depends(business_now)]
"""A route parameter: the serving system's business time now."""

Paging = Annotated[PageParams, Depends(page_params)]
"""A route parameter: the keyset paging of a listing (``limit``, ``after``)."""


def system_app(
    *,
    system: str,
    title: str,
    description: str,
    version: str,
    routers: Sequence[APIRouter],
    state: Mapping[str, object],
    access_log: bool,
) -> FastAPI:
    """One system's FastAPI application (its own OpenAPI document): the routers in order, the problem
    handlers, the text guard, metrics and access log, the API docs pages, and ``state`` (the engine, the
    clock, the credential … that the routes' dependencies read) set once here, by the system's
    composition root."""
    app = FastAPI(title=title, version=version, description=description, docs_url=None, redoc_url=None)
    for name, value in state.items():
        setattr(app.state, name, value)
    install_problem_handlers(app)
    install_text_guard(app)
    instrument(app, system, access_log=access_log)
    install_api_docs(app)
    for router in routers:
        app.include_router(router)
    return app
