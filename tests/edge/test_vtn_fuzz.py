"""schemathesis over the VTN's own OpenAPI document: no generated request makes a 5xx, with a VEN's and a
business logic's token alike. The VTN runs on a loopback port in a thread of its own (its own event loop);
few examples per operation, so it stays well under a minute on two cores."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings

from derbridge.edge.auth import add_client
from derbridge.edge.domain import Role
from derbridge.edge.system import build
from derbridge.infra.clock import SystemClock
from derbridge.runtime import Runtime, migrate_all
from derbridge.settings import Settings
from tests.support.embedded import free_port

pytestmark = pytest.mark.slow  # a fuzzer (schemathesis) against a served VTN: make test, not test-fast


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, str]]]:
    """The VTN alone on a fresh DERMS database, served on a loopback port; a token per role."""
    configured = Settings(data_dir=tmp_path_factory.mktemp("fuzz") / "var", api_token="test-token")
    # The fuzzer is one address making thousands of refused calls on purpose (the token endpoint's among
    # them): under the default rate limits it would be answered 429 after 20 and reach no operation.
    configured.edge.auth_failures_per_address = "1000000/minute"
    configured.edge.token_requests_per_address = "1000000/minute"
    configured.edge.token_failures_per_client = "1000000/minute"
    migrate_all(configured)
    runtime = Runtime(configured)
    app = build(configured, runtime.async_engine("derms"), clock=SystemClock()).app
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", access_log=False))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    tokens: dict[str, str] = {}
    for role in Role:
        made = add_client(runtime.sync_engine("derms"), role.value, "FUZZ", role)
        answer = httpx.post(
            base + "/auth/token",
            data={"grant_type": "client_credentials", "client_id": made.client_id, "client_secret": made.client_secret},
        )
        tokens[role.value] = answer.json()["access_token"]
    try:
        yield base, tokens
    finally:
        server.should_exit = True
        thread.join()
        runtime.close_sync()


@pytest.fixture(scope="module")
def openapi(edge: tuple[str, dict[str, str]]) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(edge[0] + "/openapi.json")


schema = schemathesis.pytest.from_fixture("openapi")


@schema.parametrize()
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck))
def test_no_server_error(case: schemathesis.Case, edge: tuple[str, dict[str, str]]) -> None:
    base, tokens = edge
    for role in ("ven", "bl"):
        response = case.call(base_url=base, headers={"Authorization": f"Bearer {tokens[role]}"})
        assert response.status_code < 500, (
            f"{case.method} {case.path} as {role}: {response.status_code} {response.text}"
        )


def test_the_document_lists_every_operation(openapi: schemathesis.BaseSchema) -> None:
    paths = set(httpx.get(str(openapi.location or "")).json()["paths"]) if openapi.location else set()
    assert {
        "/programs",
        "/events",
        "/reports",
        "/subscriptions",
        "/vens",
        "/resources",
        "/auth/server",
        "/auth/token",
    } <= paths
