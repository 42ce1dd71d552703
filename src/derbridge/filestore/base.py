"""The file store port: where claim-checked files lie while their message travels.

A sender ``put``s a file and sends the returned :class:`FileLocation` with the file's manifest; the target
``fetch``es it, verifies it against the manifest, loads it and may ``delete`` it. Keys come from messages,
so every store treats them as untrusted: :func:`validate_key` keeps them inside the store's root.
"""

from __future__ import annotations

import abc
from pathlib import Path
from types import TracebackType
from typing import Self

from derbridge.contracts.device_score_transfer import FileLocation

MAX_KEY_LENGTH = 500
"""The longest key a :class:`FileLocation` may carry."""

PARTIAL_SUFFIX = ".partial"
"""Suffix of files being written. Keys may not end with it, so no key can name an upload in flight."""


class FileStoreError(Exception):
    """A file store operation failed (base of the file store errors)."""


class FileNotInStore(FileStoreError):
    """The store holds no file under the key."""


class FileStoreUnavailable(FileStoreError):
    """The store cannot be reached now (refused, timed out, authentication or host key refused, dropped).

    The operation had no visible effect and may be retried later; the message naming the cause is meant
    for an operator (e.g. "host key not trusted" needs a known_hosts entry, not patience).
    """


def validate_key(key: str) -> str:
    """Return ``key`` if it is a safe relative POSIX path, else raise ``ValueError``.

    Refused: empty, absolute, ``.``/``..``/empty segments (``a//b``, trailing ``/``), backslashes, control
    characters, more than :data:`MAX_KEY_LENGTH` characters, and the reserved ``.partial`` suffix. The
    check is lexical, so it holds for any store whatever its backend does with the path.
    """
    if not key:
        raise ValueError("file store key is empty")
    if len(key) > MAX_KEY_LENGTH:
        raise ValueError(f"file store key is longer than {MAX_KEY_LENGTH} characters")
    if key.startswith("/"):
        raise ValueError(f"file store key {key!r} is absolute; keys are relative to the store's root")
    # Backslashes are separators on Windows; control characters (NUL above all) cut or garble paths.
    if "\\" in key or any(ord(char) < 0x20 or ord(char) == 0x7F for char in key):
        raise ValueError(f"file store key {key!r} holds a backslash or a control character")
    for segment in key.split("/"):
        if segment in ("", ".", ".."):
            raise ValueError(f"file store key {key!r} has an empty, '.' or '..' segment")
    if key.endswith(PARTIAL_SUFFIX):
        raise ValueError(f"file store key {key!r} ends with {PARTIAL_SUFFIX!r}, reserved for uploads in flight")
    return key


class FileStore(abc.ABC):
    """A place for claim-checked files, addressed by relative POSIX keys such as ``scores/2027/01H….csv.gz``.

    Writes are atomic for readers: a reader sees the previous file or the complete new one, never a part.
    Use as ``async with store:`` or call :meth:`close` when done.
    """

    name: str
    """The ``FileLocation.store`` value of this kind of store ("local", "sftp")."""

    @abc.abstractmethod
    async def put(self, local_path: Path, key: str) -> FileLocation:
        """Store the file at ``local_path`` under ``key`` (replacing any file there) and say where it is."""

    @abc.abstractmethod
    async def fetch(self, location: FileLocation, dest: Path) -> Path:
        """Copy the stored file to the file path ``dest`` (parents created, replaced atomically); return it.

        Raises :class:`FileNotInStore` if nothing is stored under the key.
        """

    @abc.abstractmethod
    async def exists(self, location: FileLocation) -> bool:
        """Whether a complete file is stored under the location's key."""

    @abc.abstractmethod
    async def delete(self, location: FileLocation) -> None:
        """Remove the file. Deleting a missing file is not an error: the delivery that deletes may repeat."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections. Calling it twice is harmless."""

    def location(self, key: str) -> FileLocation:
        """The location of ``key`` in this store (the key is validated)."""
        return FileLocation(store=self.name, key=validate_key(key))

    def key_of(self, location: FileLocation) -> str:
        """The validated key of a location that must belong to this kind of store.

        Locations arrive in messages: a key that escapes the root is refused here, before any I/O.
        """
        if location.store != self.name:
            raise ValueError(f"location is in store {location.store!r}, not {self.name!r}")
        return validate_key(location.key)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()
