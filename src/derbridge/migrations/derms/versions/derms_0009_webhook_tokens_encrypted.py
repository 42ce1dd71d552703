"""Webhook bearer tokens encrypted at rest: each subscription's objectOperations[].bearerToken and each
queued notification's bearer_token become ``fernet:<token>`` (issue 15, finding 8)

The keys come from the runner (``config.attributes["webhook_token_keys"]``, a callable: the setting
``edge.webhook_token_key`` or the key file in the data directory), asked for only when a token is there
to encrypt. Fernet is used directly: a migration does not import the application's adapters.

Revision ID: derms_0009
Revises: derms_0008
Create Date: 2026-12-07 22:30:00.000000
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "derms_0009"
down_revision: str | None = "derms_0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PREFIX = "fernet:"

objects = sa.table(
    "edge_objects", sa.column("id", sa.String), sa.column("object_type", sa.String), sa.column("body", sa.JSON)
)
notifications = sa.table(
    "edge_notifications", sa.column("notification_id", sa.BigInteger), sa.column("bearer_token", sa.Text)
)


def _fernet() -> Any:
    from cryptography.fernet import Fernet, MultiFernet

    config = op.get_context().config
    keys = None if config is None else config.attributes.get("webhook_token_keys")
    if keys is None:
        raise RuntimeError(
            "derms_0009 encrypts the stored webhook bearer tokens and needs their key: migrate with "
            "`derbridge db upgrade` (or derbridge.runtime.migrate_all), which passes edge.webhook_token_key"
        )
    return MultiFernet([Fernet(k.encode()) for k in keys()])


def _rewrite(change: Callable[[str], str | None]) -> None:
    connection = op.get_bind()
    for row in connection.execute(
        sa.select(objects.c.id, objects.c.body).where(objects.c.object_type == "SUBSCRIPTION")
    ):
        body = dict(row.body)
        operations, touched = [], False
        for operation in body.get("objectOperations") or []:
            token = operation.get("bearerToken")
            new = change(token) if isinstance(token, str) else None
            if new is not None:
                operation, touched = {**operation, "bearerToken": new}, True
            operations.append(operation)
        if touched:
            body["objectOperations"] = operations
            connection.execute(sa.update(objects).where(objects.c.id == row.id).values(body=body))
    for row in connection.execute(
        sa.select(notifications.c.notification_id, notifications.c.bearer_token).where(
            notifications.c.bearer_token.is_not(None)
        )
    ):
        new = change(row.bearer_token)
        if new is not None:
            connection.execute(
                sa.update(notifications)
                .where(notifications.c.notification_id == row.notification_id)
                .values(bearer_token=new)
            )


def upgrade() -> None:
    fernet: list[Any] = []

    def seal(token: str) -> str | None:
        if token.startswith(PREFIX):
            return None
        if not fernet:
            fernet.append(_fernet())
        return PREFIX + str(fernet[0].encrypt(token.encode()).decode())

    _rewrite(seal)


def downgrade() -> None:
    fernet: list[Any] = []

    def unseal(token: str) -> str | None:
        if not token.startswith(PREFIX):
            return None
        if not fernet:
            fernet.append(_fernet())
        return str(fernet[0].decrypt(token[len(PREFIX) :].encode()).decode())

    _rewrite(unseal)
