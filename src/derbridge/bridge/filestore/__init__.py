"""Claim check: file stores (a local directory, SFTP) and the manifests that describe the files in them."""

from derbridge.bridge.filestore.base import (
    FileNotInStore,
    FileStore,
    FileStoreError,
    FileStoreUnavailable,
    validate_key,
)
from derbridge.bridge.filestore.local import LocalDirectoryStore
from derbridge.bridge.filestore.manifest import ManifestMismatch, describe_file, verify_file
from derbridge.bridge.filestore.sftp import SftpStore

__all__ = [
    "FileNotInStore",
    "FileStore",
    "FileStoreError",
    "FileStoreUnavailable",
    "LocalDirectoryStore",
    "ManifestMismatch",
    "SftpStore",
    "describe_file",
    "validate_key",
    "verify_file",
]
