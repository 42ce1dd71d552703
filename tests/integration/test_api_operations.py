"""What every API of the server shares: health, readiness, metrics, the service credential, problem details
for unknown paths, and the request body limit (413), on the whole in-process server.

Checks that never reach a database run on SQLite only; readiness and metrics run on both databases.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import httpx
import pytest

from derbridge.migrations.runner import upgrade
from derbridge.runtime import Runtime, migrate_all
from derbridge.settings import Settings
from tests.support.api import (
    TOKEN,
    ReusedPostgres,
    assert_problem,
    client,
    reused_postgres_databases,
    settings_for,
)
from tests.support.databases import migrate_from_template

LIMIT = 2048
"""The body limit of the ``limited`` server, in bytes."""

PROGRAM_BODY = {"program_code": "SUMMER-BYOT", "name": "Summer BYOT"}


@pytest.fixture(scope="module")
def reused_postgres() -> Iterator[ReusedPostgres]:
    """PostgreSQL databases migrated once for this module (see ReusedPostgres)."""
    yield from reused_postgres_databases()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """conftest's ``settings``, with PostgreSQL databases emptied for each test instead of created."""
    return settings_for(request, tmp_path)


@pytest.fixture
def sqlite_runtime(sqlite_settings: Settings, migrated_sqlite: Path) -> Runtime:
    migrate_from_template(sqlite_settings, migrated_sqlite)
    return Runtime(sqlite_settings)


@pytest.fixture
async def sqlite_api(sqlite_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """A client with the service credential on a server over SQLite."""
    async with client(sqlite_runtime) as api:
        yield api


@pytest.fixture
async def anonymous(sqlite_runtime: Runtime) -> AsyncIterator[httpx.AsyncClient]:
    """A client without any credential, on the same server as ``sqlite_api``."""
    async with client(sqlite_runtime, token=None) as api:
        yield api


@pytest.fixture
async def limited(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """A client on a server that refuses bodies over LIMIT bytes."""
    settings = Settings.model_validate(
        {"data_dir": tmp_path / "limited", "api_token": TOKEN, "server": {"max_body_bytes": LIMIT}}
    )
    migrate_all(settings)
    async with client(Runtime(settings)) as api:
        yield api


# --- health, readiness, metrics -------------------------------------------------------------------


async def test_healthz_answers_without_a_credential(anonymous: httpx.AsyncClient) -> None:
    response = await anonymous.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_checks_both_databases(api: httpx.AsyncClient) -> None:
    response = await api.get("/readyz", headers={"Authorization": ""})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert (body["checks"]["assethub"], body["checks"]["derms"]) == ("ok", "ok")
    assert set(body["checks"].values()) == {"ok"}


async def test_readyz_is_a_503_problem_naming_the_database_that_does_not_answer(tmp_path: Path) -> None:
    settings = Settings.model_validate(
        {
            "data_dir": tmp_path / "var",
            "api_token": TOKEN,
            "assethub": {"database_url": "postgresql://nobody@127.0.0.1:1/nothing"},  # nothing listens there
        }
    )
    upgrade("derms", settings.database_url("derms"))
    async with client(Runtime(settings)) as api:
        response = await api.get("/readyz")
    problem = assert_problem(response, 503, "not-ready")
    assert problem["checks"]["assethub"].startswith("unavailable: ")
    assert problem["checks"]["derms"] == "ok"


async def test_metrics_time_requests_by_route_template(api: httpx.AsyncClient) -> None:
    assert (await api.get("/assethub/v1/persons/P-404")).status_code == 404
    assert (await api.get("/derms/v1/programs")).status_code == 200
    response = await api.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert "# TYPE derbridge_http_request_seconds histogram" in text
    series = [line for line in text.splitlines() if line.startswith("derbridge_http_request_seconds_count{")]
    assert any(
        'system="assethub"' in s and 'route="/persons/{cis_person_id}"' in s and 'status="404"' in s for s in series
    ), series
    assert any('system="derms"' in s and 'route="/programs"' in s and 'status="200"' in s for s in series), series
    assert "P-404" not in text  # ids never become labels


# --- the service credential -----------------------------------------------------------------------

GUARDED = [
    ("GET", "/assethub/v1/persons", None),
    ("GET", "/assethub/v1/programs/SUMMER-BYOT", None),
    ("POST", "/assethub/v1/programs", PROGRAM_BODY),
    ("PATCH", "/assethub/v1/programs/SUMMER-BYOT", {"name": "x"}),
    ("GET", "/derms/v1/contacts", None),
    ("POST", "/derms/v1/programs", PROGRAM_BODY),
    ("POST", "/derms/v1/events", {"garbage": True}),  # refused for the credential before the body is judged
    ("POST", "/derms/v1/events/some-event/cancel", None),
    (
        "PUT",
        "/derms/v1/communication-status/ALPHA/n01",
        {"communication_status": "ONLINE", "last_communication_at": "2026-06-01T00:00:00Z", "source": "ALPHA"},
    ),
]

BAD_CREDENTIALS: list[dict[str, str]] = [
    {},
    {"Authorization": "Bearer wrong-token"},
    {"Authorization": f"Basic {TOKEN}"},
    {"Authorization": "Bearer "},
    {"Authorization": f"Bearer {TOKEN}x"},
]


def requests(
    api: httpx.AsyncClient, calls: Iterable[tuple[str, str, object]], headers: dict[str, str]
) -> list[httpx.Request]:
    return [api.build_request(method, url, json=body, headers=headers) for method, url, body in calls]


async def test_every_call_without_the_service_credential_is_a_401_problem(
    anonymous: httpx.AsyncClient, sqlite_api: httpx.AsyncClient
) -> None:
    for headers in BAD_CREDENTIALS:
        for request in requests(anonymous, GUARDED, headers):
            response = await anonymous.send(request)
            problem = assert_problem(response, 401, "unauthorized")
            assert response.headers["www-authenticate"] == "Bearer", request.url
            assert "Authorization: Bearer" in problem["detail"]
            assert "errors" not in problem
    # Nothing was written by the refused calls.
    assert_problem(await sqlite_api.get("/assethub/v1/programs/SUMMER-BYOT"), 404)
    assert_problem(await sqlite_api.get("/derms/v1/programs/SUMMER-BYOT"), 404)
    assert_problem(await sqlite_api.get("/derms/v1/communication-status/ALPHA/n01"), 404)
    # The right credential passes on both systems.
    assert (await sqlite_api.get("/assethub/v1/persons")).status_code == 200
    assert (await sqlite_api.get("/derms/v1/contacts")).status_code == 200


# --- unknown paths and methods ----------------------------------------------------------------------


async def test_unknown_paths_and_methods_are_problems(sqlite_api: httpx.AsyncClient) -> None:
    for path in ("/nowhere", "/assethub/v1/nowhere", "/derms/v1/nowhere", "/derms/v2/events"):
        problem = assert_problem(await sqlite_api.get(path), 404, "not-found")
        assert problem["instance"] == path
        assert "OpenAPI" in problem["detail"]
    method = assert_problem(await sqlite_api.delete("/assethub/v1/programs"), 405, "method-not-allowed")
    assert method["instance"] == "/assethub/v1/programs"
    assert_problem(await sqlite_api.put("/derms/v1/events"), 405, "method-not-allowed")
    for document in ("/assethub/v1/openapi.json", "/derms/v1/openapi.json"):
        openapi = await sqlite_api.get(document)
        assert openapi.status_code == 200
        assert openapi.json()["openapi"].startswith("3.")


# --- the body limit -------------------------------------------------------------------------------


async def chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    """``data`` as a streamed (chunked) body without a declared length."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_a_body_over_the_limit_is_a_413_problem(limited: httpx.AsyncClient) -> None:
    big = json.dumps(PROGRAM_BODY | {"name": "x" * (LIMIT + 1)}).encode()
    response = await limited.post("/assethub/v1/programs", content=big, headers={"content-type": "application/json"})
    problem = assert_problem(response, 413, "payload-too-large")
    assert str(LIMIT) in problem["detail"]
    assert_problem(await limited.get("/assethub/v1/programs/SUMMER-BYOT"), 404)

    # A declared length over the limit is refused before any of the body is read.
    declared = await limited.post(
        "/derms/v1/events",
        content=json.dumps(PROGRAM_BODY).encode(),
        headers={"content-type": "application/json", "content-length": str(LIMIT + 1)},
    )
    assert str(LIMIT) in assert_problem(declared, 413, "payload-too-large")["detail"]
    assert_problem(await limited.get("/derms/v1/programs/SUMMER-BYOT"), 404)

    # At the limit exactly, a body is read as usual.
    padded = json.dumps(PROGRAM_BODY | {"name": "y"}).encode()
    exact = padded[:-1] + b" " * (LIMIT - len(padded)) + b"}"
    assert len(exact) == LIMIT
    accepted = await limited.post("/assethub/v1/programs", content=exact, headers={"content-type": "application/json"})
    assert accepted.status_code == 201, accepted.text


async def test_a_streamed_body_is_counted_as_it_arrives(limited: httpx.AsyncClient) -> None:
    big = json.dumps(PROGRAM_BODY | {"name": "x" * (3 * LIMIT)}).encode()
    for url in ("/assethub/v1/programs", "/derms/v1/events"):
        response = await limited.post(url, content=chunks(big, 512), headers={"content-type": "application/json"})
        assert "content-length" not in response.request.headers
        problem = assert_problem(response, 413, "payload-too-large")
        assert str(LIMIT) in problem["detail"]
    assert (await limited.get("/assethub/v1/programs")).json()["items"] == []
    assert (await limited.get("/derms/v1/events")).json()["items"] == []

    small = json.dumps(PROGRAM_BODY).encode()
    streamed = await limited.post(
        "/assethub/v1/programs", content=chunks(small, 8), headers={"content-type": "application/json"}
    )
    assert streamed.status_code == 201, streamed.text
    assert streamed.json()["program_code"] == "SUMMER-BYOT"


async def test_the_default_limit_refuses_a_declared_length_over_16_mib(sqlite_api: httpx.AsyncClient) -> None:
    response = await sqlite_api.post(
        "/assethub/v1/programs",
        content=b"{}",
        headers={"content-type": "application/json", "content-length": str(16 * 1024 * 1024 + 1)},
    )
    assert str(16 * 1024 * 1024) in assert_problem(response, 413, "payload-too-large")["detail"]


async def test_readyz_of_a_bridge_process_checks_the_outboxes_it_relays_and_its_worker(tmp_path: Path) -> None:
    # `serve bridge`: its own database answers, but the Asset Hub database whose outbox it relays does not —
    # it relays nothing, so it is not ready, and says which.
    from derbridge.api.app import create_app

    settings = Settings.model_validate(
        {
            "data_dir": tmp_path / "var",
            "api_token": TOKEN,
            "assethub": {"database_url": "postgresql://nobody@127.0.0.1:1/nothing"},  # nothing listens there
        }
    )
    upgrade("derms", settings.database_url("derms"))
    upgrade("bridge", settings.database_url("bridge"))
    runtime = Runtime(settings)
    app = create_app(runtime, components=("bridge",), run_bridge=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://derbridge.test") as api:
            response = await api.get("/readyz")
    problem = assert_problem(response, 503, "not-ready")
    assert problem["checks"]["bridge"] == "ok"
    assert problem["checks"]["assethub outbox"].startswith("unavailable: ")
    assert problem["checks"]["derms outbox"] == "ok"
    assert problem["checks"]["bridge worker"] == "ok"
    assert "database does not answer" in problem["detail"]


async def test_readyz_of_a_bridge_process_is_ready_when_its_outboxes_answer(tmp_path: Path) -> None:
    from derbridge.api.app import create_app

    settings = Settings.model_validate({"data_dir": tmp_path / "var", "api_token": TOKEN})
    migrate_all(settings)
    runtime = Runtime(settings)
    app = create_app(runtime, components=("bridge",), run_bridge=True)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://derbridge.test") as api:
            response = await api.get("/readyz")
    assert response.status_code == 200, response.text
    assert response.json()["checks"] == {
        "bridge": "ok",
        "assethub outbox": "ok",
        "derms outbox": "ok",
        "bridge worker": "ok",
    }
