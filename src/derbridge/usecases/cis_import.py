"""P0 · a CIS extract into both systems: each system's loader, the extract read once
(:func:`derbridge.cis.importer.import_extract`), then the enrollment syncs parked until those customers reached
the DERMS woken through the bridge's tracker
(:func:`derbridge.derms.services.enrollment_sync.cis_account_conditions`).

``derbridge cis import`` and the demo both import this way."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from derbridge.assethub.adapters.cis_loader import AssetHubCisLoader
from derbridge.bridge.tracking import Tracker
from derbridge.cis.importer import ImportReport, import_extract
from derbridge.cis.loading import CisLoader
from derbridge.derms.adapters.cis_loader import DermsCisLoader
from derbridge.derms.services.enrollment_sync import cis_account_conditions
from derbridge.runtime import Runtime


def loaders(runtime: Runtime) -> list[CisLoader]:
    """Asset Hub's and the DERMS's CIS loaders, on their synchronous engines."""
    return [AssetHubCisLoader(runtime.sync_engine("assethub")), DermsCisLoader(runtime.sync_engine("derms"))]


def import_into_both_systems(
    runtime: Runtime, path: Path, *, on_progress: Callable[[int], None] | None = None
) -> ImportReport:
    """Load the extract at ``path`` into Asset Hub and the DERMS (synchronous: run it in a thread from an event
    loop). Raises :class:`~derbridge.cis.extract.ExtractHeaderError`, loading nothing, when the file is not a
    CIS extract."""
    return import_extract(path, loaders(runtime), on_progress=on_progress)


async def wake_parked(runtime: Runtime, report: ImportReport) -> int:
    """Wake the bridge's messages parked for customers ``report``'s import brought to the DERMS (F3 syncs
    waiting for P0); how many woke (none asked, and no database opened, when it brought none)."""
    account_ids = report.loaded_account_ids.get("derms", set())
    if not account_ids:
        return 0
    return await Tracker(runtime.async_engine("bridge")).wake(cis_account_conditions(account_ids))
