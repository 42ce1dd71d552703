"""The edge's composition root: :func:`derbridge.edge.system.build` gives the VTN application, the edge's two
jobs and the DERMS hooks, each made with the settings, the business clock and the webhook token vault it
was given — so two edges built in one process share nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from cryptography.fernet import Fernet
from pydantic import SecretStr
from sqlalchemy import select

from derbridge.edge import store
from derbridge.edge.auth import add_client
from derbridge.edge.domain import Role
from derbridge.edge.schemas import ObjectType, ProgramRequest
from derbridge.edge.store import NewObject
from derbridge.edge.system import build
from derbridge.edge.tables import edge_notifications, edge_objects
from derbridge.edge.token_vault import SealedTokenError
from derbridge.infra.clock import SimulatedClock
from derbridge.runtime import Runtime
from derbridge.settings import Settings

START = datetime(2031, 5, 6, 7, 8, tzinfo=UTC)


def with_webhook_key(settings: Settings) -> Settings:
    """``settings`` with a webhook token key of their own (not the data dir's key file)."""
    key = SecretStr(Fernet.generate_key().decode())
    return settings.model_copy(update={"edge": settings.edge.model_copy(update={"webhook_token_key": key})})


async def test_build_gives_the_app_its_two_jobs_and_the_derms_hooks(sqlite_settings: Settings) -> None:
    runtime = Runtime(sqlite_settings)
    clock = SimulatedClock(START)
    edge = build(sqlite_settings, runtime.async_engine("derms"), clock=clock)
    assert [(job.name, job.every) for job in edge.jobs] == [
        ("edge-mirror", timedelta(seconds=5)),
        ("edge-webhooks", timedelta(seconds=1)),
    ]
    assert len(edge.ports.requests_answered) == 1
    assert len(edge.ports.enrollment_states_changed) == 1
    assert len(edge.ports.fresh_readings) == 1
    assert edge.app.state.clock is clock
    assert edge.app.state.vtn.clock is clock
    await runtime.aclose()


async def test_the_vtn_writes_on_its_clock_and_seals_tokens_with_its_own_vault(runtime: Runtime) -> None:
    settings = with_webhook_key(runtime.settings)
    engine = runtime.async_engine("derms")
    clock = SimulatedClock(START)
    vtn = build(settings, engine, clock=clock).app.state.vtn
    utility = add_client(runtime.sync_engine("derms"), "utility", "UTILITY", Role.BL)
    subscription = NewObject(
        ObjectType.SUBSCRIPTION,
        {
            "clientName": "hooks",
            "objectOperations": [
                {
                    "objects": ["PROGRAM"],
                    "operations": ["CREATE"],
                    "callbackUrl": "https://hooks.example/h",
                    "bearerToken": "s3cret",
                }
            ],
        },
        [],
        client_id=utility.client_id,
        name="hooks",
    )
    async with engine.begin() as connection:
        [row] = await store.insert_objects(connection, [subscription], clock.now(), vault=vtn.vault)
    sealed = row.body["objectOperations"][0]["bearerToken"]
    assert sealed.startswith("fernet:")
    assert store.represent(row, vtn.vault)["objectOperations"][0]["bearerToken"] == "s3cret"

    clock.advance(timedelta(hours=1))
    program = await vtn.create_program(ProgramRequest(programName="P"))
    assert program.created_at == clock.now()
    async with engine.connect() as connection:
        queued = (await connection.execute(select(edge_notifications))).one()
        stored = await connection.scalar(select(edge_objects.c.created_at).where(edge_objects.c.id == program.id))
    assert stored == clock.now()
    assert queued.created_at == queued.next_attempt_at == clock.now()  # due at once, on the business clock
    assert vtn.vault.open(queued.bearer_token) == "s3cret"

    # Another edge, built with another key in the same process, has a vault of its own.
    other = build(with_webhook_key(runtime.settings), engine, clock=clock).app.state.vtn
    with pytest.raises(SealedTokenError):
        other.vault.open(sealed)
    assert vtn.vault.open(sealed) == "s3cret"
    await runtime.aclose()
