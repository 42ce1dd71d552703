"""Claim check: file stores (a local directory, SFTP) and the manifests that describe the files in them.

The SFTP store lives in :mod:`derbridge.filestore.sftp` and is imported only where it is configured:
asyncssh and its cryptography stack cost start-up time that a local store never needs.
"""

from derbridge.filestore.base import (
    FileNotInStore,
    FileStore,
    FileStoreError,
    FileStoreUnavailable,
    validate_key,
)
from derbridge.filestore.local import LocalDirectoryStore
from derbridge.filestore.manifest import ManifestMismatch, describe_file, verify_file

__all__ = [
    "FileNotInStore",
    "FileStore",
    "FileStoreError",
    "FileStoreUnavailable",
    "LocalDirectoryStore",
    "ManifestMismatch",
    "describe_file",
    "validate_key",
    "verify_file",
]
