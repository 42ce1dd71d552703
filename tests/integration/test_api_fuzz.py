"""schemathesis over each of our own OpenAPI documents — Asset Hub, the DERMS and the bridge's operations API:
no generated request makes a 5xx, and every response conforms to what the document says (status code,
content type, body schema). Lax input — ``0`` taken for a date-time, ``false`` for a number, as pydantic
coerces — is accepted, not refused: schemathesis's negative-data check is left out on purpose.

The whole server runs on a loopback port in a thread of its own, on a small utility (a CIS extract and a
program) so that generated ids sometimes name real objects; few examples per operation keep it near a
minute on two cores. (The VTN has its own: tests/edge/test_vtn_fuzz.py.)"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
import uvicorn
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from derbridge.api.app import create_asgi
from derbridge.runtime import Runtime, migrate_all
from derbridge.settings import Settings
from tests.support.cis_rows import cis_row
from tests.support.embedded import free_port
from tests.support.enrollment import load_customers

pytestmark = pytest.mark.slow  # a fuzzer (schemathesis) over every operation: make test, not test-fast

TOKEN = "fuzz-token"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Both systems and the bridge's operations API on fresh SQLite databases, on a loopback port."""
    workdir: Path = tmp_path_factory.mktemp("api-fuzz")
    configured = Settings(data_dir=workdir / "var", api_token=TOKEN)
    migrate_all(configured)
    runtime = Runtime(configured)
    load_customers(runtime, workdir, [cis_row(n) for n in range(1, 4)])
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_asgi(runtime), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    base = f"http://127.0.0.1:{port}"
    program = {"program_code": "FUZZ", "name": "Fuzz program", "status": "ACTIVE"}
    assert httpx.post(base + "/assethub/v1/programs", json=program, headers=_auth()).status_code == 201
    try:
        yield base
    finally:
        server.should_exit = True
        thread.join()
        runtime.close_sync()


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def assethub(server: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(server + "/assethub/v1/openapi.json")


@pytest.fixture(scope="module")
def derms(server: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(server + "/derms/v1/openapi.json")


@pytest.fixture(scope="module")
def bridge(server: str) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(server + "/bridge/v1/openapi.json")


assethub_schema = schemathesis.pytest.from_fixture("assethub")
derms_schema = schemathesis.pytest.from_fixture("derms")
bridge_schema = schemathesis.pytest.from_fixture("bridge")
FUZZ = settings(max_examples=4, deadline=None, suppress_health_check=list(HealthCheck))


def _call(case: schemathesis.Case, server: str, prefix: str) -> None:
    case.call_and_validate(base_url=server + prefix, headers=_auth(), checks=CHECKS)


@assethub_schema.parametrize()
@FUZZ
def test_asset_hub_answers_every_request_as_documented(case: schemathesis.Case, server: str) -> None:
    _call(case, server, "/assethub/v1")


@derms_schema.parametrize()
@FUZZ
def test_the_derms_answers_every_request_as_documented(case: schemathesis.Case, server: str) -> None:
    _call(case, server, "/derms/v1")


@bridge_schema.parametrize()
@FUZZ
def test_the_bridge_operations_api_answers_every_request_as_documented(case: schemathesis.Case, server: str) -> None:
    _call(case, server, "/bridge/v1")
