"""Every scenario, listed here by name (nothing registers itself): what ``derbridge bench`` runs, in order."""

from __future__ import annotations

from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from derbridge.bench import startup
from derbridge.bench.core import Backend, Result
from derbridge.bench.scenarios.bridge_throughput import bridge_throughput
from derbridge.bench.scenarios.cis_import import cis_import
from derbridge.bench.scenarios.common import Scenario
from derbridge.bench.scenarios.f1_bulk import f1_bulk
from derbridge.bench.scenarios.f1_single import f1_single
from derbridge.bench.scenarios.f2_status_check import f2_status_check
from derbridge.bench.scenarios.season import event_season, season_scenario
from derbridge.settings import Settings


@dataclass(frozen=True)
class Spec:
    """A scenario: what it measures, its target, and the backends quality.md asks it to run on."""

    name: str
    run: Scenario
    backends: tuple[Backend, ...]
    summary: str
    world: str | None = None
    """Scenarios of one world (:data:`WORLDS`) on one backend run in one process, on one seeded state."""


SCENARIOS: dict[str, Spec] = {
    spec.name: spec
    for spec in (
        Spec(
            "f4-score-transfer",
            season_scenario("f4-score-transfer"),
            ("sqlite", "postgres"),
            "F4: 1,000,000 device scores",
            world="season",
        ),
        Spec(
            "f5-reservation",
            season_scenario("f5-reservation"),
            ("sqlite", "postgres"),
            "F5: reserve 100,000 of 1,000,000 candidates",
            world="season",
        ),
        Spec(
            "f7-outcomes",
            season_scenario("f7-outcomes"),
            ("sqlite", "postgres"),
            "F7: 100,000 outcomes to Asset Hub history",
            world="season",
        ),
        Spec("f1-single", f1_single, ("sqlite",), "F1: sustained single enrollment requests to ACTIVE"),
        Spec("f1-bulk", f1_bulk, ("sqlite",), "F1: 100,000 enrollment requests in batches to ACTIVE"),
        Spec("f2-status-check", f2_status_check, ("sqlite",), "F2: status check round trip p50/p99"),
        Spec("bridge-throughput", bridge_throughput, ("sqlite", "postgres", "amqp"), "bridge: small messages"),
        Spec("cis-import", cis_import, ("sqlite", "postgres"), "CIS import: 1,000,000 customers into both systems"),
        Spec("cli-version", startup.scenario("cli-version"), ("sqlite",), "CLI: derbridge --version", world="cli"),
        Spec(
            "cli-read-only",
            startup.scenario("cli-read-only"),
            ("sqlite", "postgres"),
            "CLI: a read-only command on databases at head",
            world="cli",
        ),
    )
}
"""Every scenario by name, in the order ``derbridge bench`` runs them."""

WorldRun = Callable[[Settings, Path, bool, Sequence[str]], Coroutine[Any, Any, list[Result]]]
WORLDS: dict[str, WorldRun] = {"season": event_season, "cli": startup.cli_startup}
"""Runs that share one given state among several scenarios, by the name their :class:`Spec` gives."""
