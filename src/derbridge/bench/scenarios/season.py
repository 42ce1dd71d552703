"""The event season's world: F4, F5 and F7 run in order on one seeded state."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from derbridge.bench.core import Result, progress, scaled
from derbridge.bench.scenarios.common import Scenario, embedded_system, seeded_world
from derbridge.bench.scenarios.f4_score_transfer import f4_score_transfer, transfer_scores
from derbridge.bench.scenarios.f5_reservation import f5_reservation, reserve
from derbridge.bench.scenarios.f7_outcomes import f7_outcomes
from derbridge.settings import Settings

SEASON = ("f4-score-transfer", "f5-reservation", "f7-outcomes")
"""The scenarios of an event season, run on one seeded world: F4 scores the million devices, F5 reserves
100,000 of them by those scores, F7 reports the outcomes of that event. Each starts where the previous one
left the world, as in production; a scenario run alone does the earlier ones as untimed set-up."""


async def event_season(settings: Settings, workdir: Path, quick: bool, names: Sequence[str]) -> list[Result]:
    """Seed ``scaled(1,000,000)`` enrolled devices once, then run the chosen scenarios of :data:`SEASON`
    in order on them (an unchosen earlier one runs untimed, as set-up of a later one)."""
    devices, target = scaled(1_000_000, quick), scaled(100_000, quick)
    wanted = [name for name in SEASON if name in names]
    last = SEASON.index(wanted[-1])
    results: list[Result] = []
    async with embedded_system(settings) as system:
        await seeded_world(system, workdir, devices)
        if "f4-score-transfer" in wanted:
            results.append(await f4_score_transfer(settings, system, devices, quick))
        else:
            progress(f"transferring {devices:,} scores first (set-up)")
            await transfer_scores(system, devices)
        if last < SEASON.index("f5-reservation"):
            return results
        if "f5-reservation" in wanted:
            result, event = await f5_reservation(settings, system, devices, target, quick)
            results.append(result)
        else:
            progress(f"reserving {target:,} of {devices:,} first (set-up)")
            event = await reserve(system, target)
        if "f7-outcomes" in wanted:
            results.append(await f7_outcomes(settings, system, event, quick))
    return results


def season_scenario(name: str) -> Scenario:
    async def run(settings: Settings, workdir: Path, quick: bool) -> Result:
        return (await event_season(settings, workdir, quick, [name]))[0]

    run.__doc__ = f"{name} alone: :func:`event_season` with only it timed."
    return run
