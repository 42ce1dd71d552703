"""One input rule for text on every HTTP API (Asset Hub, the DERMS, the VTN, the bridge): a query
parameter, the path, or a string anywhere in a JSON body may not hold NUL, another C0 control character
(tab, newline and carriage return excepted), DEL, or a lone UTF-16 surrogate.

Why one rule at the edge of every API rather than a pattern on each field: PostgreSQL text cannot hold NUL
(the VTN answered 500 for ``GET /vens?venName=%00``), a lone surrogate cannot be encoded as UTF-8 at all,
and control characters in names end up in logs and in other systems' files. A per-field pattern is easy
to forget on the next field; a dependency installed on every application's router cannot be. The refusal is
a 422 problem naming the field (``query.venName``, ``path.venID``, ``body.attributes.0.values.1``); the VTN
answers it as 400, its spec's code for an invalid request.

Cost: the body is already read by FastAPI (it caches it); a JSON body is scanned once for the only ways
JSON can carry such a character (a ``\\u`` escape of a control character or of a surrogate) and decoded
again only when one is found, to name the field.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from derbridge.infra.problems import FieldError, ProblemError

if TYPE_CHECKING:
    from fastapi import FastAPI

_BAD_TEXT = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")
"""Characters no text field accepts: C0 controls but tab, newline and carriage return; DEL; surrogates."""

# In JSON, a control character can only travel escaped (raw ones are invalid JSON), and a lone surrogate
# only as a \uD800-\uDFFF escape: one scan of the raw bytes finds every candidate.
_SUSPECT_ESCAPE = re.compile(rb"\\u(?:00[01][0-9a-fA-F]|007[fF]|[dD][89a-fA-F][0-9a-fA-F]{2})")


def bad_text(value: str) -> bool:
    """True when ``value`` breaks the text rule."""
    return _BAD_TEXT.search(value) is not None


def _message(value: str) -> str:
    found = _BAD_TEXT.search(value)
    code = ord(found.group()) if found else 0
    what = "a lone surrogate" if 0xD800 <= code <= 0xDFFF else f"the control character U+{code:04X}"
    return f"holds {what}; text may not contain NUL, control characters (but tab and newline) or lone surrogates"


def _walk(value: Any, path: str, found: list[FieldError]) -> None:
    if len(found) >= 20:
        return
    if isinstance(value, str):
        if bad_text(value):
            found.append(FieldError(field=path, message=_message(value)))
    elif isinstance(value, dict):
        for key, item in value.items():
            if bad_text(key):
                found.append(FieldError(field=f"{path}.{key!r}", message="a member name " + _message(key)))
            _walk(item, f"{path}.{key}", found)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _walk(item, f"{path}.{i}", found)


def text_errors(
    query: list[tuple[str, str]], path_params: dict[str, Any], path: str, body: bytes | None
) -> list[FieldError]:
    """Every breach of the text rule in a request's query, path parameters (else its path) and JSON body
    (at most 20)."""
    found: list[FieldError] = []
    for name, value in query:
        if bad_text(name) or bad_text(value):
            found.append(FieldError(field=f"query.{name}", message=_message(value if bad_text(value) else name)))
    for name, value in path_params.items():
        if isinstance(value, str) and bad_text(value):
            found.append(FieldError(field=f"path.{name}", message=_message(value)))
    if not any(e.field.startswith("path.") for e in found) and bad_text(path):
        found.append(FieldError(field="path", message=_message(path)))
    if body and _SUSPECT_ESCAPE.search(body):
        try:
            decoded = json.loads(body)
        except ValueError:
            decoded = None  # not JSON: the route's own parsing refuses it
        _walk(decoded, "body", found)
    return found[:20]


async def text_guard(request: Request) -> None:
    """A dependency on every route: refuse a request whose text breaks the rule (422 naming each field)."""
    body: bytes | None = None
    if request.method in ("POST", "PUT", "PATCH") and "json" in request.headers.get("content-type", ""):
        body = await request.body()
    errors = text_errors(request.query_params.multi_items(), request.path_params, request.url.path, body)
    if errors:
        fields = ", ".join(e.field for e in errors[:5])
        # The same kind and title as any other invalid request (infra/problems.py): to a client it is one.
        raise ProblemError(
            422,
            "validation-error",
            "The request is not valid",
            f"Remove NUL, control characters and lone surrogates from: {fields}.",
            errors=errors,
        )


def install_text_guard(app: FastAPI) -> None:
    """Apply :func:`text_guard` to every route ``app`` includes from now on (call before adding routes)."""
    from fastapi import Depends

    app.router.dependencies.append(Depends(text_guard))
