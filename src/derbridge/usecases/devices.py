"""One device as each system holds it: Asset Hub's record (its enrollments, its scores in the latest snapshot,
its last status check) and the DERMS's (availability per program, latest communication status).
``derbridge devices show`` reads it this way."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from derbridge.assethub import queries as assethub
from derbridge.derms import queries as derms
from derbridge.errors import NotFound
from derbridge.runtime import Runtime


@dataclass(frozen=True)
class DeviceKey:
    """How a device is named: ``HEAD_END:NIC_ID`` (as messages name it, known to both systems), or Asset
    Hub's device id (``device_id``; ``head_end_system`` and ``nic_id`` empty)."""

    head_end_system: str = ""
    nic_id: str = ""
    device_id: int | None = None


async def device_in_both_systems(runtime: Runtime, key: DeviceKey) -> tuple[dict[str, Any] | None, Any]:
    """Asset Hub's view of the device (``device``, ``enrollments``, ``score_snapshot``, ``scores``,
    ``last_status_check``; None when it does not know it) and the DERMS's device (None when it does not know
    it). A device neither knows is a 404 problem; so is an Asset Hub device id it does not know."""
    by_key = key.device_id is None
    hub: dict[str, Any] | None = None
    async with runtime.async_engine("assethub").connect() as connection:
        try:
            record = (
                await assethub.find_device(connection, key.head_end_system, key.nic_id)
                if key.device_id is None
                else await assethub.get_device(connection, key.device_id)
            )
        except NotFound:
            if not by_key:
                raise
            record = None
        if record is not None:
            snapshot = await assethub.latest_score_snapshot(connection)
            hub = {
                "device": record,
                "enrollments": await assethub.device_enrollments(connection, record.device_id),
                "score_snapshot": snapshot,
                "scores": []
                if snapshot is None
                else await assethub.device_scores(connection, snapshot, record.device_id),
                "last_status_check": await assethub.latest_status_check(connection, device_id=record.device_id),
            }
    named = (hub["device"].head_end_system, hub["device"].nic_id) if hub else (key.head_end_system, key.nic_id)
    async with runtime.async_engine("derms").connect() as connection:
        try:
            grid = await derms.find_device(connection, *named)
        except NotFound:
            grid = None
    if hub is None and grid is None:
        name = f"{key.head_end_system}:{key.nic_id}" if by_key else str(key.device_id)
        raise NotFound("not-found", "device not found", name)
    return hub, grid
