"""The VTN's HTTP API: OpenADR 3.1.0 (``openadr3.yaml``) mounted at ``/openadr3/3.1.0``, plus one
extension, ``POST /resources/batch`` (bulk onboarding).

Routers only translate HTTP: the bearer token to a :class:`~derbridge.edge.auth.Principal` and its scope
check, the body to a request model, and the call to :class:`~derbridge.edge.vtn.Vtn`. Every error is a
``problem`` object as the spec defines it (``application/json``; ``instance`` the request's path):
401 without a valid token, 403 without the operation's scope, 400 for a body or query the spec's schemas
refuse (the spec's code for a missing required property), 404 for an object the caller may not see.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from datetime import datetime
from http import HTTPStatus
from typing import Annotated, Any
from urllib.parse import unquote_plus

from fastapi import APIRouter, Depends, FastAPI, Form, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.exceptions import HTTPException as StarletteHTTPException

from derbridge import __version__
from derbridge.edge import auth, webhooks
from derbridge.edge.auth import CredentialsRefused, Principal, TokenRefused
from derbridge.edge.domain import Scope, ScopeRefused, satisfies
from derbridge.edge.schemas import (
    AuthServerInfo,
    ClientCredentialResponse,
    Event,
    EventRequest,
    NotifiersResponse,
    ObjectID,
    ObjectType,
    Program,
    ProgramRequest,
    Report,
    ReportRequest,
    Resource,
    ResourceBatchIn,
    ResourceBatchOut,
    ResourceRequest,
    Subscription,
    SubscriptionRequest,
    Target,
    Ven,
    VenRequest,
)
from derbridge.edge.store import Query as ListQuery
from derbridge.edge.store import get_object, list_objects
from derbridge.edge.throttle import AuthThrottle, TooManyAttempts
from derbridge.edge.token_vault import TokenVault
from derbridge.edge.vtn import Vtn
from derbridge.errors import DomainError
from derbridge.infra.clock import Clock
from derbridge.infra.db import utcnow
from derbridge.infra.docs_ui import install_api_docs
from derbridge.infra.problems import PROBLEM_BASE, ProblemError, as_problem, problem_instance
from derbridge.infra.text import install_text_guard
from derbridge.infra.web import instrument, note_client
from derbridge.settings import Settings

PREFIX = "/openadr3/3.1.0"
MAX_LIMIT = 50


class Problem(BaseModel):
    """The spec's ``problem``."""

    type: str = "about:blank"
    title: str | None = None
    status: int | None = None
    detail: str | None = None
    instance: str | None = None


PROBLEMS: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "description": HTTPStatus(code).phrase} for code in (400, 401, 403, 404, 409, 500)
}


def _problem(
    request: Request,
    status: int,
    kind: str,
    title: str,
    detail: str | None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": PROBLEM_BASE + kind,
        "title": title,
        "status": status,
        "detail": detail,
        "instance": problem_instance(request),
        **{k: v for k, v in extra.items() if v is not None},
    }
    answer_headers = {"WWW-Authenticate": 'Bearer realm="openadr3"'} if status == 401 else {}
    answer_headers.update(headers or {})
    return JSONResponse({k: v for k, v in body.items() if v is not None}, status_code=status, headers=answer_headers)


def install_problems(app: FastAPI) -> None:
    """Every error of the VTN as the spec's ``problem`` (validation: 400)."""

    async def on_validation(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = [
            {"field": ".".join(str(p) for p in e.get("loc", ())), "message": str(e.get("msg", "is invalid"))}
            for e in exc.errors()[:50]
        ]
        fields = ", ".join(e["field"] for e in errors[:5])
        return _problem(request, 400, "bad-request", "Bad Request", f"Correct these fields: {fields}.", errors=errors)

    async def on_problem(request: Request, exc: Exception) -> JSONResponse:
        if isinstance(exc, DomainError):
            exc = as_problem(exc)  # the status from the one table; the spec's 400 for an invalid request
        assert isinstance(exc, ProblemError)
        status = 400 if exc.status == 422 else exc.status
        errors = [e.model_dump() for e in exc.errors] if exc.errors else None
        return _problem(request, status, exc.kind, exc.title, exc.detail, exc.headers, errors=errors)

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        phrase = HTTPStatus(exc.status_code).phrase if exc.status_code in HTTPStatus._value2member_map_ else "Error"
        return _problem(request, exc.status_code, "http-error", phrase, str(exc.detail))

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        webhooks.log.exception("unhandled error", path=request.url.path, error_type=type(exc).__name__)
        return _problem(request, 500, "internal-error", "Internal Server Error", "The VTN failed; it has been logged.")

    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(DomainError, on_problem)
    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(Exception, on_unexpected)


def _refuse(status: int, title: str, detail: str) -> ProblemError:
    return ProblemError(status, title.lower().replace(" ", "-"), title, detail)


def remote_address(request: Request) -> str:
    """The caller's address: the peer, or what a trusted proxy said it was (``server.forwarded_allow_ips``:
    uvicorn then puts ``X-Forwarded-For``'s client here)."""
    return request.client.host if request.client is not None else "unknown"


def _too_many(refused: TooManyAttempts) -> ProblemError:
    return ProblemError(
        429,
        "too-many-requests",
        "Too Many Requests",
        f"{refused.what} Retry after {refused.retry_after} s.",
        headers={"Retry-After": str(refused.retry_after)},
    )


def requires(scope: Scope) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller's principal, once its token is valid (401) and holds ``scope`` (403). An
    address over its refused-credentials limit gets 429 before its token is looked at."""

    async def principal(request: Request) -> Principal:
        state = request.app.state
        address = remote_address(request)
        try:
            state.throttle.check_address(address)
        except TooManyAttempts as refused:
            raise _too_many(refused) from None
        header = request.headers.get("authorization", "")
        kind, _, token = header.partition(" ")
        if kind.lower() != "bearer" or not token.strip():
            raise _refuse(
                401, "Unauthorized", "Send an access token: Authorization: Bearer <token> (see /auth/server)."
            )
        try:
            caller = await auth.verify_token(state.engine, state.token_keys, token.strip())
        except TokenRefused:
            state.throttle.failed(address)
            raise _refuse(401, "Unauthorized", "The access token is not valid (expired, forged or revoked).") from None
        note_client(request, caller.client_id)  # the access log's "who"
        if not satisfies(caller.scopes, scope):
            raise _refuse(403, "Forbidden", f"This operation needs the scope {scope.value}.")
        return caller

    return principal


async def vtn_of(request: Request) -> Vtn:
    """The VTN service of this application (``async``: FastAPI would run a plain function in its thread pool,
    a thread hop per request for a lookup)."""
    vtn: Vtn = request.app.state.vtn
    return vtn


VtnDep = Annotated[Vtn, Depends(vtn_of)]
Skip = Annotated[int, Query(ge=0, le=2**31 - 1, description="number of records to skip for pagination.")]
Limit = Annotated[int, Query(ge=0, le=MAX_LIMIT, description="maximum number of records to return.")]
Targets = Annotated[list[Target] | None, Query(description="Indicates targets")]
IdQuery = Annotated[ObjectID | None, Query()]


def _page(vtn: Vtn, equals: dict[str, str | None], targets: list[str] | None, skip: int, limit: int) -> ListQuery:
    return ListQuery(equals=equals, targets=targets, skip=skip, limit=limit, max_bytes=vtn.limits.page_max_bytes)


ReadTargets = Annotated[Principal, Depends(requires(Scope.READ_TARGETS))]
ReadVenObjects = Annotated[Principal, Depends(requires(Scope.READ_VEN_OBJECTS))]
WritePrograms = Annotated[Principal, Depends(requires(Scope.WRITE_PROGRAMS))]
WriteEvents = Annotated[Principal, Depends(requires(Scope.WRITE_EVENTS))]
WriteReports = Annotated[Principal, Depends(requires(Scope.WRITE_REPORTS))]
WriteSubscriptions = Annotated[Principal, Depends(requires(Scope.WRITE_SUBSCRIPTIONS))]
WriteVens = Annotated[Principal, Depends(requires(Scope.WRITE_VENS))]

router = APIRouter(responses=PROBLEMS)


# --- programs ----------------------------------------------------------------------------------------


@router.get(
    "/programs",
    tags=["programs"],
    operation_id="searchAllPrograms",
    response_model=list[Program],
    response_model_exclude_none=True,
)
async def search_all_programs(
    vtn: VtnDep, who: ReadTargets, targets: Targets = None, skip: Skip = 0, limit: Limit = MAX_LIMIT
) -> Any:
    """List the programs visible to the caller (by targets for a VEN)."""
    return await vtn.render(
        await list_objects(vtn.engine, who, ObjectType.PROGRAM, _page(vtn, {}, targets, skip, limit))
    )


@router.post(
    "/programs",
    status_code=201,
    tags=["programs"],
    operation_id="createProgram",
    response_model=Program,
    response_model_exclude_none=True,
)
async def create_program(vtn: VtnDep, who: WritePrograms, body: ProgramRequest) -> Any:
    """Create a program (programName unique in the VTN: 409 otherwise)."""
    return (await vtn.render([await vtn.create_program(body)]))[0]


@router.get(
    "/programs/{programID}",
    tags=["programs"],
    operation_id="searchProgramByProgramId",
    response_model=Program,
    response_model_exclude_none=True,
)
async def search_program(vtn: VtnDep, who: ReadTargets, programID: ObjectID) -> Any:
    """One program."""
    return (await vtn.render([await get_object(vtn.engine, who, ObjectType.PROGRAM, programID)]))[0]


@router.put(
    "/programs/{programID}",
    tags=["programs"],
    operation_id="updateProgram",
    response_model=Program,
    response_model_exclude_none=True,
)
async def update_program(vtn: VtnDep, who: WritePrograms, programID: ObjectID, body: ProgramRequest) -> Any:
    """Replace a program (409 for one the DERMS mirrors)."""
    return (await vtn.render([await vtn.update_program(who, programID, body)]))[0]


@router.delete(
    "/programs/{programID}",
    tags=["programs"],
    operation_id="deleteProgram",
    response_model=Program,
    response_model_exclude_none=True,
)
async def delete_program(vtn: VtnDep, who: WritePrograms, programID: ObjectID) -> Any:
    """Delete a program (409 for one the DERMS mirrors)."""
    return (await vtn.render([await vtn.delete(who, ObjectType.PROGRAM, programID)]))[0]


# --- events ------------------------------------------------------------------------------------------


@router.get(
    "/events",
    tags=["events"],
    operation_id="searchAllEvents",
    response_model=list[Event],
    response_model_exclude_none=True,
)
async def search_all_events(
    vtn: VtnDep,
    who: ReadTargets,
    programID: IdQuery = None,
    targets: Targets = None,
    skip: Skip = 0,
    limit: Limit = MAX_LIMIT,
    active: bool | None = None,
) -> Any:
    """The events visible to the caller: a VEN sees the events the DERMS addressed to it, with only its own
    resources as targets, and the business logic's events by targets. ``active`` drops events that are over."""
    rows = await list_objects(
        vtn.engine, who, ObjectType.EVENT, _page(vtn, {"program_id": programID}, targets, skip, limit)
    )
    if active:
        now = utcnow()
        rows = [r for r in rows if not _over(r.body, now)]
    return await vtn.render(rows)


def _over(body: dict[str, Any], now: datetime) -> bool:
    from derbridge.edge.domain import parse_duration

    period = body.get("intervalPeriod") or {}
    start, duration = period.get("start"), period.get("duration")
    if not start or not duration:
        return False
    try:
        begins = datetime.fromisoformat(str(start).replace("Z", "+00:00"))
    except ValueError:
        return False
    if begins.tzinfo is None or begins.year <= 1:
        return False
    return begins + parse_duration(str(duration)) < now


@router.post(
    "/events",
    status_code=201,
    tags=["events"],
    operation_id="createEvent",
    response_model=Event,
    response_model_exclude_none=True,
)
async def create_event(vtn: VtnDep, who: WriteEvents, body: EventRequest) -> Any:
    """Create an event of the business logic."""
    return (await vtn.render([await vtn.create_event(who, body)]))[0]


@router.get(
    "/events/{eventID}",
    tags=["events"],
    operation_id="searchEventsByID",
    response_model=Event,
    response_model_exclude_none=True,
)
async def search_event(vtn: VtnDep, who: ReadTargets, eventID: ObjectID) -> Any:
    """One event."""
    return (await vtn.render([await get_object(vtn.engine, who, ObjectType.EVENT, eventID)]))[0]


@router.put(
    "/events/{eventID}",
    tags=["events"],
    operation_id="updateEvent",
    response_model=Event,
    response_model_exclude_none=True,
)
async def update_event(vtn: VtnDep, who: WriteEvents, eventID: ObjectID, body: EventRequest) -> Any:
    """Replace an event (409 for one the DERMS mirrors)."""
    return (await vtn.render([await vtn.update_event(who, eventID, body)]))[0]


@router.delete(
    "/events/{eventID}",
    tags=["events"],
    operation_id="deleteEvent",
    response_model=Event,
    response_model_exclude_none=True,
)
async def delete_event(vtn: VtnDep, who: WriteEvents, eventID: ObjectID) -> Any:
    """Delete an event (409 for one the DERMS mirrors: cancel it in the DERMS)."""
    return (await vtn.render([await vtn.delete(who, ObjectType.EVENT, eventID)]))[0]


# --- reports -----------------------------------------------------------------------------------------


@router.get(
    "/reports",
    tags=["reports"],
    operation_id="searchAllReports",
    response_model=list[Report],
    response_model_exclude_none=True,
)
async def search_all_reports(
    vtn: VtnDep,
    who: ReadVenObjects,
    programID: IdQuery = None,
    eventID: IdQuery = None,
    clientName: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    skip: Skip = 0,
    limit: Limit = MAX_LIMIT,
) -> Any:
    """The caller's reports (all of them for the business logic)."""
    query = _page(vtn, {"program_id": programID, "event_id": eventID, "name": None}, None, skip, limit)
    rows = await list_objects(vtn.engine, who, ObjectType.REPORT, query)
    if clientName is not None:
        rows = [r for r in rows if r.body.get("clientName") == clientName]
    return await vtn.render(rows)


@router.post(
    "/reports",
    status_code=201,
    tags=["reports"],
    operation_id="createReport",
    response_model=Report,
    response_model_exclude_none=True,
)
async def create_report(vtn: VtnDep, who: WriteReports, body: ReportRequest) -> Any:
    """A VEN's report: outcomes reach the DERMS (F7); every resource named is heard from.

    Answered as rendered, not through the response model: the report echoes a body of up to 100,000
    resources that was validated on the way in, and validating it again cost as much as the request's
    own validation (F7 benchmark). ``tests/edge`` hold the answer to the spec's ``report`` schema."""
    rendered = (await vtn.render([await vtn.create_report(who, body)]))[0]
    return JSONResponse(rendered, status_code=201)


@router.get(
    "/reports/{reportID}",
    tags=["reports"],
    operation_id="searchReportsByReportID",
    response_model=Report,
    response_model_exclude_none=True,
)
async def search_report(vtn: VtnDep, who: ReadVenObjects, reportID: ObjectID) -> Any:
    """One report."""
    return (await vtn.render([await get_object(vtn.engine, who, ObjectType.REPORT, reportID)]))[0]


@router.put(
    "/reports/{reportID}",
    tags=["reports"],
    operation_id="updateReport",
    response_model=Report,
    response_model_exclude_none=True,
)
async def update_report(vtn: VtnDep, who: WriteReports, reportID: ObjectID, body: ReportRequest) -> Any:
    """Replace a report; its outcomes replace those sent before."""
    return (await vtn.render([await vtn.update_report(who, reportID, body)]))[0]


@router.delete(
    "/reports/{reportID}",
    tags=["reports"],
    operation_id="deleteReport",
    response_model=Report,
    response_model_exclude_none=True,
)
async def delete_report(vtn: VtnDep, who: WriteReports, reportID: ObjectID) -> Any:
    """Delete a report (the outcomes it carried stay recorded in the DERMS)."""
    return (await vtn.render([await vtn.delete(who, ObjectType.REPORT, reportID)]))[0]


# --- subscriptions -----------------------------------------------------------------------------------


@router.get(
    "/subscriptions",
    tags=["subscriptions"],
    operation_id="searchSubscriptions",
    response_model=list[Subscription],
    response_model_exclude_none=True,
)
async def search_subscriptions(
    vtn: VtnDep,
    who: ReadVenObjects,
    programID: IdQuery = None,
    clientName: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    objects: Annotated[list[ObjectType] | None, Query()] = None,
    skip: Skip = 0,
    limit: Limit = MAX_LIMIT,
) -> Any:
    """The caller's subscriptions (all for the business logic)."""
    query = _page(vtn, {"program_id": programID, "name": clientName}, None, skip, limit)
    rows = await list_objects(vtn.engine, who, ObjectType.SUBSCRIPTION, query)
    if objects:
        wanted = {o.value for o in objects}
        rows = [r for r in rows if any(wanted & set(op["objects"]) for op in r.body.get("objectOperations", []))]
    return await vtn.render(rows)


@router.post(
    "/subscriptions",
    status_code=201,
    tags=["subscriptions"],
    operation_id="createSubscription",
    response_model=Subscription,
    response_model_exclude_none=True,
)
async def create_subscription(vtn: VtnDep, who: WriteSubscriptions, body: SubscriptionRequest) -> Any:
    """Subscribe to notifications; each callback URL must pass the echo challenge."""
    return (await vtn.render([await vtn.create_subscription(who, body)]))[0]


@router.get(
    "/subscriptions/{subscriptionID}",
    tags=["subscriptions"],
    operation_id="searchSubscriptionByID",
    response_model=Subscription,
    response_model_exclude_none=True,
)
async def search_subscription(vtn: VtnDep, who: ReadVenObjects, subscriptionID: ObjectID) -> Any:
    """One subscription."""
    return (await vtn.render([await get_object(vtn.engine, who, ObjectType.SUBSCRIPTION, subscriptionID)]))[0]


@router.put(
    "/subscriptions/{subscriptionID}",
    tags=["subscriptions"],
    operation_id="updateSubscription",
    response_model=Subscription,
    response_model_exclude_none=True,
)
async def update_subscription(
    vtn: VtnDep, who: WriteSubscriptions, subscriptionID: ObjectID, body: SubscriptionRequest
) -> Any:
    """Replace a subscription."""
    return (await vtn.render([await vtn.update_subscription(who, subscriptionID, body)]))[0]


@router.delete(
    "/subscriptions/{subscriptionID}",
    tags=["subscriptions"],
    operation_id="deleteSubscription",
    response_model=Subscription,
    response_model_exclude_none=True,
)
async def delete_subscription(vtn: VtnDep, who: WriteSubscriptions, subscriptionID: ObjectID) -> Any:
    """Delete a subscription."""
    return (await vtn.render([await vtn.delete(who, ObjectType.SUBSCRIPTION, subscriptionID)]))[0]


# --- vens --------------------------------------------------------------------------------------------


@router.get(
    "/vens", tags=["vens"], operation_id="searchVens", response_model=list[Ven], response_model_exclude_none=True
)
async def search_vens(
    vtn: VtnDep,
    who: ReadVenObjects,
    venName: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    targets: Targets = None,
    skip: Skip = 0,
    limit: Limit = MAX_LIMIT,
) -> Any:
    """The caller's vens (all for the business logic)."""
    return await vtn.render(
        await list_objects(vtn.engine, who, ObjectType.VEN, _page(vtn, {"name": venName}, targets, skip, limit))
    )


@router.post(
    "/vens",
    status_code=201,
    tags=["vens"],
    operation_id="createVen",
    response_model=Ven,
    response_model_exclude_none=True,
)
async def create_ven(vtn: VtnDep, who: WriteVens, body: VenRequest) -> Any:
    """Create a ven (venName unique in the VTN)."""
    return (await vtn.render([await vtn.create_ven(who, body)]))[0]


@router.get(
    "/vens/{venID}", tags=["vens"], operation_id="searchVenByID", response_model=Ven, response_model_exclude_none=True
)
async def search_ven(vtn: VtnDep, who: ReadVenObjects, venID: ObjectID) -> Any:
    """One ven."""
    return (await vtn.render([await get_object(vtn.engine, who, ObjectType.VEN, venID)]))[0]


@router.put(
    "/vens/{venID}", tags=["vens"], operation_id="updateVen", response_model=Ven, response_model_exclude_none=True
)
async def update_ven(vtn: VtnDep, who: WriteVens, venID: ObjectID, body: VenRequest) -> Any:
    """Replace a ven."""
    return (await vtn.render([await vtn.update_ven(who, venID, body)]))[0]


@router.delete(
    "/vens/{venID}", tags=["vens"], operation_id="deleteVen", response_model=Ven, response_model_exclude_none=True
)
async def delete_ven(vtn: VtnDep, who: WriteVens, venID: ObjectID) -> Any:
    """Delete a ven and its resources."""
    return (await vtn.render([await vtn.delete(who, ObjectType.VEN, venID)]))[0]


# --- resources ---------------------------------------------------------------------------------------


@router.get(
    "/resources",
    tags=["resources"],
    operation_id="searchVenResources",
    response_model=list[Resource],
    response_model_exclude_none=True,
)
async def search_resources(
    vtn: VtnDep,
    who: ReadVenObjects,
    resourceName: Annotated[str | None, Query(min_length=1, max_length=128)] = None,
    venID: IdQuery = None,
    targets: Targets = None,
    skip: Skip = 0,
    limit: Limit = MAX_LIMIT,
) -> Any:
    """The caller's resources, each enrollment resource with its ENROLLMENT_* status attributes."""
    query = _page(vtn, {"name": resourceName, "ven_id": venID}, targets, skip, limit)
    rows = await list_objects(vtn.engine, who, ObjectType.RESOURCE, query)
    await vtn.heard_about(who, rows)
    return await vtn.render(rows)


@router.post(
    "/resources",
    status_code=201,
    tags=["resources"],
    operation_id="createResource",
    response_model=Resource,
    response_model_exclude_none=True,
)
async def create_resource(vtn: VtnDep, who: WriteVens, body: ResourceRequest) -> Any:
    """Register a resource; with enrollment attributes it is an enrollment request (F1)."""
    return (await vtn.render(await vtn.create_resources(who, [body])))[0]


@router.post(
    "/resources/batch",
    status_code=201,
    tags=["resources", "derbridge extension"],
    operation_id="createResourceBatch",
    response_model=ResourceBatchOut,
    response_model_exclude_none=True,
)
async def create_resource_batch(vtn: VtnDep, who: WriteVens, body: ResourceBatchIn) -> Any:
    """derbridge extension — bulk onboarding: up to 5,000 resources in one transaction (all or none), their
    enrollment requests forwarded in one F1 message."""
    return {"resources": await vtn.render(await vtn.create_resources(who, body.resources))}


@router.get(
    "/resources/{resourceID}",
    tags=["resources"],
    operation_id="searchVenResourceByID",
    response_model=Resource,
    response_model_exclude_none=True,
)
async def search_resource(vtn: VtnDep, who: ReadVenObjects, resourceID: ObjectID) -> Any:
    """One resource with its enrollment status."""
    row = await get_object(vtn.engine, who, ObjectType.RESOURCE, resourceID)
    await vtn.heard_about(who, [row])
    return (await vtn.render([row]))[0]


@router.put(
    "/resources/{resourceID}",
    tags=["resources"],
    operation_id="updateVenResource",
    response_model=Resource,
    response_model_exclude_none=True,
)
async def update_resource(vtn: VtnDep, who: WriteVens, resourceID: ObjectID, body: ResourceRequest) -> Any:
    """Replace a resource (its enrollment attributes may not change)."""
    return (await vtn.render([await vtn.update_resource(who, resourceID, body)]))[0]


@router.delete(
    "/resources/{resourceID}",
    tags=["resources"],
    operation_id="deleteVenResource",
    response_model=Resource,
    response_model_exclude_none=True,
)
async def delete_resource(vtn: VtnDep, who: WriteVens, resourceID: ObjectID) -> Any:
    """Delete a resource."""
    return (await vtn.render([await vtn.delete(who, ObjectType.RESOURCE, resourceID)]))[0]


# --- notifiers and auth ------------------------------------------------------------------------------


@router.get("/notifiers", tags=["notifiers"], operation_id="listAllNotifiers", response_model=NotifiersResponse)
async def list_notifiers(who: Annotated[Principal, Depends(requires(Scope.READ_TARGETS))]) -> Any:
    """The notifier bindings: webhooks only (no MQTT broker)."""
    return {"WEBHOOK": True}


@router.get("/auth/server", tags=["Auth"], operation_id="getAuthServerInfo", response_model=AuthServerInfo)
async def auth_server(request: Request) -> Any:
    """Where to get a token: this VTN's ``/auth/token``."""
    return {"tokenURL": str(request.url_for("fetch_token"))}


@router.get(
    "/.well-known/jwks.json",
    tags=["Auth"],
    operation_id="getTokenKeys",
    summary="The public keys of the access tokens (JWKS)",
)
async def token_keys(request: Request) -> Any:
    """The JWKS document (RFC 7517) of the keys this VTN's access tokens verify with: the current ES256 or
    RS256 key and the previous ones still accepted. Empty when tokens are signed HS256 (a shared secret is
    never published). An extension of the spec: served beside the VTN's other auth operations."""
    keys: auth.TokenKeys = request.app.state.token_keys
    return JSONResponse(keys.jwks(), headers={"Cache-Control": "public, max-age=300"})


# RFC 6749 §5.1: a token answer, granted or refused, must not be cached.
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
MAX_CREDENTIAL = 4096


class _TokenError(Exception):
    """A refused token request: the OAuth2 ``error`` code (RFC 6749 §5.2) and its problem."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}


_BASIC_CHALLENGE = {"WWW-Authenticate": 'Basic realm="openadr3"'}


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """The client id and secret of an ``Authorization: Basic`` header (RFC 6749 §2.3.1: each
    form-urlencoded, joined by a colon, base64-encoded); None when the header is not Basic."""
    kind, _, encoded = header.partition(" ")
    if kind.lower() != "basic":
        return None
    try:
        pair = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _TokenError(400, "invalid_request", "The Basic credentials are not base64 of UTF-8 text.") from None
    client_id, colon, secret = pair.partition(":")
    if not colon:
        raise _TokenError(400, "invalid_request", "The Basic credentials need 'client_id:client_secret'.")
    return unquote_plus(client_id), unquote_plus(secret)


def _client_credentials(request: Request, client_id: str | None, client_secret: str | None) -> tuple[str, str, bool]:
    """The client's id and secret, by HTTP Basic or in the body (the same ones in both are accepted, two
    different ones are not), and whether Basic carried them."""
    basic = _basic_credentials(request.headers.get("authorization", ""))
    if basic is not None:
        if (client_id is not None and client_id != basic[0]) or (
            client_secret is not None and client_secret != basic[1]
        ):
            raise _TokenError(
                400, "invalid_request", "Send the client credentials once: by HTTP Basic or in the body, not both."
            )
        client_id, client_secret = basic
    if not client_id or not client_secret:
        raise _TokenError(
            400,
            "invalid_request",
            "Send client_id and client_secret: by HTTP Basic (RFC 6749 §2.3.1) or in the form body.",
        )
    if len(client_id) > MAX_CREDENTIAL or len(client_secret) > MAX_CREDENTIAL:
        raise _TokenError(
            400, "invalid_request", f"client_id and client_secret are at most {MAX_CREDENTIAL} characters."
        )
    return client_id, client_secret, basic is not None


@router.post(
    "/auth/token", tags=["Auth"], operation_id="fetchToken", name="fetch_token", response_model=ClientCredentialResponse
)
async def fetch_token(
    request: Request,
    grant_type: Annotated[str | None, Form()] = None,
    client_id: Annotated[str | None, Form(description="Or by HTTP Basic (RFC 6749 §2.3.1).")] = None,
    client_secret: Annotated[str | None, Form(description="Or by HTTP Basic (RFC 6749 §2.3.1).")] = None,
    scope: Annotated[str | None, Form()] = None,
) -> Any:
    """OAuth2 client credentials: a bearer token for a client's id and secret, sent by HTTP Basic or in the
    form body. Refusals carry the OAuth2 ``error`` code (RFC 6749 §5.2) beside the problem fields; an
    address or client id over its rate limit gets 429 with ``Retry-After``. Never cached (``no-store``)."""
    state = request.app.state
    address = remote_address(request)
    try:
        if grant_type is None:
            raise _TokenError(400, "invalid_request", "Send grant_type=client_credentials.")
        if grant_type != "client_credentials":
            raise _TokenError(400, "unsupported_grant_type", "Only client_credentials is supported.")
        client, secret, by_basic = _client_credentials(request, client_id, client_secret)
        if scope is not None and len(scope) > MAX_CREDENTIAL:
            raise _TokenError(400, "invalid_request", f"scope is at most {MAX_CREDENTIAL} characters.")
        state.throttle.token_request(address, client)
        try:
            token, scopes = await auth.issue_token(
                state.engine, state.token_keys, state.token_ttl, client, secret, scope, utcnow()
            )
        except CredentialsRefused:
            state.throttle.failed(address, client)
            raise _TokenError(
                401, "invalid_client", "Wrong client id or secret.", _BASIC_CHALLENGE if by_basic else {}
            ) from None
        except ScopeRefused as refused:
            raise _TokenError(400, "invalid_scope", str(refused)) from None
    except TooManyAttempts as refused:
        problem = _too_many(refused)
        return _problem(request, 429, problem.kind, problem.title, problem.detail, NO_STORE | (problem.headers or {}))
    except _TokenError as refused:
        title = HTTPStatus(refused.status).phrase
        headers = NO_STORE | ({"WWW-Authenticate": 'Basic realm="openadr3"'} if refused.status == 401 else {})
        headers |= refused.headers
        return _problem(
            request,
            refused.status,
            refused.error.replace("_", "-"),
            title,
            refused.detail,
            headers,
            error=refused.error,
        )
    body = {"access_token": token, "token_type": "Bearer", "expires_in": state.token_ttl, "scope": " ".join(scopes)}
    return JSONResponse(body, headers=NO_STORE)


def create_edge_app(settings: Settings, engine: AsyncEngine, *, clock: Clock, vault: TokenVault) -> FastAPI:
    """The VTN as its own application (its own OpenAPI document at ``/openadr3/3.1.0/openapi.json``) on the
    DERMS database ``engine``, its writes stamped by the business ``clock``, subscriptions' bearer tokens
    sealed and opened by ``vault``. Made by :func:`derbridge.edge.system.build` (the server mounts it at
    :data:`PREFIX`); the access-token keys (``edge.token_*``) are read here."""
    app = FastAPI(
        title="derbridge edge gateway (OpenADR 3.1.0 VTN)",
        version=__version__,
        description="OpenADR 3.1.0 VTN for aggregators, with the DERMS as its business logic. See docs/edge.md.",
        docs_url=None,
        redoc_url=None,
    )
    app.state.engine = engine
    app.state.clock = clock
    app.state.token_keys = auth.TokenKeys.from_settings(settings)
    app.state.throttle = AuthThrottle(settings.edge)
    app.state.token_ttl = settings.edge.token_ttl_seconds
    app.state.vtn = Vtn(
        engine=engine,
        derms_instance_id=settings.derms_instance_id,
        callbacks=webhooks.CallbackChecker(settings.edge),
        clock=clock,
        vault=vault,
        limits=settings.edge,
    )
    install_problems(app)
    install_text_guard(app)
    # In /metrics as system="vtn" (a 401/403/429 flood shows), and in the access log with the client id.
    instrument(app, "vtn", access_log=settings.server.access_log)
    install_api_docs(app)
    app.include_router(router)
    return app
