"""Webhook bearer tokens encrypted at rest.

A subscription's ``objectOperations[].bearerToken`` is a credential of the subscriber's own server: the
VTN must send it with every notification, so it cannot be hashed, but it need not lie in plain text in the
database file (or a backup of it). It is kept as ``fernet:<token>`` (Fernet: AES-128-CBC and HMAC-SHA256,
from ``cryptography``) in the subscription's row and in each queued notification, and opened only to send
a notification or to show the subscription to its owner.

The keys: ``edge.webhook_token_key`` (``DERBRIDGE_EDGE__WEBHOOK_TOKEN_KEY``), one or more Fernet keys
separated by commas — the first encrypts, every one decrypts, so a key is rotated by putting the new one
first and dropping the old one once every process has restarted (and the queued notifications sealed with
it are delivered). Unset: one key is made once into ``DATA_DIR/edge-webhook-key`` (mode 0600), enough for
processes that share the data directory; processes on several hosts must be given the same setting.

The edge's composition root (:func:`derbridge.edge.system.build`) makes one :class:`TokenVault` from these
keys and hands it to everything that seals or opens a token: the VTN's writes and reads
(:mod:`derbridge.edge.store`), the DERMS hooks and the webhook delivery job.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from derbridge.infra.private import private_dir, private_file
from derbridge.settings import Settings

KEY_FILE = "edge-webhook-key"
PREFIX = "fernet:"
"""Marks a sealed token (a row written before the encryption, or by hand, has none)."""


class SealedTokenError(RuntimeError):
    """A sealed token none of the configured keys opens (the key was changed without keeping the old one)."""


def webhook_token_keys(settings: Settings) -> list[str]:
    """The Fernet keys, newest first: configured, or read from (or first written to) the data dir."""
    configured = settings.edge.webhook_token_key
    if configured is not None:
        keys = [k.strip() for k in configured.get_secret_value().split(",") if k.strip()]
        if not keys:
            raise ValueError("edge.webhook_token_key is set but holds no key")
        return keys
    path = settings.data_dir / KEY_FILE
    if path.exists():
        return [private_file(path).read_text().strip()]
    private_dir(settings.data_dir)
    key = Fernet.generate_key().decode()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process made it first: use theirs
        return [path.read_text().strip()]
    with os.fdopen(fd, "w") as handle:
        handle.write(key + "\n")
    return [key]


class TokenVault:
    """Seals and opens bearer tokens with the configured keys."""

    def __init__(self, keys: list[str]) -> None:
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])

    def seal(self, token: str) -> str:
        """``token`` encrypted with the newest key (a sealed one is left as it is)."""
        if token.startswith(PREFIX):
            return token
        return PREFIX + self._fernet.encrypt(token.encode()).decode()

    def open(self, stored: str) -> str:
        """The plain token of ``stored`` (a token stored before encryption is returned as it is)."""
        if not stored.startswith(PREFIX):
            return stored
        try:
            return self._fernet.decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise SealedTokenError(
                "a webhook bearer token was sealed with a key that edge.webhook_token_key no longer holds"
            ) from None

    def seal_subscription(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A subscription's body with each ``objectOperations[].bearerToken`` sealed."""
        return self._map_tokens(body, self.seal)

    def open_subscription(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """A stored subscription's body with its bearer tokens in plain text (for its owner)."""
        return self._map_tokens(body, self.open)

    @staticmethod
    def _map_tokens(body: Mapping[str, Any], change: Any) -> dict[str, Any]:
        operations = body.get("objectOperations")
        if not operations:
            return dict(body)
        changed = []
        for operation in operations:
            token = operation.get("bearerToken")
            changed.append({**operation, "bearerToken": change(token)} if isinstance(token, str) else operation)
        return {**body, "objectOperations": changed}
