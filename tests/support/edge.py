"""Test support for the edge gateway: the VTN served on a loopback port (the ``openadr3`` client is a
synchronous httpx client with its own connection, so it needs a real server), clients made as the CLI
makes them, and validation of every response body against ``openadr3.yaml``'s schemas."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from functools import cache
from pathlib import Path
from typing import Any, TypeVar

import openadr3
import uvicorn
import yaml
from openapi_schema_validator import OAS30Validator

from derbridge.edge.auth import add_client
from derbridge.edge.domain import Role
from derbridge.embedded import EmbeddedSystem
from tests.support.embedded import free_port

SPEC = Path("/work/shared/openadr3-3.1.0/openadr3.yaml")
PREFIX = "/openadr3/3.1.0"
T = TypeVar("T")


@contextlib.asynccontextmanager
async def serve(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` on a loopback port in this event loop; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning", access_log=False)
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def off_loop(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a blocking call (the ``openadr3`` client) in a thread while this loop serves the VTN."""
    return await asyncio.to_thread(function, *args, **kwargs)


def make_client(system: EmbeddedSystem, head_end: str, role: Role = Role.VEN) -> tuple[str, str]:
    """A client as ``derbridge edge client add`` makes it: (client_id, client_secret)."""
    made = add_client(system.runtime.sync_engine("derms"), f"{head_end} {role.value}", head_end, role)
    return made.client_id, made.client_secret


async def ven_client(base: str, client: tuple[str, str], bl: bool = False) -> openadr3.OpenADRClient:
    """An ``openadr3`` client holding a token fetched through /auth/server and /auth/token."""
    token = await off_loop(openadr3.fetch_token, base + PREFIX, client[0], client[1])
    make = openadr3.create_bl_client if bl else openadr3.create_ven_client
    client = make(base + PREFIX, token)
    _open.append(client)
    return client


_open: list[openadr3.OpenADRClient] = []


def close_clients() -> None:
    """Close every ``openadr3`` client the test made (their connections)."""
    while _open:
        _open.pop().close()


@cache
def _spec() -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(SPEC.read_text())
    components = spec["components"]["schemas"]
    # The spec's ven and resource are allOf(objectMetadata, Bl…Request): objectType must then be both VEN
    # (objectTypes) and BL_VEN_REQUEST — unsatisfiable. Validate them without the request's objectType enum.
    for name in ("BlVenRequest", "BlResourceRequest"):
        components[name]["properties"]["objectType"] = {"type": "string"}
    # The notification's discriminator maps objectType EVENT to "#/components/schemas/EVENT", which does not
    # exist (the schemas are lower-case): validate by its oneOf alone.
    components["notification"]["properties"]["object"].pop("discriminator")
    return spec


def assert_schema(body: Any, schema: str, *, many: bool = False) -> None:
    """Assert ``body`` conforms to ``#/components/schemas/<schema>`` (or an array of it)."""
    spec = _spec()
    ref: dict[str, Any] = {"$ref": f"#/components/schemas/{schema}"}
    root = {"components": spec["components"], **({"type": "array", "items": ref} if many else ref)}
    OAS30Validator(root, format_checker=OAS30Validator.FORMAT_CHECKER).validate(body)


def assert_problem(response: Any, status: int) -> dict[str, Any]:
    """Assert a ``problem`` answer with ``status``."""
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert_schema(body, "problem")
    assert body["status"] == status
    return body
