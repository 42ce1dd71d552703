"""Issue 15, finding 8: derms_0009 encrypts the webhook bearer tokens stored in plain text before it, and
its downgrade gives them back; the VTN reads either."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import insert, select

from derbridge.edge.tables import edge_notifications, edge_objects
from derbridge.edge.token_vault import TokenVault, webhook_token_keys
from derbridge.infra.db import create_sync_engine
from derbridge.migrations.runner import downgrade, upgrade
from derbridge.runtime import migrate_all, migration_attributes
from derbridge.settings import Settings


def test_derms_0009_encrypts_the_stored_tokens_and_its_downgrade_decrypts_them(settings: Settings) -> None:
    url = settings.database_url("derms")
    upgrade("derms", url, "derms_0008")
    now = datetime(2026, 12, 7, tzinfo=UTC)
    body = {
        "clientName": "ecobee",
        "objectOperations": [
            {"objects": ["EVENT"], "operations": ["POST"], "callbackUrl": "https://a.example/h", "bearerToken": "s1"},
            {"objects": ["PROGRAM"], "operations": ["PUT"], "callbackUrl": "https://a.example/h"},
        ],
    }
    engine = create_sync_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(
                insert(edge_objects).values(
                    id="sub-1", object_type="SUBSCRIPTION", targets=[], body=body, created_at=now, modified_at=now
                )
            )
            connection.execute(
                insert(edge_notifications).values(
                    subscription_id="sub-1",
                    callback_url="https://a.example/h",
                    bearer_token="s1",
                    body={},
                    attempts=0,
                    created_at=now,
                )
            )

        migrate_all(settings, ["derms"])

        vault = TokenVault(webhook_token_keys(settings))
        with engine.connect() as connection:
            stored = connection.scalar(select(edge_objects.c.body))
            token = connection.scalar(select(edge_notifications.c.bearer_token))
        sealed = stored["objectOperations"][0]["bearerToken"]
        assert sealed.startswith("fernet:")
        assert token.startswith("fernet:")
        assert "bearerToken" not in stored["objectOperations"][1]
        assert vault.open_subscription(stored) == body
        assert vault.open(token) == "s1"

        downgrade("derms", url, "derms_0008", attributes=migration_attributes(settings))
        with engine.connect() as connection:
            assert connection.scalar(select(edge_objects.c.body)) == body
            assert connection.scalar(select(edge_notifications.c.bearer_token)) == "s1"
    finally:
        engine.dispose()
