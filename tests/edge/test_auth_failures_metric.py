"""Refused edge credentials and tokens are counted by reason (``derbridge_edge_auth_failures_total``), the
metric behind the token-failure alert of deploy/monitoring/alerts.yaml; accepted ones are not."""

from __future__ import annotations

from datetime import timedelta

import pytest
from prometheus_client import REGISTRY

from derbridge.edge import auth
from derbridge.edge.auth import CredentialsRefused, TokenRefused
from derbridge.edge.domain import Role
from derbridge.infra.db import create_async_db_engine, create_sync_engine, utcnow
from derbridge.migrations.runner import upgrade
from derbridge.settings import Settings

KEY = auth.TokenKeys("k1", "HS256", "k" * 48, "derbridge-vtn", {"k1": auth.VerificationKey("k1", "HS256", "k" * 48)})
OTHER_KEY = auth.TokenKeys(
    "k1", "HS256", "x" * 48, "derbridge-vtn", {"k1": auth.VerificationKey("k1", "HS256", "x" * 48)}
)


def failures(reason: str) -> float:
    return REGISTRY.get_sample_value("derbridge_edge_auth_failures_total", {"reason": reason}) or 0.0


async def test_each_refusal_is_counted_under_its_reason(sqlite_settings: Settings) -> None:
    url = sqlite_settings.database_url("derms")
    upgrade("derms", url)
    sync = create_sync_engine(url)
    engine = create_async_db_engine(url)
    try:
        client = auth.add_client(sync, "ecobee VEN", "ECOBEE", Role.VEN)
        before = {r: failures(r) for r in ("bad_credentials", "expired", "invalid", "revoked")}

        token, _ = await auth.issue_token(engine, KEY, 3600, client.client_id, client.client_secret, None, utcnow())
        assert (await auth.verify_token(engine, KEY, token)).client_id == client.client_id
        assert {r: failures(r) for r in before} == before  # what is accepted is not counted

        with pytest.raises(CredentialsRefused):
            await auth.issue_token(engine, KEY, 3600, client.client_id, "wrong", None, utcnow())
        with pytest.raises(TokenRefused):  # signed with another key: replicas that do not share it
            await auth.verify_token(engine, OTHER_KEY, token)
        old, _ = await auth.issue_token(
            engine, KEY, 60, client.client_id, client.client_secret, None, utcnow() - timedelta(hours=2)
        )
        with pytest.raises(TokenRefused):
            await auth.verify_token(engine, KEY, old)
        assert auth.revoke_client(sync, client.client_id)
        with pytest.raises(TokenRefused):
            await auth.verify_token(engine, KEY, token)

        assert {r: failures(r) - before[r] for r in before} == {
            "bad_credentials": 1,
            "expired": 1,
            "invalid": 1,
            "revoked": 1,
        }
    finally:
        await engine.dispose()
        sync.dispose()
