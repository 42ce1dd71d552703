"""The distributed topology as processes, for the fault suite: its own PostgreSQL databases and RabbitMQ
virtual host, two ``serve assethub``, two ``serve derms`` and two ``serve bridge`` processes, and a
:class:`~tests.support.proxy.TcpProxy` between the processes and every server they use:

```
  processes ──► proxy "postgres" ──► PostgreSQL (DERBRIDGE_TEST_POSTGRES_URL)
            ──► proxy "rabbitmq" ──► RabbitMQ   (DERBRIDGE_TEST_AMQP_URL, a vhost of its own)
  bridges, aggregators, checks ──► proxy "assethub-api" ──► assethub-1 | assethub-2   (round-robin)
                               ──► proxy "derms-api"    ──► derms-1 | derms-2         (the VTN too)
                               ──► proxy "bridge-api"   ──► bridge-1 | bridge-2       (operations API)
```

Set-up steps (databases, migrations, CIS import, edge clients) and the ``derbridge`` commands the checks run
go to the servers directly, never through a proxy: they are the operator's, not the system's.

Every process logs to ``<workdir>/logs/<name>.log``; the work dir is kept when a fault failed.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import resource
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import httpx
import psycopg
from sqlalchemy.engine import make_url
from yarl import URL

from tests.support.proxy import ProxyHub

ROOT = Path(__file__).resolve().parents[2]
Kind = Literal["assethub", "derms", "bridge"]
KINDS: tuple[Kind, ...] = ("assethub", "derms", "bridge")
API_TOKEN = "fault-suite-token"
EDGE_SECRET = "fault-suite-edge-token-key-0123456789abcdef"
READY_SECONDS = 120.0
PG_CLUSTER = os.environ.get("DERBRIDGE_FAULT_PG_CLUSTER", "15 main").split()


def _ephemeral_range() -> range:
    try:
        low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


_taken: set[int] = set()


def free_port() -> int:
    """A loopback port for a replica, from below the kernel's ephemeral range: a port the kernel hands out
    itself (bind to 0) can be taken again by any outgoing connection, or a proxy's listener, in the seconds
    before the replica binds it — which once made a replica start on a port already in use. A replica keeps
    its port through restarts, so the balancer in front of it never changes."""
    ephemeral = _ephemeral_range()
    candidates = [port for port in range(20000, 32000) if port not in ephemeral and port not in _taken]
    random.shuffle(candidates)
    for port in candidates:
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        _taken.add(port)
        return port
    raise RuntimeError("no free loopback port below the ephemeral range")


def rabbitmqctl(*args: str, timeout: float = 60.0) -> str:
    """``rabbitmqctl -q ARGS``; raises on failure."""
    done = subprocess.run(
        ["rabbitmqctl", "-q", *args],
        check=True,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    return done.stdout


@dataclass
class Service:
    """One ``derbridge serve KIND`` process on its own loopback port."""

    name: str
    kind: Kind
    port: int
    log: Path
    process: subprocess.Popen[bytes] | None = None
    starts: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@dataclass
class Topology:
    """The processes, proxies, databases and virtual host of one fault-suite run."""

    workdir: Path
    postgres_url: str
    amqp_url: str
    real_restarts: bool = False
    proxies: ProxyHub = field(default_factory=ProxyHub)
    services: dict[str, Service] = field(default_factory=dict)
    databases: dict[str, str] = field(default_factory=dict)
    vhost: str = ""
    env: dict[str, str] = field(default_factory=dict)
    direct_env: dict[str, str] = field(default_factory=dict)

    # --- set-up --------------------------------------------------------------------------------------

    def start(self) -> None:
        """Databases, vhost, migrations, proxies, then the six processes, each ready."""
        # The proxies hold two sockets per connection of six processes and the aggregators: room for them.
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
        (self.workdir / "logs").mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        admin = self._admin_conninfo()
        suffix = uuid.uuid4().hex[:8]
        with psycopg.connect(admin, autocommit=True) as connection:
            for kind in KINDS:
                name = f"derbridge_fault_{kind}_{suffix}"
                connection.execute(f'CREATE DATABASE "{name}"')
                self.databases[kind] = name
        self.vhost = f"derbridge_fault_{suffix}"
        amqp = URL(self.amqp_url)
        rabbitmqctl("add_vhost", self.vhost)
        rabbitmqctl("set_permissions", "-p", self.vhost, amqp.user or "guest", ".*", ".*", ".*")

        pg = make_url(admin)
        postgres = self.proxies.add("postgres", [(pg.host or "127.0.0.1", pg.port or 5432)])
        rabbit = self.proxies.add("rabbitmq", [(amqp.host or "127.0.0.1", amqp.port or 5672)])
        for kind in KINDS:
            for i in (1, 2):
                name = f"{kind}-{i}"
                self.services[name] = Service(name, kind, free_port(), self.workdir / "logs" / f"{name}.log")
        balancers = {
            kind: self.proxies.add(
                f"{kind}-api", [("127.0.0.1", s.port) for s in self.services.values() if s.kind == kind]
            )
            for kind in KINDS
        }

        base = {k: v for k, v in os.environ.items() if not k.startswith("DERBRIDGE_")}
        base |= {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), str(ROOT), os.environ.get("PYTHONPATH")])),
            "PYTHONUNBUFFERED": "1",
            "DERBRIDGE_DATA_DIR": str(self.workdir / "data"),  # the shared file store (claim checks)
            "DERBRIDGE_API_TOKEN": API_TOKEN,
            "DERBRIDGE_EDGE__TOKEN_SECRET": EDGE_SECRET,
            "DERBRIDGE_LOG_LEVEL": "WARNING",
            "DERBRIDGE_LOG_JSON": "true",
        }
        self.direct_env = base | {
            f"DERBRIDGE_{kind.upper()}__DATABASE_URL": self._db_url(admin, kind, None) for kind in KINDS
        }
        amqp_proxied = amqp.with_host("127.0.0.1").with_port(rabbit.port).with_path("/" + self.vhost)
        self.env = base | {
            f"DERBRIDGE_{kind.upper()}__DATABASE_URL": self._db_url(admin, kind, postgres.port) for kind in KINDS
        }
        self.env |= {
            "DERBRIDGE_BRIDGE__TRANSPORT": "amqp",
            # A short heartbeat: a stopped (SIGSTOP) worker's channel is closed, and its unacknowledged
            # messages handed to the other worker, within seconds.
            "DERBRIDGE_BRIDGE__AMQP_URL": str(amqp_proxied.with_query({"heartbeat": "5"})),
            "DERBRIDGE_BRIDGE__TARGETS": json.dumps(
                {
                    "assethub": f"http://127.0.0.1:{balancers['assethub'].port}",
                    "derms": f"http://127.0.0.1:{balancers['derms'].port}",
                }
            ),
            "DERBRIDGE_BRIDGE__LEASE_SECONDS": "5",
            "DERBRIDGE_BRIDGE__POLL_SECONDS": "0.2",
            "DERBRIDGE_BRIDGE__HTTP_TIMEOUT_SECONDS": "10",
            "DERBRIDGE_BRIDGE__RETRY__BASE_SECONDS": "0.2",
            "DERBRIDGE_BRIDGE__RETRY__CAP_SECONDS": "3",
            "DERBRIDGE_BRIDGE__RETRY__MAX_ATTEMPTS": "1000",
            "DERBRIDGE_BRIDGE__PARK__BASE_SECONDS": "2",
            "DERBRIDGE_BRIDGE__PARK__CAP_SECONDS": "10",
        }
        self.migrate()
        for service in self.services.values():
            self.spawn(service)
        for service in self.services.values():
            self.wait_ready(service)

    def _admin_conninfo(self) -> str:
        return make_url(self.postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)

    def _db_url(self, admin: str, kind: Kind, port: int | None) -> str:
        url = make_url(admin).set(database=self.databases[kind])
        if port is not None:
            url = url.set(host="127.0.0.1", port=port)
        return url.render_as_string(hide_password=False)

    def migrate(self) -> None:
        """The one migration step before any replica starts (``derbridge db upgrade``), straight to the server."""
        self.cli("db", "upgrade")

    def cli(self, *args: str, timeout: float = 300.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        """A ``derbridge`` command as an operator runs it, on the servers directly."""
        done = subprocess.run(
            [sys.executable, "-m", "derbridge", *args],
            cwd=self.workdir,
            env=self.direct_env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"derbridge {shlex.join(args)} exited {done.returncode}: {done.stderr[-3000:]}")
        return done

    def url(self, kind: Kind) -> str:
        """The balanced URL of a kind's two replicas (through its proxy)."""
        return f"http://127.0.0.1:{self.proxies.proxies[f'{kind}-api'].port}"

    # --- processes -----------------------------------------------------------------------------------

    def spawn(self, service: Service) -> None:
        service.starts += 1
        with service.log.open("ab") as log:
            log.write(f"\n=== start {service.starts} at {time.strftime('%H:%M:%S')} ===\n".encode())
            log.flush()
            service.process = subprocess.Popen(
                [sys.executable, "-m", "derbridge", "serve", service.kind, "--port", str(service.port)],
                cwd=self.workdir,
                env=self.service_env(service.kind),
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
            )

    def service_env(self, kind: Kind) -> dict[str, str]:
        """What a replica of ``kind`` is given, as docs/operations.md says: a system's process only its own
        database and the secrets it uses; the bridge every database (it relays both outboxes)."""
        if kind == "bridge":
            return self.env
        others = {f"DERBRIDGE_{other.upper()}__DATABASE_URL" for other in KINDS if other != kind}
        others |= {key for key in self.env if key.startswith("DERBRIDGE_BRIDGE__")}
        if kind == "assethub":
            others.add("DERBRIDGE_EDGE__TOKEN_SECRET")
        return {key: value for key, value in self.env.items() if key not in others}

    def wait_ready(self, service: Service, timeout: float = READY_SECONDS) -> None:
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            assert service.process is not None
            if service.process.poll() is not None:
                raise AssertionError(f"{service.name} exited {service.process.returncode}: {self.tail(service)}")
            try:
                answer = httpx.get(f"{service.url}/readyz", timeout=5)
                if answer.status_code == 200:
                    return
                last = f"{answer.status_code} {answer.text[:300]}"
            except httpx.HTTPError as error:
                last = type(error).__name__
            time.sleep(0.3)
        raise AssertionError(f"{service.name} not ready after {timeout:g} s ({last}): {self.tail(service)}")

    def tail(self, service: Service, chars: int = 3000) -> str:
        return service.log.read_text(errors="replace")[-chars:] if service.log.exists() else ""

    def sigkill(self, name: str) -> None:
        service = self.services[name]
        assert service.process is not None
        service.process.send_signal(signal.SIGKILL)
        service.process.wait(timeout=30)

    def restart(self, name: str) -> None:
        """Start a killed process again, on the same port, and wait until it is ready."""
        service = self.services[name]
        self.spawn(service)
        self.wait_ready(service)

    def sigstop(self, name: str) -> None:
        process = self.services[name].process
        assert process is not None
        process.send_signal(signal.SIGSTOP)

    def sigcont(self, name: str) -> None:
        process = self.services[name].process
        assert process is not None
        process.send_signal(signal.SIGCONT)

    def alive(self) -> dict[str, bool]:
        return {n: s.process is not None and s.process.poll() is None for n, s in self.services.items()}

    # --- server restarts -----------------------------------------------------------------------------

    def postgres_restart(self, down_seconds: float) -> str:
        """What clients see of a PostgreSQL restart: every connection reset, new ones refused for a while.
        With ``real_restarts`` the machine's cluster really restarts (CI's own step only)."""
        if self.real_restarts:
            subprocess.run(
                ["pg_ctlcluster", "--skip-systemctl-redirect", *PG_CLUSTER, "restart"], check=True, timeout=120
            )
            return "real: pg_ctlcluster restart"
        self.proxies.refuse(["postgres"])
        time.sleep(down_seconds)
        self.proxies.heal(["postgres"])
        return f"emulated: connections reset, refused for {down_seconds:g} s"

    def rabbitmq_restart(self, down_seconds: float) -> str:
        """What clients see of a RabbitMQ restart (or the real thing with ``real_restarts``)."""
        if self.real_restarts:
            rabbitmqctl("stop_app", timeout=120)
            time.sleep(down_seconds)
            rabbitmqctl("start_app", timeout=120)
            return "real: rabbitmqctl stop_app, start_app"
        self.proxies.refuse(["rabbitmq"])
        time.sleep(down_seconds)
        self.proxies.heal(["rabbitmq"])
        return f"emulated: connections reset, refused for {down_seconds:g} s"

    # --- tear-down -----------------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop every process, the proxies; drop the databases and the vhost."""
        for service in self.services.values():
            process = service.process
            if process is None or process.poll() is not None:
                continue
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGCONT)
                process.terminate()
        for service in self.services.values():
            if service.process is not None:
                try:
                    service.process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    service.process.kill()
                    service.process.wait(timeout=20)
        self.proxies.close()
        if self.databases:
            with psycopg.connect(self._admin_conninfo(), autocommit=True) as connection:
                for name in self.databases.values():
                    connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            self.databases.clear()
        if self.vhost:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                rabbitmqctl("delete_vhost", self.vhost)
            self.vhost = ""
