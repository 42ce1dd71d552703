"""Fixtures for the transport tests: a RabbitMQ virtual host of their own, and addresses nobody answers on.

AMQP tests read ``DERBRIDGE_TEST_AMQP_URL`` (e.g. ``amqp://guest:guest@127.0.0.1:5672/``, a user allowed
everything) and create a fresh virtual host per test module with ``rabbitmqctl`` (which must run as a user
that can talk to the node, root on the CI machine), deleted afterwards: no test sees another module's
queues, and nothing is left on the broker. Without the variable, a broker that answers or ``rabbitmqctl``
they skip visibly; under ``DERBRIDGE_REQUIRE_SERVICES=1`` (CI) they fail instead (the rule of
``tests/conftest.py``).

Use it with ``pytest_plugins = ["tests.support.transport"]`` (not by importing from it: pytest must load it
first to rewrite its assertions); for annotations, import ``AmqpVhost`` under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import uuid
from collections.abc import Iterator

import pytest
from yarl import URL

from tests.support.services import service_unavailable

AMQP_ENV = "DERBRIDGE_TEST_AMQP_URL"
RABBITMQCTL = "rabbitmqctl"
RABBITMQCTL_TIMEOUT = 30.0


def rabbitmqctl(*args: str) -> str:
    """Run ``rabbitmqctl ARGS`` quietly and return its output; raises on failure."""
    completed = subprocess.run(
        [RABBITMQCTL, "-q", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=RABBITMQCTL_TIMEOUT,
        stdin=subprocess.DEVNULL,
    )
    return completed.stdout


class AmqpVhost:
    """A virtual host created for the tests: its name, the URL that connects to it, and its admin commands."""

    def __init__(self, name: str, url: str) -> None:
        self.name = name
        self.url = url

    def ctl(self, command: str, *args: str) -> str:
        """``rabbitmqctl COMMAND -p VHOST ARGS``: a command about this virtual host only."""
        return rabbitmqctl(command, "-p", self.name, *args)

    def connections(self) -> list[str]:
        """The names of the client connections to this virtual host (``list_connections`` has no ``-p``)."""
        rows = json.loads(rabbitmqctl("list_connections", "--formatter", "json", "name", "vhost"))
        return [str(row["name"]) for row in rows if row["vhost"] == self.name]

    def close_connections(self, reason: str) -> int:
        """Have the broker close every client connection to this virtual host; how many it closed."""
        output = self.ctl("close_all_connections", reason)  # "Closed 2 connections"
        return int(output.split()[1])


@pytest.fixture(scope="module")
def amqp_vhost() -> Iterator[AmqpVhost]:
    """A fresh RabbitMQ virtual host for the test module (guest may do everything there), deleted after."""
    base = os.environ.get(AMQP_ENV)
    if not base:
        service_unavailable(f"{AMQP_ENV} is not set: RabbitMQ tests skipped")
    assert base is not None
    server = URL(base)
    try:
        socket.create_connection((server.host or "127.0.0.1", server.port or 5672), timeout=5).close()
    except OSError as error:
        service_unavailable(f"RabbitMQ at {AMQP_ENV} does not answer: {error}")
    if shutil.which(RABBITMQCTL) is None:
        service_unavailable(f"{RABBITMQCTL} is not on PATH: RabbitMQ tests skipped")
    name = f"derbridge_test_{uuid.uuid4().hex[:10]}"
    try:
        rabbitmqctl("add_vhost", name)
        rabbitmqctl("set_permissions", "-p", name, server.user or "guest", ".*", ".*", ".*")
    except (OSError, subprocess.SubprocessError) as error:
        service_unavailable(f"{RABBITMQCTL} could not create a virtual host: {error}")
    try:
        # The vhost is the URL's path; with_path drops the query (heartbeat=…), so put it back.
        yield AmqpVhost(name, str(server.with_path("/" + name).with_query(server.query)))
    finally:
        rabbitmqctl("delete_vhost", name)


@pytest.fixture
def amqp_vhost_url(amqp_vhost: AmqpVhost) -> str:
    """The URL of the module's fresh virtual host."""
    return amqp_vhost.url


@pytest.fixture
def closed_port() -> int:
    """A loopback TCP port nobody listens on (just released by the OS, so nothing took it again yet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port
