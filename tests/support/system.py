"""The whole system in one test process (:class:`derbridge.embedded.EmbeddedSystem`): both systems' APIs
in-process, the bridge worker stepped by hand, and each system's jobs — so a flow test drives the public
APIs and waits until every message has settled, deterministically, on a simulated business clock."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest

from derbridge.embedded import EmbeddedSystem
from derbridge.infra.clock import SimulatedClock
from derbridge.runtime import Runtime, migrate_all
from derbridge.settings import Settings

TOKEN = "test-token"

System = EmbeddedSystem


@pytest.fixture
async def system(settings: Settings) -> AsyncIterator[EmbeddedSystem]:
    """The whole system on fresh databases, with a simulated business clock at 2027-06-01 12:00 UTC."""
    migrate_all(settings)
    runtime = Runtime(settings, clock=SimulatedClock(datetime(2027, 6, 1, 12, tzinfo=UTC)))
    async with EmbeddedSystem(runtime) as embedded:
        yield embedded
