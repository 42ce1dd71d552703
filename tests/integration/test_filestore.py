"""Claim-check file stores: a local directory and SFTP against a real OpenSSH server on loopback.

The same contract runs on both stores; the SFTP store is also tested for refused logins, untrusted host
keys, timeouts, a server that goes away and one that comes back. The SFTP server's files lie on this
machine, so the tests look at them directly to see what a reader on the server would see.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncssh
import pytest

from derbridge.contracts.device_score_transfer import FileLocation
from derbridge.filestore import (
    FileNotInStore,
    FileStore,
    FileStoreError,
    FileStoreUnavailable,
    LocalDirectoryStore,
)
from derbridge.filestore.sftp import SftpStore
from tests.support.sshd import SshServer, running_sshd

KEY = "scores/2027/01HSCOREFILE.csv.gz"


def sftp_store(server: SshServer, root: Path, **overrides: object) -> SftpStore:
    options: dict[str, object] = {
        "username": server.username,
        "root": str(root),
        "client_keys": [server.client_key],
        "known_hosts": server.known_hosts,
        "connect_timeout": 5.0,
    }
    options.update(overrides)
    return SftpStore(server.host, server.port, **options)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sshd() -> Iterator[SshServer]:
    """One OpenSSH server for the module (tests.support.sshd.sshd_server, bound here so ruff sees no shadowing)."""
    with running_sshd() as server:
        yield server


class StoreUnderTest:
    """A store and the local directory where its files really lie."""

    def __init__(self, store: FileStore, root: Path) -> None:
        self.store = store
        self.root = root

    def on_disk(self, key: str) -> Path:
        return self.root / key


@pytest.fixture(params=["local", "sftp"])
async def subject(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreUnderTest]:
    """Each store on a fresh, empty root."""
    store: FileStore
    if request.param == "local":
        root = tmp_path / "files"
        store = LocalDirectoryStore(root)
    else:
        server: SshServer = request.getfixturevalue("sshd")
        root = server.store_root / uuid.uuid4().hex
        store = sftp_store(server, root)
    async with store:
        yield StoreUnderTest(store, root)


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "outgoing" / "score.csv.gz"
    path.parent.mkdir()
    path.write_bytes(b"\x1f\x8b version one " * 1000)
    return path


# -- the contract, on both stores ----------------------------------------------------------------------


async def test_put_then_fetch_gives_the_same_bytes(subject: StoreUnderTest, source: Path, tmp_path: Path) -> None:
    location = await subject.store.put(source, KEY)

    assert location == FileLocation(store=subject.store.name, key=KEY)
    assert subject.on_disk(KEY).read_bytes() == source.read_bytes()
    fetched = await subject.store.fetch(location, tmp_path / "incoming" / "copy.csv.gz")
    assert fetched == tmp_path / "incoming" / "copy.csv.gz"
    assert fetched.read_bytes() == source.read_bytes()
    assert sorted(p.name for p in fetched.parent.iterdir()) == ["copy.csv.gz"]  # no temporary left


async def test_store_names(tmp_path: Path, sshd: SshServer) -> None:
    assert LocalDirectoryStore(tmp_path).name == "local"
    assert sftp_store(sshd, tmp_path).name == "sftp"


async def test_put_of_an_empty_file(subject: StoreUnderTest, tmp_path: Path) -> None:
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")

    location = await subject.store.put(empty, "empty.csv")

    assert await subject.store.exists(location)
    assert (await subject.store.fetch(location, tmp_path / "back.csv")).read_bytes() == b""


async def test_exists_and_delete(subject: StoreUnderTest, source: Path, tmp_path: Path) -> None:
    location = FileLocation(store=subject.store.name, key=KEY)
    assert not await subject.store.exists(location)

    await subject.store.put(source, KEY)
    assert await subject.store.exists(location)

    await subject.store.delete(location)
    assert not await subject.store.exists(location)
    assert not subject.on_disk(KEY).exists()
    await subject.store.delete(location)  # again: a repeated delivery may delete twice
    with pytest.raises(FileNotInStore):
        await subject.store.fetch(location, tmp_path / "gone.csv.gz")


async def test_a_directory_is_not_a_stored_file(subject: StoreUnderTest, source: Path) -> None:
    await subject.store.put(source, KEY)

    assert not await subject.store.exists(FileLocation(store=subject.store.name, key="scores/2027"))


async def test_fetch_of_a_missing_key(subject: StoreUnderTest, tmp_path: Path) -> None:
    dest = tmp_path / "incoming" / "missing.csv"

    with pytest.raises(FileNotInStore):
        await subject.store.fetch(FileLocation(store=subject.store.name, key="scores/missing.csv"), dest)

    assert not dest.exists()
    assert not dest.parent.exists() or list(dest.parent.iterdir()) == []  # no partial download left behind


BAD_KEYS = [
    pytest.param("../escape.csv", id="parent"),
    pytest.param("scores/../../escape.csv", id="parent-inside"),
    pytest.param("scores/..", id="parent-at-end"),
    pytest.param("/tmp/escape.csv", id="absolute"),
    pytest.param("", id="empty"),
    pytest.param("scores//x.csv", id="empty-segment"),
    pytest.param("./x.csv", id="dot"),
    pytest.param("scores/", id="trailing-slash"),
    pytest.param("..\\escape.csv", id="backslash"),
    pytest.param("x\x00.csv", id="nul"),
    pytest.param("x.csv.partial", id="reserved-suffix"),
    pytest.param("x" * 501, id="too-long"),
]


@pytest.mark.parametrize("key", BAD_KEYS)
async def test_keys_that_could_escape_the_root_are_refused(
    subject: StoreUnderTest, source: Path, tmp_path: Path, key: str
) -> None:
    with pytest.raises(ValueError, match="key"):
        await subject.store.put(source, key)
    # Locations arrive in messages: they are checked too. model_construct skips the model's own length
    # check, as a hand-made location in a caller would.
    location = FileLocation.model_construct(store=subject.store.name, key=key)
    with pytest.raises(ValueError, match="key"):
        await subject.store.fetch(location, tmp_path / "dest")
    with pytest.raises(ValueError, match="key"):
        await subject.store.exists(location)
    with pytest.raises(ValueError, match="key"):
        await subject.store.delete(location)

    assert not (subject.root.parent / "escape.csv").exists()
    assert not subject.root.exists() or list(subject.root.iterdir()) == []


async def test_a_location_of_another_store_is_refused(subject: StoreUnderTest, tmp_path: Path) -> None:
    other = "sftp" if subject.store.name == "local" else "local"

    with pytest.raises(ValueError, match="store"):
        await subject.store.fetch(FileLocation(store=other, key=KEY), tmp_path / "dest")


async def test_put_of_a_missing_source_is_the_callers_error(subject: StoreUnderTest, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await subject.store.put(tmp_path / "no-such-file.csv", KEY)


async def test_put_over_an_existing_key_replaces_it(subject: StoreUnderTest, source: Path, tmp_path: Path) -> None:
    await subject.store.put(source, KEY)
    second = tmp_path / "second.csv.gz"
    second.write_bytes(b"version two")  # shorter: a write in place would leave a tail of version one

    location = await subject.store.put(second, KEY)

    assert (await subject.store.fetch(location, tmp_path / "back")).read_bytes() == b"version two"
    assert sorted(p.name for p in subject.on_disk(KEY).parent.iterdir()) == ["01HSCOREFILE.csv.gz"]


async def test_readers_never_see_a_partly_written_file(subject: StoreUnderTest, tmp_path: Path) -> None:
    # A reader on the store's machine keeps opening the key while it is overwritten: each read must be one
    # whole version. Written in place, a read would catch a file that is empty or half long.
    versions = [bytes([n]) * 2_000_000 for n in (1, 2)]
    sources = []
    for n, content in enumerate(versions):
        path = tmp_path / f"v{n}"
        path.write_bytes(content)
        sources.append(path)
    await subject.store.put(sources[0], KEY)
    target = subject.on_disk(KEY)
    stop = threading.Event()
    reads: list[bytes] = []

    def reader() -> None:
        while not stop.is_set():
            reads.append(target.read_bytes())

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for n in range(10):
            await subject.store.put(sources[n % 2], KEY)
    finally:
        stop.set()
        await asyncio.to_thread(thread.join)

    assert reads
    torn = [len(read) for read in reads if read not in versions]
    assert torn == [], f"{len(torn)} of {len(reads)} reads saw a partial file"


# -- SFTP only ---------------------------------------------------------------------------------------------


async def test_sftp_wrong_client_key_is_unavailable(sshd: SshServer, source: Path, tmp_path: Path) -> None:
    async with sftp_store(sshd, tmp_path, client_keys=[sshd.other_client_key]) as store:
        with pytest.raises(FileStoreUnavailable, match="authentication failed"):
            await store.put(source, KEY)


async def test_sftp_unknown_host_key_is_refused(sshd: SshServer, source: Path, tmp_path: Path) -> None:
    # known_hosts lists another key for this host and port: a man in the middle, as far as we can tell.
    stranger = sshd.other_client_key.with_suffix(".pub").read_text().split()
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{sshd.host}]:{sshd.port} {stranger[0]} {stranger[1]}\n")

    async with sftp_store(sshd, tmp_path, known_hosts=known_hosts) as store:
        with pytest.raises(FileStoreUnavailable, match="host key not trusted"):
            await store.put(source, KEY)


async def test_sftp_without_known_hosts_uses_the_users_and_refuses_unknown_keys(
    sshd: SshServer, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # a user with no ~/.ssh/known_hosts

    async with sftp_store(sshd, tmp_path, known_hosts=None) as store:
        with pytest.raises(FileStoreUnavailable, match="host key not trusted"):
            await store.put(source, KEY)

    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    (tmp_path / "home" / ".ssh" / "known_hosts").write_bytes(sshd.known_hosts.read_bytes())
    async with sftp_store(sshd, sshd.store_root / uuid.uuid4().hex, known_hosts=None) as store:
        assert await store.put(source, KEY) == FileLocation(store="sftp", key=KEY)


async def test_sftp_insecure_flag_accepts_any_host_key(
    sshd: SshServer, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    root = sshd.store_root / uuid.uuid4().hex

    async with sftp_store(sshd, root, known_hosts=None, insecure_accept_any_host_key=True) as store:
        await store.put(source, KEY)

    assert (root / KEY).read_bytes() == source.read_bytes()


@pytest.fixture
def own_sshd() -> Iterator[SshServer]:
    """A server of the test's own, which it may stop and start."""
    with running_sshd() as server:
        yield server


async def test_sftp_server_gone_is_unavailable_and_the_store_recovers(
    own_sshd: SshServer, source: Path, tmp_path: Path
) -> None:
    root = own_sshd.store_root
    async with sftp_store(own_sshd, root) as store:
        location = await store.put(source, KEY)

        own_sshd.stop()
        with pytest.raises(FileStoreUnavailable):
            await store.fetch(location, tmp_path / "copy")
        with pytest.raises(FileStoreUnavailable, match="cannot connect"):
            await store.exists(location)
        assert not (tmp_path / "copy").exists()

        own_sshd.start()
        fetched = await store.fetch(location, tmp_path / "copy")
        assert fetched.read_bytes() == source.read_bytes()


async def test_sftp_dropped_connection_is_reopened_transparently(
    own_sshd: SshServer, source: Path, tmp_path: Path
) -> None:
    async with sftp_store(own_sshd, own_sshd.store_root) as store:
        location = await store.put(source, KEY)
        # Restarted without yielding to the event loop: the store still holds the dead connection and
        # finds out only when it uses it.
        own_sshd.stop()
        own_sshd.start()

        assert await store.exists(location)
        await store.delete(location)
        assert not (own_sshd.store_root / KEY).exists()

    assert own_sshd.log_path.read_text().count("Accepted publickey") == 2


async def test_sftp_silent_server_times_out(source: Path, tmp_path: Path) -> None:
    # The kernel accepts the TCP connection but nobody ever speaks SSH: connect_timeout must end the wait.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        store = SftpStore("127.0.0.1", port, username="nobody", root="files", connect_timeout=0.5)
        async with store:
            started = asyncio.get_running_loop().time()
            with pytest.raises(FileStoreUnavailable, match="cannot connect"):
                await store.put(source, KEY)
            assert asyncio.get_running_loop().time() - started < 3


async def test_sftp_close_is_repeatable_and_the_store_reconnects(sshd: SshServer, source: Path, tmp_path: Path) -> None:
    store = sftp_store(sshd, sshd.store_root / uuid.uuid4().hex)
    location = await store.put(source, KEY)
    await store.close()
    await store.close()

    assert await store.exists(location)
    await store.close()


async def test_sftp_replaces_without_posix_rename(
    sshd: SshServer, source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A server without posix-rename@openssh.com: the store falls back to remove + rename.
    async def unsupported(self: asyncssh.SFTPClient, oldpath: str, newpath: str) -> None:
        raise asyncssh.SFTPOpUnsupported("POSIX rename not supported")

    monkeypatch.setattr(asyncssh.SFTPClient, "posix_rename", unsupported)
    root = sshd.store_root / uuid.uuid4().hex
    second = tmp_path / "second"
    second.write_bytes(b"version two")
    async with sftp_store(sshd, root) as store:
        await store.put(source, KEY)
        await store.put(second, KEY)

    assert (root / KEY).read_bytes() == b"version two"
    assert sorted(p.name for p in (root / KEY).parent.iterdir()) == ["01HSCOREFILE.csv.gz"]


async def test_sftp_refusal_by_the_server_is_a_store_error(sshd: SshServer, source: Path, tmp_path: Path) -> None:
    # The root is a regular file: the server answers, but cannot create directories under it.
    blocker = sshd.store_root / f"{uuid.uuid4().hex}.file"
    blocker.write_bytes(b"")
    async with sftp_store(sshd, blocker) as store:
        with pytest.raises(FileStoreError) as caught:
            await store.put(source, KEY)
    assert not isinstance(caught.value, FileStoreUnavailable | FileNotInStore)
