"""The file store the settings name."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from derbridge.filestore.base import FileStore
from derbridge.filestore.local import LocalDirectoryStore
from derbridge.settings import Settings


def build_file_store(settings: Settings) -> FileStore:
    """A local directory (``files.local_root``, default ``DATA_DIR/files``) or an SFTP server."""
    files = settings.files
    if files.store == "sftp":
        # Imported here: asyncssh is loaded only by a process that uses an SFTP store.
        from derbridge.filestore.sftp import SftpStore

        return SftpStore(
            files.sftp_host,
            files.sftp_port,
            username=files.sftp_username,
            root=files.sftp_root,
            client_keys=files.sftp_client_keys or None,
            known_hosts=files.sftp_known_hosts,
            password=files.sftp_password.get_secret_value() if files.sftp_password else None,
            connect_timeout=files.sftp_connect_timeout,
        )
    return LocalDirectoryStore(files.local_root or settings.data_dir / "files")


FileStoreOpener = Callable[[], FileStore]
"""Opens the file store for one use (``async with files() as store``): what a flow that moves files is given
by its system's composition root, instead of settings."""


def file_store_opener(settings: Settings) -> FileStoreOpener:
    """The opener of the file store the settings name."""
    return partial(build_file_store, settings)
