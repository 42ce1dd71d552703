"""The running systems of one process: their database engines, opened from settings and migrated."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from derbridge.infra.clock import Clock, SystemClock
from derbridge.infra.db import create_async_db_engine, create_sync_engine
from derbridge.migrations.runner import SYSTEMS, Migration, System, upgrade_if_behind, upgrade_locked
from derbridge.settings import Settings


def migrate_all(
    settings: Settings,
    systems: Iterable[System] = SYSTEMS,
    on_wait: Callable[[System], None] | None = None,
) -> list[Migration]:
    """Bring the databases of ``systems`` (every one by default) to the newest schema, each under its
    migration lock (idempotent: ``derbridge db upgrade``). Alembic runs for each, whatever state it is in;
    ``on_wait(system)`` is called when another process is migrating that database and this one waits."""
    migrations = []
    for system in systems:
        wait = None if on_wait is None else partial(on_wait, system)
        migrations.append(upgrade_locked(system, settings.database_url(system), wait, migration_attributes(settings)))
    return migrations


def migration_attributes(settings: Settings) -> dict[str, Any]:
    """What data migrations may need from the settings: the webhook token keys (derms_0009 encrypts the
    bearer tokens stored before it), asked for only when there is a token to encrypt."""
    from derbridge.edge.token_vault import webhook_token_keys

    return {"webhook_token_keys": partial(webhook_token_keys, settings)}


def ensure_migrated(settings: Settings, systems: Iterable[System] = SYSTEMS) -> list[System]:
    """Bring the databases of ``systems`` — those a command opens — to the newest schema, running Alembic
    only for one that is new or behind (a database at head costs one query: see
    :func:`derbridge.migrations.runner.upgrade_if_behind`). The systems that were migrated."""
    attributes = migration_attributes(settings)
    return [system for system in systems if upgrade_if_behind(system, settings.database_url(system), attributes)]


@dataclass
class Runtime:
    """What one process runs on: its settings, its business clock, and the engines per system (created
    lazily and disposed together). The systems are built from it (``derbridge.api.app.build_systems``)."""

    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    """The business clock: the wall clock, or the demo's and the flow tests' simulated one."""
    _sync: dict[System, Engine] = field(default_factory=dict)
    _async: dict[System, AsyncEngine] = field(default_factory=dict)

    def sync_engine(self, system: System) -> Engine:
        """The synchronous engine of ``system`` (bulk work, CLI)."""
        if system not in self._sync:
            self._sync[system] = create_sync_engine(self.settings.database_url(system))
        return self._sync[system]

    def async_engine(self, system: System) -> AsyncEngine:
        """The asynchronous engine of ``system`` (APIs)."""
        if system not in self._async:
            self._async[system] = create_async_db_engine(self.settings.database_url(system))
        return self._async[system]

    async def aclose(self) -> None:
        """Dispose every engine."""
        for async_engine in self._async.values():
            await async_engine.dispose()
        self._async.clear()
        self.close_sync()

    def close_sync(self) -> None:
        """Dispose the synchronous engines."""
        for engine in self._sync.values():
            engine.dispose()
        self._sync.clear()
