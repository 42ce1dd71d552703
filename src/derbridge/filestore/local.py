"""The default file store: a directory on this machine (``DATA_DIR/files`` in the embedded system)."""

from __future__ import annotations

import asyncio
import os
import secrets
import shutil
from pathlib import Path

from derbridge.contracts.device_score_transfer import FileLocation
from derbridge.filestore.base import PARTIAL_SUFFIX, FileNotInStore, FileStore, FileStoreError, validate_key
from derbridge.infra.private import open_private, private_dir

COPY_CHUNK = 1024 * 1024


def _temporary_sibling(path: Path) -> Path:
    """A unique hidden name next to ``path``: same directory, so the final rename stays on one filesystem."""
    return path.with_name(f".{path.name}.{secrets.token_hex(6)}{PARTIAL_SUFFIX}")


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable; best effort where directories cannot be opened (Windows)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class LocalDirectoryStore(FileStore):
    """Files under ``root``, one per key; the directory is created on first use.

    ``put`` writes a hidden temporary file in the target directory, fsyncs it and renames it over the key,
    so a reader (another process too) sees the old file or the whole new one, and a crash leaves at worst a
    ``*.partial`` file that no key can name. Blocking file I/O runs in a worker thread.
    """

    name = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def __repr__(self) -> str:
        return f"LocalDirectoryStore(root={self.root!r})"

    def _path(self, key: str) -> Path:
        # validate_key leaves no way out of root by lexical means. Symlinks inside root are not chased:
        # whoever can plant them can write the store anyway.
        return self.root.joinpath(*validate_key(key).split("/"))

    async def put(self, local_path: Path, key: str) -> FileLocation:
        """Copy ``local_path`` into the store under ``key`` atomically (fsynced before the rename)."""
        location = self.location(key)
        await asyncio.to_thread(self._put, local_path, self._path(key))
        return location

    def _put(self, local_path: Path, target: Path) -> None:
        # The source is opened first and outside the error mapping: a missing source is the caller's
        # FileNotFoundError, not a store failure.
        with local_path.open("rb") as source:
            try:
                private_dir(target.parent)
                partial = _temporary_sibling(target)
                try:
                    # Files of the store hold device data: the service's user's only, like the data dir.
                    with os.fdopen(open_private(partial), "wb") as out:
                        shutil.copyfileobj(source, out, COPY_CHUNK)
                        out.flush()
                        # Without the fsync a crash after the rename could leave the key naming an empty or
                        # partly written file: the rename may reach the disk before the data.
                        os.fsync(out.fileno())
                    os.replace(partial, target)
                except BaseException:
                    partial.unlink(missing_ok=True)
                    raise
            except OSError as error:
                raise FileStoreError(f"cannot store {target}: {error}") from error
        _fsync_directory(target.parent)

    async def fetch(self, location: FileLocation, dest: Path) -> Path:
        """Copy the stored file to ``dest`` (written beside it, then renamed)."""
        source = self._path(self.key_of(location))
        await asyncio.to_thread(self._fetch, source, dest)
        return dest

    def _fetch(self, source: Path, dest: Path) -> None:
        try:
            reader = source.open("rb")
        except FileNotFoundError as error:
            raise FileNotInStore(f"no file under key in {self.root}: {source}") from error
        except OSError as error:
            raise FileStoreError(f"cannot read {source}: {error}") from error
        with reader:
            dest.parent.mkdir(parents=True, exist_ok=True)
            partial = _temporary_sibling(dest)
            try:
                # No fsync: the fetched copy is a working file, verified against its manifest before use
                # and fetched again if lost.
                with partial.open("xb") as out:
                    shutil.copyfileobj(reader, out, COPY_CHUNK)
                os.replace(partial, dest)
            except BaseException:
                partial.unlink(missing_ok=True)
                raise

    async def exists(self, location: FileLocation) -> bool:
        """Whether a regular file lies under the key."""
        return await asyncio.to_thread(self._path(self.key_of(location)).is_file)

    async def delete(self, location: FileLocation) -> None:
        """Remove the file; a missing file is fine. Emptied directories are left (another put may use them)."""
        path = self._path(self.key_of(location))
        try:
            await asyncio.to_thread(path.unlink, missing_ok=True)
        except OSError as error:
            raise FileStoreError(f"cannot delete {path}: {error}") from error

    async def close(self) -> None:
        """Nothing to release: the store holds no open files between calls."""
