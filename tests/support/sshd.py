"""A real OpenSSH server on a loopback port, for tests of the SFTP file store.

The server is Debian's ``/usr/sbin/sshd`` (package ``openssh-server``) run in the foreground with its own
configuration, host key, client key and ``authorized_keys`` in a temporary directory: it never touches the
machine's ``/etc/ssh`` and never listens on port 22. Without ``sshd`` the tests that use it are skipped,
visibly; under ``DERBRIDGE_REQUIRE_SERVICES=1`` (CI) they fail instead.

Use it with ``pytest_plugins = ["tests.support.sshd"]`` and the ``sshd_server`` fixture, or with the
``running_sshd()`` context manager for a server of your own (e.g. one a test stops and restarts).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.support.embedded import free_port
from tests.support.services import service_unavailable

SSHD = Path("/usr/sbin/sshd")
SSH_KEYGEN = "ssh-keygen"
# Debian's sshd, when started as root, insists on this empty directory for its privilege-separated child.
PRIVSEP_DIR = Path("/run/sshd")
START_TIMEOUT = 10.0
START_ATTEMPTS = 3


def _keygen(path: Path, comment: str) -> None:
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)],
        check=True,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid``, read from /proc.

    sshd serves each connection in a forked child (which calls setsid, so a process-group kill misses it),
    and killing only the listener leaves established sessions alive. A test that "stops the server" must
    drop those connections too, so we collect the whole tree first.
    """
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:  # the process ended while we looked
            continue
        # The command name (field 2) may hold spaces and parentheses: the ppid follows the last ")".
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry.name))
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in children.get(pending.pop(), []):
            found.append(child)
            pending.append(child)
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` still runs; a zombie (killed, not yet reaped by a lazy init) counts as gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@dataclass
class SshServer:
    """One sshd with its own keys; ``start``/``stop`` may be called again (same port, same host key)."""

    workdir: Path
    port: int
    host: str = "127.0.0.1"
    username: str = field(default_factory=getpass.getuser)
    process: subprocess.Popen[bytes] | None = None

    @property
    def client_key(self) -> Path:
        """The private key the server accepts (listed in its authorized_keys)."""
        return self.workdir / "client_key"

    @property
    def other_client_key(self) -> Path:
        """A valid key the server does not accept."""
        return self.workdir / "other_client_key"

    @property
    def known_hosts(self) -> Path:
        """A known_hosts file that lists this server's host key for ``[host]:port``."""
        return self.workdir / "known_hosts"

    @property
    def store_root(self) -> Path:
        """An empty directory the SFTP store may use as its root (an absolute path on this machine)."""
        return self.workdir / "store"

    @property
    def log_path(self) -> Path:
        """sshd's log (``-e``), quoted when the server does not come up."""
        return self.workdir / "sshd.log"

    def prepare(self) -> None:
        """Generate the keys and write authorized_keys, known_hosts and sshd_config."""
        _keygen(self.workdir / "host_key", "derbridge-test-host")
        _keygen(self.client_key, "derbridge-test-client")
        _keygen(self.other_client_key, "derbridge-test-stranger")
        shutil.copyfile(self.workdir / "client_key.pub", self.workdir / "authorized_keys")
        self.store_root.mkdir()
        self.configure()

    def configure(self) -> None:
        """Write known_hosts and sshd_config for the current port (again after the port changed)."""
        host_key = (self.workdir / "host_key.pub").read_text().split()
        # A non-default port is written "[host]:port" in known_hosts; asyncssh and OpenSSH both expect that.
        self.known_hosts.write_text(f"[{self.host}]:{self.port} {host_key[0]} {host_key[1]}\n")
        config = f"""\
Port {self.port}
ListenAddress {self.host}
HostKey {self.workdir / "host_key"}
PidFile {self.workdir / "sshd.pid"}
AuthorizedKeysFile {self.workdir / "authorized_keys"}
AllowUsers {self.username}
StrictModes no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
PermitRootLogin prohibit-password
Subsystem sftp internal-sftp
PrintMotd no
LogLevel INFO
"""
        (self.workdir / "sshd_config").write_text(config)

    def start(self) -> None:
        """Start sshd in the foreground and wait until it greets clients."""
        if self.process is not None:
            raise RuntimeError("sshd is already running")
        if os.geteuid() == 0 and not PRIVSEP_DIR.is_dir():
            PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
        # Output goes to a file, not a pipe: a pipe nobody drains would block sshd, and an open pipe at the
        # end of a test is a ResourceWarning (an error under filterwarnings=error).
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(SSHD), "-D", "-e", "-f", str(self.workdir / "sshd_config")],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise RuntimeError(f"sshd exited at start:\n{self.log_path.read_text()}")
            if self._greets():
                return
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"sshd did not answer within {START_TIMEOUT}s:\n{self.log_path.read_text()}")

    def _greets(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1) as probe:
                return probe.recv(8).startswith(b"SSH-")
        except OSError:
            return False

    def stop(self) -> None:
        """Kill the listener and every session it serves: clients see their connection drop."""
        if self.process is None:
            return
        process, self.process = self.process, None
        sessions = _descendants(process.pid)
        for pid in [process.pid, *sessions]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(timeout=10)
        # Session processes were children of the listener; once it is gone they are reaped by init.
        # Wait until they are really gone, so "stopped" means no connection survives.
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and any(_alive(pid) for pid in sessions):
            time.sleep(0.01)


@contextlib.contextmanager
def running_sshd() -> Iterator[SshServer]:
    """A started sshd on a free loopback port, stopped and cleaned up on exit; skips without sshd."""
    if not (SSHD.is_file() and os.access(SSHD, os.X_OK)):
        service_unavailable(f"{SSHD} is not installed (apt-get install openssh-server): SFTP tests skipped")
    if shutil.which(SSH_KEYGEN) is None:
        service_unavailable(f"{SSH_KEYGEN} is not installed: SFTP tests skipped")
    with tempfile.TemporaryDirectory(prefix="derbridge-sshd-") as tmp:
        server = SshServer(workdir=Path(tmp), port=free_port())
        server.prepare()
        try:
            for attempt in range(1, START_ATTEMPTS + 1):
                try:
                    server.start()
                    break
                except RuntimeError:
                    # The free port may have been taken between our probe and sshd's bind: try another.
                    if attempt == START_ATTEMPTS:
                        raise
                    server.port = free_port()
                    server.configure()
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="module")
def sshd_server() -> Iterator[SshServer]:
    """One sshd shared by a test module: host, port, username, client_key, known_hosts, store_root."""
    with running_sshd() as server:
        yield server
