"""A file store on an SFTP server (OpenSSH), through asyncssh.

The store keeps one SSH connection with one SFTP session, opened on first use. When an operation finds
the connection dropped (server restarted, network cut), the store reconnects once and repeats the
operation — every operation here may be repeated safely. If that fails too, or the server cannot be
reached at all, :class:`FileStoreUnavailable` tells the caller to retry later.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import secrets
import warnings
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from cryptography.utils import CryptographyDeprecationWarning

# asyncssh still names cryptography's deprecated DSA classes at import (cryptography >= 48 warns on that
# access); we never use DSA keys, so that one warning is silenced here instead of printed by every command.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="DSA is deprecated", category=CryptographyDeprecationWarning)
    import asyncssh

from derbridge.contracts.device_score_transfer import FileLocation
from derbridge.filestore.base import (
    PARTIAL_SUFFIX,
    FileNotInStore,
    FileStore,
    FileStoreError,
    FileStoreUnavailable,
    validate_key,
)

T = TypeVar("T")

KEEPALIVE_INTERVAL = 15.0
"""Seconds between SSH keepalives: a peer that vanished without closing (cable cut, frozen host) is noticed
after about three intervals instead of hanging an operation forever."""
KEEPALIVE_COUNT_MAX = 3

# Errors meaning "the connection is gone", after which a fresh connection may succeed. SFTP status errors
# (no such file, permission denied) are answers from a live server and are not in this list.
_CONNECTION_ERRORS: tuple[type[BaseException], ...] = (
    ConnectionError,  # BrokenPipeError, ConnectionResetError, ...
    TimeoutError,
    EOFError,
    asyncssh.DisconnectError,  # ConnectionLost included
    asyncssh.ChannelOpenError,
    asyncssh.SFTPConnectionLost,
)


class SftpStore(FileStore):
    """Files under ``root`` on an SFTP server.

    ``client_keys``: private key files to authenticate with (then only these: no agent); ``None`` uses the
    SSH defaults (``~/.ssh/id_*`` and the agent); ``[]`` offers no key (password only). ``known_hosts``: the
    file that must list the server's host key; ``None`` means the user's ``~/.ssh/known_hosts`` — an
    unknown host key is refused either way. ``insecure_accept_any_host_key=True`` turns the check off and
    exists for tests only. ``~/.ssh/config`` is not read: the store uses exactly what it is given.

    ``put`` uploads to ``key + ".partial"``, fsyncs it where the server allows, then renames it over the
    key with ``posix-rename@openssh.com`` (atomic replace). On a server without that extension it removes
    the old file first: readers may then briefly find no file, never a partial one.
    """

    name = "sftp"

    def __init__(
        self,
        host: str,
        port: int = 22,
        *,
        username: str,
        root: str,
        client_keys: Sequence[Path] | None = None,
        known_hosts: Path | None = None,
        password: str | None = None,
        connect_timeout: float = 10.0,
        insecure_accept_any_host_key: bool = False,
    ) -> None:
        if not root:
            raise ValueError("the SFTP store needs a root directory")
        self.host = host
        self.port = port
        self.username = username
        self.root = root
        self.client_keys = list(client_keys) if client_keys is not None else None
        self.known_hosts = known_hosts
        self.connect_timeout = connect_timeout
        self.insecure_accept_any_host_key = insecure_accept_any_host_key
        self._password = password
        self._lock = asyncio.Lock()
        self._connection: asyncssh.SSHClientConnection | None = None
        self._sftp: asyncssh.SFTPClient | None = None
        self._posix_rename = True  # until the server says otherwise

    def __repr__(self) -> str:  # never the password
        return f"SftpStore({self._where}, root={self.root!r})"

    @property
    def _where(self) -> str:
        return f"sftp://{self.username}@{self.host}:{self.port}"

    def _remote(self, key: str) -> str:
        return posixpath.join(self.root, validate_key(key))

    # -- connection -------------------------------------------------------------------------------------

    async def _connect(self) -> tuple[asyncssh.SSHClientConnection, asyncssh.SFTPClient]:
        known_hosts: str | tuple[()] | None
        if self.known_hosts is not None:
            known_hosts = str(self.known_hosts)
        elif self.insecure_accept_any_host_key:
            known_hosts = None  # asyncssh: no host key check at all
        else:
            known_hosts = ()  # asyncssh: ~/.ssh/known_hosts, or nothing trusted if it is absent
        if self.client_keys is None:
            client_keys: list[str] | tuple[()] | None = ()
            agent_path: tuple[()] | None = ()
        else:
            # Explicit keys are the whole truth: an agent on the machine must not log in with other keys.
            client_keys = [str(path) for path in self.client_keys] or None
            agent_path = None
        try:
            connection = await asyncssh.connect(
                self.host,
                self.port,
                config=None,
                username=self.username,
                password=self._password,
                client_keys=client_keys,
                agent_path=agent_path,
                known_hosts=known_hosts,
                connect_timeout=self.connect_timeout,
                keepalive_interval=KEEPALIVE_INTERVAL,
                keepalive_count_max=KEEPALIVE_COUNT_MAX,
            )
        except asyncssh.HostKeyNotVerifiable as error:
            raise FileStoreUnavailable(
                f"{self._where}: host key not trusted ({error.reason}); list the server's key in known_hosts"
            ) from error
        except asyncssh.PermissionDenied as error:
            raise FileStoreUnavailable(f"{self._where}: authentication failed ({error.reason})") from error
        except (OSError, asyncssh.Error) as error:  # refused, unreachable, timed out, protocol failure
            raise FileStoreUnavailable(f"{self._where}: cannot connect: {_describe(error)}") from error
        try:
            # connect_timeout ends with authentication; a server that then never starts SFTP must not hang us.
            async with asyncio.timeout(self.connect_timeout):
                sftp = await connection.start_sftp_client()
        except (OSError, asyncssh.Error) as error:
            connection.close()
            await connection.wait_closed()
            raise FileStoreUnavailable(f"{self._where}: no SFTP service: {_describe(error)}") from error
        return connection, sftp

    async def _client(self) -> asyncssh.SFTPClient:
        # The lock makes concurrent callers share one new connection instead of each opening their own.
        async with self._lock:
            if self._sftp is not None and self._connection is not None and not self._connection.is_closed():
                return self._sftp
            await self._disconnect()
            self._connection, self._sftp = await self._connect()
            return self._sftp

    async def _disconnect(self, only: asyncssh.SFTPClient | None = None) -> None:
        """Drop the connection (if it is still ``only``'s: another task may already have replaced it)."""
        if only is not None and self._sftp is not only:
            return
        sftp, connection = self._sftp, self._connection
        self._sftp = self._connection = None
        if sftp is not None:
            sftp.exit()
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await sftp.wait_closed()
        if connection is not None:
            connection.close()
            with contextlib.suppress(*_CONNECTION_ERRORS):
                await connection.wait_closed()

    async def _run(self, what: str, operation: Callable[[asyncssh.SFTPClient], Awaitable[T]]) -> T:
        """Run ``operation``; after a dropped connection reconnect once and run it again."""
        for attempt in (1, 2):
            sftp = await self._client()
            try:
                return await operation(sftp)
            except _CONNECTION_ERRORS as error:
                await self._disconnect(only=sftp)
                if attempt == 2:
                    raise FileStoreUnavailable(
                        f"{self._where}: connection lost during {what}: {_describe(error)}"
                    ) from error
            except asyncssh.SFTPError as error:
                if isinstance(error, asyncssh.SFTPNoSuchFile):
                    raise FileNotInStore(f"{self._where}: {what}: no such file") from error
                raise FileStoreError(f"{self._where}: {what}: {error.reason}") from error
        raise AssertionError("unreachable")  # pragma: no cover

    async def close(self) -> None:
        """Close the SFTP session and the SSH connection; a later call connects again."""
        async with self._lock:
            await self._disconnect()

    # -- operations -------------------------------------------------------------------------------------

    async def put(self, local_path: Path, key: str) -> FileLocation:
        """Upload ``local_path`` as ``key`` (parent directories created), atomically replacing any file."""
        location = self.location(key)
        remote = self._remote(key)
        partial = remote + PARTIAL_SUFFIX
        # Fail on a missing or unreadable source before touching the network: it is the caller's error.
        size = local_path.stat().st_size

        async def upload(sftp: asyncssh.SFTPClient) -> None:
            directory = posixpath.dirname(remote)
            if directory:
                await sftp.makedirs(directory, exist_ok=True)
            try:
                await sftp.put(str(local_path), partial)
                await self._fsync(sftp, partial)
                uploaded = (await sftp.stat(partial)).size
                if uploaded != size:
                    raise FileStoreError(f"{self._where}: uploaded {uploaded} bytes of {size} to {partial}")
                await self._replace(sftp, partial, remote)
            except (asyncssh.SFTPError, FileStoreError):
                # A refused upload must not leave litter; after a dropped connection the retry overwrites it.
                with contextlib.suppress(asyncssh.SFTPError, *_CONNECTION_ERRORS):
                    await sftp.remove(partial)
                raise

        await self._run(f"put {key}", upload)
        return location

    @staticmethod
    async def _fsync(sftp: asyncssh.SFTPClient, path: str) -> None:
        # fsync@openssh.com on a fresh handle flushes the file's data before the rename makes it visible.
        # A server without the extension gets the upload as is: best effort, not a reason to fail.
        async with sftp.open(path, "rb") as handle:
            with contextlib.suppress(asyncssh.SFTPOpUnsupported):
                await handle.fsync()

    async def _replace(self, sftp: asyncssh.SFTPClient, partial: str, remote: str) -> None:
        if self._posix_rename:
            try:
                await sftp.posix_rename(partial, remote)
            except asyncssh.SFTPOpUnsupported:
                self._posix_rename = False
            else:
                return
        # Plain SFTPv3 rename refuses to overwrite: remove the old file first.
        with contextlib.suppress(asyncssh.SFTPNoSuchFile):
            await sftp.remove(remote)
        await sftp.rename(partial, remote)

    async def fetch(self, location: FileLocation, dest: Path) -> Path:
        """Download the file to ``dest`` (written beside it, then renamed, so ``dest`` is never partial)."""
        key = self.key_of(location)
        remote = self._remote(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(f".{dest.name}.{secrets.token_hex(6)}{PARTIAL_SUFFIX}")

        async def download(sftp: asyncssh.SFTPClient) -> None:
            await sftp.get(remote, str(partial))

        try:
            await self._run(f"fetch {key}", download)
            os.replace(partial, dest)
        finally:
            partial.unlink(missing_ok=True)
        return dest

    async def exists(self, location: FileLocation) -> bool:
        """Whether a regular file lies under the key."""
        key = self.key_of(location)
        remote = self._remote(key)

        async def is_file(sftp: asyncssh.SFTPClient) -> bool:
            return await sftp.isfile(remote)

        return await self._run(f"exists {key}", is_file)

    async def delete(self, location: FileLocation) -> None:
        """Remove the file; a missing file is fine."""
        key = self.key_of(location)
        remote = self._remote(key)

        async def remove(sftp: asyncssh.SFTPClient) -> None:
            with contextlib.suppress(asyncssh.SFTPNoSuchFile):
                await sftp.remove(remote)

        await self._run(f"delete {key}", remove)


def _describe(error: BaseException) -> str:
    """A one-line cause for operators: asyncssh errors carry a reason, OS errors a message, timeouts neither."""
    if isinstance(error, asyncssh.Error):
        return error.reason
    return str(error) or type(error).__name__
