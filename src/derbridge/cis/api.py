"""P0 over HTTP: ``POST /assethub/v1/cis-imports`` and ``POST /derms/v1/cis-imports`` load a CIS extract
sent as the request body (``text/csv``) into that one system, with the same reader, rules and upsert as
``derbridge cis import`` (docs/cis-import.md).

It is for small extracts — a day's changes pushed by a CIS integration, or the one test customer of
``derbridge smoke`` — from a tool that has only the API: the body is bounded by ``server.max_body_bytes``,
and a full extract of a million customers is what the CLI's import is for. Each system is its own API, so
an extract meant for both is posted to both (the CLI loads both at once). A customer is never deleted
(history refers to it): a row sent again with ``account_status`` CLOSED closes the account.

The DERMS route does not wake enrollment syncs parked for the accounts it loaded (the CLI does, through
the bridge's database, which a DERMS process need not reach): they are retried on the bridge's park backoff,
or at once with ``POST /bridge/v1/wake`` and the ``cis-account:<id>`` keys.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field

from derbridge.cis.extract import ExtractHeaderError
from derbridge.cis.importer import ImportReport, import_extract
from derbridge.cis.loading import CisLoader
from derbridge.errors import Invalid
from derbridge.infra.problems import PROBLEM_MEDIA_TYPE, PROBLEM_RESPONSES, Problem, ProblemError
from derbridge.infra.web import require_service_token

MAX_REJECTIONS_ANSWERED = 50
"""Rejected rows listed in the answer (the count is always whole)."""

router = APIRouter(dependencies=[Depends(require_service_token)], responses=PROBLEM_RESPONSES)


class RejectedRowOut(BaseModel):
    """A row that was not loaded, and why."""

    line: int = Field(description="The line number in the body (the header is line 1).")
    column: str | None
    reason: str


class CisImportOut(BaseModel):
    """What one system did with the extract: ``inserted + updated + unchanged + rejected = read``."""

    system: str
    read: int
    inserted: int
    updated: int
    unchanged: int
    rejected: int
    rejected_rows: list[RejectedRowOut] = Field(description=f"The first {MAX_REJECTIONS_ANSWERED} rejected rows.")


def _import_body(body: bytes, loader: CisLoader) -> ImportReport:
    """Run the importer on ``body`` (in a worker thread: it is the CLI's synchronous, threaded importer)."""
    handle, name = tempfile.mkstemp(prefix="cis-import-", suffix=".csv")
    try:
        with os.fdopen(handle, "wb") as file:
            file.write(body)
        return import_extract(Path(name), [loader])
    finally:
        os.unlink(name)


@router.post(
    "/cis-imports",
    tags=["customers"],
    responses={
        415: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}, "description": "The body is not text/csv"},
        422: {"model": Problem, "content": {PROBLEM_MEDIA_TYPE: {}}, "description": "Not a CIS extract"},
    },
    openapi_extra={"requestBody": {"content": {"text/csv": {"schema": {"type": "string"}}}, "required": True}},
)
async def post_cis_import(request: Request) -> CisImportOut:
    """Load a CIS extract (the body, ``text/csv``, header and columns as docs/cis-import.md says) into this
    system: upsert by CIS ids, idempotent. 200 with the counts and the rejected rows (the others are loaded);
    422 ``not-a-cis-extract`` when the header is not the extract's (nothing is loaded); 415 for another
    media type."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "text/csv":
        raise ProblemError(
            415,
            "unsupported-media-type",
            "Send the extract as text/csv",
            f"The body must be a CIS extract with Content-Type: text/csv, not {media_type or 'none'!r}.",
        )
    new_loader: Callable[[], CisLoader] = request.app.state.cis_loader
    loader = new_loader()
    try:
        report = await asyncio.to_thread(_import_body, await request.body(), loader)
    except ExtractHeaderError as error:
        raise Invalid("not-a-cis-extract", "Not a CIS extract", f"{error}. Nothing was loaded.") from None
    counts = report.systems[loader.system]
    return CisImportOut(
        system=loader.system,
        **counts.as_dict(),
        rejected_rows=[
            RejectedRowOut(line=row.line, column=row.column, reason=row.reason)
            for row in report.rejected[:MAX_REJECTIONS_ANSWERED]
        ],
    )
