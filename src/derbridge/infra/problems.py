"""RFC 9457 problem details: the one shape of every error our HTTP APIs return.

Each problem names what was wrong, where (``errors[].field`` as a dotted path into the request), and what
to do about it. Handlers here turn validation errors, the domain's errors (:mod:`derbridge.errors`, their
status from the one table :data:`PROBLEM_STATUS`), a router's own :class:`ProblemError`, Starlette HTTP
errors and anything unexpected into ``application/problem+json`` — an unexpected error is logged with its
traceback and answered with a 500 problem that reveals nothing internal.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import structlog
from pydantic import BaseModel, ConfigDict, Field

from derbridge.errors import (
    Conflict,
    DomainError,
    Invalid,
    MissingPrerequisite,
    NotFound,
    NotPermitted,
    Unavailable,
)

# FastAPI is imported by the functions that answer HTTP requests, not here: the CLI turns a domain error
# into a problem through this module, and must not load a web framework for it.
if TYPE_CHECKING:
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "https://derbridge.dev/problems/"

log = structlog.get_logger(__name__)


class FieldError(BaseModel):
    """One field that was wrong, and why."""

    field: str = Field(description="Dotted path of the field in the request, e.g. `body.rules.fatigue_cap`.")
    message: str


class Problem(BaseModel):
    """An RFC 9457 problem detail. Extension members (e.g. ``wake_on``) may follow the standard ones."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="URI naming the kind of problem.")
    title: str
    status: int
    detail: str | None = None
    instance: str | None = None
    errors: list[FieldError] | None = None


class ProblemError(Exception):
    """Raise in a router for a purely HTTP refusal (a credential, a header, a method); the business raises
    a :class:`~derbridge.errors.DomainError` instead."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str,
        *,
        errors: Sequence[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        extensions: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(detail)
        self.extensions = extensions or {}
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.errors = list(errors) if errors else None
        self.headers = headers


PROBLEM_STATUS: dict[type[DomainError], int] = {
    NotFound: 404,
    Invalid: 422,
    Conflict: 409,
    NotPermitted: 403,
    Unavailable: 503,
    MissingPrerequisite: 409,  # with ``wake_on``: the bridge parks the message (docs/bridge.md)
    DomainError: 422,  # a refusal of no more specific class: the request is understood and refused
}
"""The one table from a domain error's class to the HTTP status of its problem (every API, the inbox's
per-message answers, the CLI's exit code). A subclass not listed takes its nearest listed ancestor's."""


def status_for(error: DomainError) -> int:
    """The HTTP status of ``error``'s problem (:data:`PROBLEM_STATUS`)."""
    for cls in type(error).__mro__:
        if issubclass(cls, DomainError) and cls in PROBLEM_STATUS:
            return PROBLEM_STATUS[cls]
    return PROBLEM_STATUS[DomainError]  # unreachable: every domain error is a DomainError


def as_problem(error: DomainError) -> ProblemError:
    """``error`` as the problem every API answers for it."""
    return ProblemError(
        status_for(error),
        error.kind,
        error.title,
        error.detail,
        errors=[FieldError(field=e.field, message=e.message) for e in error.errors],
        extensions=dict(error.extensions),
    )


MAX_INSTANCE = 2000
"""An ``instance`` longer than this is cut (an 8,000-character query made 8,000-character problems)."""


def problem_instance(request: Request) -> str:
    """The problem's ``instance``: the request's path only (no query: it may carry long or personal
    values), percent-encoded so that it is a valid URI reference with any characters, and bounded."""
    from urllib.parse import quote

    return quote(request.url.path, safe="/:@!$&'()*+,;=-._~")[:MAX_INSTANCE]


def problem_response(
    request: Request,
    status: int,
    kind: str,
    title: str,
    detail: str | None,
    errors: Sequence[FieldError] | None = None,
    headers: dict[str, str] | None = None,
    extensions: dict[str, Any] | None = None,
) -> JSONResponse:
    """Render a problem detail."""
    from fastapi.responses import JSONResponse

    body = Problem(
        type=PROBLEM_BASE + kind,
        title=title,
        status=status,
        detail=detail,
        instance=problem_instance(request),
        errors=list(errors) if errors else None,
        **(extensions or {}),
    )
    return JSONResponse(
        body.model_dump(exclude_none=True), status_code=status, media_type=PROBLEM_MEDIA_TYPE, headers=headers
    )


def _field_path(location: Sequence[Any]) -> str:
    return ".".join(str(part) for part in location)


def _validation_message(error: dict[str, Any]) -> str:
    message = str(error.get("msg", "is invalid"))
    if "input" in error and error.get("type") not in {"missing", "json_invalid"}:
        shown = repr(error["input"])
        if len(shown) <= 60:
            message += f" (got {shown})"
    return message


async def _on_validation_error(request: Request, exc: Exception) -> JSONResponse:
    from fastapi.exceptions import RequestValidationError

    assert isinstance(exc, RequestValidationError)
    errors = [FieldError(field=_field_path(e.get("loc", ())), message=_validation_message(e)) for e in exc.errors()]
    fields = ", ".join(e.field for e in errors[:5])
    return problem_response(
        request,
        422,
        "validation-error",
        "The request is not valid",
        f"Correct these fields and send the request again: {fields}.",
        errors,
    )


async def _on_problem(request: Request, exc: Exception) -> JSONResponse:
    if isinstance(exc, DomainError):
        exc = as_problem(exc)
    assert isinstance(exc, ProblemError)
    return problem_response(
        request, exc.status, exc.kind, exc.title, exc.detail, exc.errors, exc.headers, exc.extensions
    )


_HTTP_TITLES = {
    404: (
        "not-found",
        "Not found",
        "There is no resource at this path. Check the URL against the API's OpenAPI.",
    ),
    405: ("method-not-allowed", "Method not allowed", "This path does not accept that method."),
    413: ("payload-too-large", "Request body too large", "Send a smaller body, or split the batch."),
}


def _phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


async def _on_http_error(request: Request, exc: Exception) -> JSONResponse:
    from starlette.exceptions import HTTPException as StarletteHTTPException

    assert isinstance(exc, StarletteHTTPException)
    kind, title, detail = _HTTP_TITLES.get(exc.status_code, ("http-error", "Request refused", str(exc.detail)))
    if exc.status_code in _HTTP_TITLES and exc.detail and exc.detail != _phrase(exc.status_code):
        detail = str(exc.detail)  # raised with a specific explanation (e.g. the body limit): keep it
    headers = dict(exc.headers) if exc.headers else None
    return problem_response(request, exc.status_code, kind, title, detail, headers=headers)


async def _on_unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error", path=request.url.path, error_type=type(exc).__name__)
    return problem_response(
        request,
        500,
        "internal-error",
        "Internal error",
        "The server failed to handle the request; it has been logged. Retry later or tell the operators.",
    )


def install_problem_handlers(app: FastAPI) -> None:
    """Make every error of ``app`` a problem detail."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException

    app.add_exception_handler(RequestValidationError, _on_validation_error)
    app.add_exception_handler(DomainError, _on_problem)
    app.add_exception_handler(ProblemError, _on_problem)
    app.add_exception_handler(StarletteHTTPException, _on_http_error)
    app.add_exception_handler(Exception, _on_unexpected)


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}, "description": description}
    for status, description in (
        (400, "The body is not JSON"),
        (401, "Missing or wrong service credential"),
        (404, "Not found"),
        (409, "Conflicts with the current state"),
        (413, "Request body too large"),
        (422, "Invalid request"),
    )
}
"""Declared on every router so that the OpenAPI documents every error as a problem."""
