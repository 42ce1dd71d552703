"""schemathesis over every API — Asset Hub, the DERMS, the VTN and the bridge's operations API — with
invalid text added to its strategies, on SQLite and on PostgreSQL: no generated request makes a 5xx
(issue 15, finding 3 and its "done when").

Every generated case has one string of its query, its path parameters and its JSON body replaced by text
the one input rule refuses (``derbridge.infra.text``): NUL, another C0 control character, DEL, and — in
JSON bodies — a lone UTF-16 surrogate. A lone surrogate cannot travel in a URL (it has no UTF-8 encoding;
invalid percent-encoded bytes reach the server as U+FFFD, which is valid text), so query and path strings
get the control characters only. Sent as JSON, a lone surrogate is the escape ``"\\ud800"``, the one form
in which a client can send it.

PostgreSQL is where this matters (its text cannot hold NUL: the VTN answered 500 for ``venName=%00``);
SQLite stores anything, and is fuzzed too so that neither backend drifts. The whole server (the three
service APIs and the VTN mounted under its prefix) runs on a loopback port in a thread of its own; two
examples per operation keep each backend near a minute on two cores. The ordinary fuzzing is in
tests/integration/test_api_fuzz.py and tests/edge/test_vtn_fuzz.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from derbridge.api.app import create_asgi
from derbridge.edge.api import PREFIX as EDGE_PREFIX
from derbridge.edge.auth import add_client
from derbridge.edge.domain import Role
from derbridge.migrations.runner import SYSTEMS
from derbridge.runtime import Runtime, migrate_all
from derbridge.settings import Settings
from tests.support.cis_rows import cis_row
from tests.support.embedded import free_port
from tests.support.enrollment import load_customers
from tests.support.services import postgres_server

pytestmark = pytest.mark.slow  # a fuzzer (schemathesis) over every operation: make test, not test-fast

TOKEN = "fuzz-token"

# Characters the text rule refuses and that a URL can carry (percent-encoded).
URL_POISON = ["\x00", "\x01", "\x08", "\x0b", "\x1b", "\x1f", "\x7f"]
# In a JSON body, lone surrogates as well (high, low, and a low one before a high one).
BODY_POISON = [*URL_POISON, "\ud800", "\udfff", "\udc00\ud800"]


def _string_leaves(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """The paths to every string in ``value`` (member names are left alone: a JSON key is a string too, but
    the generated ones are the schema's own property names)."""
    if isinstance(value, str):
        return [path]
    if isinstance(value, dict):
        return [leaf for key, item in value.items() for leaf in _string_leaves(item, (*path, key))]
    if isinstance(value, list):
        return [leaf for i, item in enumerate(value) for leaf in _string_leaves(item, (*path, i))]
    return []


def _replace(value: Any, path: tuple[Any, ...], new: str) -> Any:
    if not path:
        return new
    head, rest = path[0], path[1:]
    if isinstance(value, dict):
        return {**value, head: _replace(value[head], rest, new)}
    copy = list(value)
    copy[head] = _replace(copy[head], rest, new)
    return copy


def _poisoned(value: Any, alphabet: list[str]) -> st.SearchStrategy[Any]:
    """``value`` with one of its strings made invalid: the bad character put before, inside or after the
    generated text, so both a bare NUL and a NUL inside a plausible value are tried."""
    leaves = _string_leaves(value)
    if not leaves:
        return st.just(value)

    def poison(path: tuple[Any, ...], bad: str, where: int) -> Any:
        text: str = value
        for step in path:
            text = text[step]
        cut = min(where, len(text))
        return _replace(value, path, text[:cut] + bad + text[cut:])

    return st.builds(poison, st.sampled_from(leaves), st.sampled_from(alphabet), st.integers(0, 8))


def _with_invalid_text(schema: schemathesis.BaseSchema) -> schemathesis.BaseSchema:
    """Register, on this schema only, the hooks that make one string per location invalid."""

    def flatmap_query(context: Any, query: Any) -> st.SearchStrategy[Any]:
        return _poisoned(query, URL_POISON) if query else st.just(query)

    def flatmap_path_parameters(context: Any, path_parameters: Any) -> st.SearchStrategy[Any]:
        return _poisoned(path_parameters, URL_POISON) if path_parameters else st.just(path_parameters)

    def flatmap_body(context: Any, body: Any) -> st.SearchStrategy[Any]:
        # Lone surrogates only where the body is JSON (escaped there); a CSV or form body is UTF-8 bytes.
        kinds = [alternative.media_type for alternative in context.operation.body] if context.operation else []
        json_only = bool(kinds) and all("json" in kind for kind in kinds)
        return _poisoned(body, BODY_POISON if json_only else URL_POISON)

    for hook in (flatmap_query, flatmap_path_parameters, flatmap_body):
        schema.hooks.hook(hook)
    return schema


@pytest.fixture(scope="module", params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def configured(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """Settings on fresh databases of the backend under test (PostgreSQL databases dropped afterwards)."""
    data_dir: Path = tmp_path_factory.mktemp(f"text-fuzz-{request.param}") / "var"
    if request.param == "sqlite":
        yield Settings(data_dir=data_dir, api_token=TOKEN)
        return
    server = postgres_server()
    urls = {system: server.create_database(system) for system in SYSTEMS}
    try:
        yield Settings.model_validate(
            {
                "data_dir": data_dir,
                "api_token": TOKEN,
                "assethub": {"database_url": urls["assethub"]},
                "derms": {"database_url": urls["derms"]},
            }
        )
    finally:
        server.drop_all()


@pytest.fixture(scope="module")
def server(configured: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """The whole server (the VTN included) on a loopback port, on a small utility; the base URL and a token
    per VTN role."""
    # One address making thousands of refused calls on purpose: the default limits would answer 429 early.
    configured.edge.auth_failures_per_address = "1000000/minute"
    configured.edge.token_requests_per_address = "1000000/minute"
    configured.edge.token_failures_per_client = "1000000/minute"
    migrate_all(configured)
    runtime = Runtime(configured)
    load_customers(runtime, tmp_path_factory.mktemp("cis"), [cis_row(n) for n in range(1, 4)])
    port = free_port()
    served = uvicorn.Server(
        uvicorn.Config(create_asgi(runtime), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not served.started:
        assert thread.is_alive(), "the server stopped while starting"
        assert time.monotonic() < deadline, "the server did not start within a minute"
        time.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    program = {"program_code": "FUZZ", "name": "Fuzz program", "status": "ACTIVE"}
    assert httpx.post(base + "/assethub/v1/programs", json=program, headers=_auth(TOKEN)).status_code == 201
    tokens: dict[str, str] = {}
    for role in Role:
        made = add_client(runtime.sync_engine("derms"), role.value, "FUZZ", role)
        answer = httpx.post(
            base + EDGE_PREFIX + "/auth/token",
            data={"grant_type": "client_credentials", "client_id": made.client_id, "client_secret": made.client_secret},
        )
        assert answer.status_code == 200, answer.text
        tokens[role.value] = answer.json()["access_token"]
    try:
        yield base, tokens
    finally:
        served.should_exit = True
        thread.join()
        runtime.close_sync()


def _auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _load(server: tuple[str, dict[str, str]], prefix: str) -> schemathesis.BaseSchema:
    return _with_invalid_text(schemathesis.openapi.from_url(server[0] + prefix + "/openapi.json"))


@pytest.fixture(scope="module")
def assethub(server: tuple[str, dict[str, str]]) -> schemathesis.BaseSchema:
    return _load(server, "/assethub/v1")


@pytest.fixture(scope="module")
def derms(server: tuple[str, dict[str, str]]) -> schemathesis.BaseSchema:
    return _load(server, "/derms/v1")


@pytest.fixture(scope="module")
def bridge(server: tuple[str, dict[str, str]]) -> schemathesis.BaseSchema:
    return _load(server, "/bridge/v1")


@pytest.fixture(scope="module")
def vtn(server: tuple[str, dict[str, str]]) -> schemathesis.BaseSchema:
    return _load(server, EDGE_PREFIX)


assethub_schema = schemathesis.pytest.from_fixture("assethub")
derms_schema = schemathesis.pytest.from_fixture("derms")
bridge_schema = schemathesis.pytest.from_fixture("bridge")
vtn_schema = schemathesis.pytest.from_fixture("vtn")
FUZZ = settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck), database=None)


def _no_server_error(case: schemathesis.Case, base: str, token: str) -> None:
    response = case.call(base_url=base, headers=_auth(token))
    assert response.status_code < 500, (
        f"{case.method} {case.formatted_path} query={case.query!r} body={case.body!r}: "
        f"{response.status_code} {response.text[:500]}"
    )


@assethub_schema.parametrize()
@FUZZ
def test_asset_hub_refuses_invalid_text_without_a_server_error(
    case: schemathesis.Case, server: tuple[str, dict[str, str]]
) -> None:
    _no_server_error(case, server[0] + "/assethub/v1", TOKEN)


@derms_schema.parametrize()
@FUZZ
def test_the_derms_refuses_invalid_text_without_a_server_error(
    case: schemathesis.Case, server: tuple[str, dict[str, str]]
) -> None:
    _no_server_error(case, server[0] + "/derms/v1", TOKEN)


@bridge_schema.parametrize()
@FUZZ
def test_the_bridge_operations_api_refuses_invalid_text_without_a_server_error(
    case: schemathesis.Case, server: tuple[str, dict[str, str]]
) -> None:
    _no_server_error(case, server[0] + "/bridge/v1", TOKEN)


@vtn_schema.parametrize()
@FUZZ
def test_the_vtn_refuses_invalid_text_without_a_server_error(
    case: schemathesis.Case, server: tuple[str, dict[str, str]]
) -> None:
    # As a VEN and as the business logic: each role reaches operations (and fields) the other cannot.
    for role in ("ven", "bl"):
        _no_server_error(case, server[0] + EDGE_PREFIX, server[1][role])
