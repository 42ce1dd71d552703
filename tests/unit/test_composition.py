"""The composition roots: each system is wired in its ``build()``, from what it is given, and nowhere else."""

from __future__ import annotations

import ast
from datetime import UTC, datetime
from pathlib import Path

import pytest

from derbridge.assethub import system as assethub_system
from derbridge.cis.loading import CisLoader
from derbridge.contracts.envelope import SystemName
from derbridge.contracts.registry import CONTRACTS
from derbridge.derms import system as derms_system
from derbridge.derms.ports import NO_PORTS
from derbridge.infra.clock import SimulatedClock
from derbridge.infra.db import create_async_db_engine
from derbridge.infra.jobs import Job
from derbridge.settings import Settings

SRC = Path(__file__).resolve().parents[2] / "src" / "derbridge"

PROCESS_STATE = {
    "infra/ids.py": "the id generator's last millisecond and counter: ids stay ordered across the whole process",
    "infra/collector.py": "how many callers asked for the garbage collector's serving pace (one collector per process)",
}
"""The only modules allowed a ``global`` statement, and why: state of the process itself, not configuration."""


def _no_loader() -> CisLoader:
    raise AssertionError("no CIS import in these tests")


def _accepted(system: SystemName) -> set[str]:
    return {contract.type for contract in CONTRACTS if contract.target is system}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path, api_token="test-token")


async def test_each_system_handles_every_message_type_sent_to_it(settings: Settings) -> None:
    clock = SimulatedClock(datetime(2027, 6, 1, tzinfo=UTC))
    engine = create_async_db_engine(settings.database_url("assethub"))
    try:
        assethub = assethub_system.build(settings, engine, clock=clock, cis_loader=_no_loader)
        derms = derms_system.build(settings, engine, clock=clock, cis_loader=_no_loader, ports=NO_PORTS)
        assert set(assethub.inbox.handlers) == _accepted(SystemName.ASSETHUB)
        assert set(derms.inbox.handlers) == _accepted(SystemName.DERMS)
    finally:
        await engine.dispose()


async def test_two_builds_share_nothing_and_run_their_jobs_on_their_own_clock(settings: Settings) -> None:
    engine = create_async_db_engine(settings.database_url("derms"))
    early, late = SimulatedClock(datetime(2027, 6, 1, tzinfo=UTC)), SimulatedClock(datetime(2030, 1, 1, tzinfo=UTC))

    async def gateway(_engine: object, _now: datetime) -> int:
        return 0

    try:
        first = derms_system.build(settings, engine, clock=early, cis_loader=_no_loader, ports=NO_PORTS)
        second = derms_system.build(
            settings,
            engine,
            clock=late,
            cis_loader=_no_loader,
            ports=NO_PORTS,
            gateway_jobs=[Job("gateway", first.jobs[0].every, gateway)],
        )
        assert first.inbox is not second.inbox
        assert first.inbox.handlers is not second.inbox.handlers
        assert [job.name for job in first.jobs] == ["event-lifecycle"]
        assert [job.name for job in second.jobs] == ["event-lifecycle", "gateway"]
        assert first.job_runner().clock is early
        assert second.job_runner().clock is late
        assert first.app.state.clock is early
        assert second.app.state.clock is late
    finally:
        await engine.dispose()


def test_an_inbox_refuses_a_handler_for_a_message_another_system_receives(settings: Settings) -> None:
    from derbridge.assethub.adapters import tables
    from derbridge.contracts import device_status_check
    from derbridge.infra.inbound import Inbox

    async def handler(*_args: object) -> dict[str, object]:
        return {}

    with pytest.raises(ValueError, match="goes to derms"):
        Inbox(SystemName.ASSETHUB, tables.inbox, handlers={device_status_check.TYPE: handler})
    with pytest.raises(ValueError, match="no contract"):
        Inbox(SystemName.ASSETHUB, tables.inbox, handlers={"no-such.v1": handler})


def test_no_module_writes_a_global_but_the_process_state_it_must_keep() -> None:
    writers = set()
    for path in SRC.rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if any(isinstance(node, ast.Global) for node in ast.walk(tree)):
            writers.add(path.relative_to(SRC).as_posix())
    assert writers == set(PROCESS_STATE), (
        "configuration reaches a flow through its system's build(), not a module global"
    )
