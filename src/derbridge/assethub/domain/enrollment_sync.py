"""F3 · the rules of an enrollment sync (pure): what a sync tells the DERMS about an enrollment.

- The **subscription window** (:func:`subscription_window`): a subscription starts when the enrollment
  became ACTIVE, or at the start of its requested ``start_date`` at the premise if that is later; it ends
  when the enrollment was unenrolled, otherwise at the end of its requested ``end_date`` (midnight after it,
  in the premise's time zone), or never.
- The **device list** (:func:`synced_devices`): every sync carries the whole device list of the enrollment
  with the availability each device must have afterwards, so that the DERMS rule "the highest sequence
  wins" is right even when a middle message arrives late.
- Which enrollment state each change is sent for (:data:`STATE_FOR_CHANGE`), and what an acknowledgement
  makes of the sync (:class:`SyncState`, :data:`SYNC_STATE_OF_ACK`).

The service :mod:`derbridge.assethub.services.enrollment_sync` reads the facts and writes the messages.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from functools import lru_cache
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from derbridge.assethub.domain.enrollment import EnrollmentState
from derbridge.contracts import enrollment_sync as contract
from derbridge.contracts.common import AckStatus
from derbridge.contracts.enrollment_sync import DeviceAvailability, SyncChange


class SyncState(StrEnum):
    """Where an enrollment's latest sync is, as Asset Hub knows it (``enrollments.sync_state``)."""

    SENT = "SENT"
    """Written to the outbox; the DERMS has not acknowledged it yet (it may be parked in the bridge)."""
    APPLIED = "APPLIED"
    """The DERMS applied it."""
    STALE = "STALE"
    """The DERMS had applied a newer change of the enrollment and ignored this one."""
    FAILED = "FAILED"
    """The DERMS refused it; ``sync_detail`` says why."""


SYNC_STATE_OF_ACK: Final[dict[AckStatus, SyncState]] = {
    AckStatus.APPLIED: SyncState.APPLIED,
    AckStatus.STALE: SyncState.STALE,
    AckStatus.REJECTED: SyncState.FAILED,
}


STATE_FOR_CHANGE: Final[dict[SyncChange, EnrollmentState]] = {
    SyncChange.ENROLLED: EnrollmentState.ACTIVE,
    SyncChange.DEVICE_REPLACED: EnrollmentState.ACTIVE,
    SyncChange.UNENROLLED: EnrollmentState.UNENROLLED,
}


def premise_zone(name: str | None) -> ZoneInfo | None:
    """The time zone of a premise by its name; None (UTC day boundaries) when it has none or this machine's
    tz database does not know it."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        # The CIS import checks the shape of a zone name, not that this machine's tz database has it;
        # a day boundary in UTC is then the honest approximation (and never an error for a sync).
        return None


@lru_cache(maxsize=4096)
def start_of_day(day: str, zone: ZoneInfo | None) -> datetime:
    """Midnight starting ``day`` (ISO date) at the premise, in UTC (cached: a sync batch's enrollments share
    a few program dates and zones)."""
    local = datetime.combine(date.fromisoformat(day), time(0), tzinfo=zone or UTC)
    return local.astimezone(UTC)


def subscription_window(
    change: SyncChange,
    start_date: str | None,
    end_date: str | None,
    zone: ZoneInfo | None,
    activated_at: datetime | None,
    unenrolled_at: datetime | None,
    now: datetime,
) -> tuple[datetime, datetime | None]:
    """``(start_at, end_at)`` of the subscription the sync describes.

    It starts when the enrollment became ACTIVE, or at the start of its requested ``start_date`` at the
    premise if that is later (a subscription cannot start before the device was set up). It ends when it
    was unenrolled; otherwise at the end of its requested ``end_date`` (inclusive, so midnight after it),
    or never.
    """
    active_from = activated_at or now
    start_at = max(active_from, start_of_day(start_date, zone)) if start_date else active_from
    if change is SyncChange.UNENROLLED:
        return start_at, unenrolled_at or now
    if end_date:
        next_day = (date.fromisoformat(end_date) + timedelta(days=1)).isoformat()
        return start_at, start_of_day(next_day, zone)
    return start_at, None


def synced_devices(
    enrollment_id: str,
    change: SyncChange,
    devices: Sequence[Any],
    old_device_id: int | None,
    new_device_id: int | None,
) -> list[contract.SyncedDevice]:
    """The ``devices`` of a sync: the whole enrollment, each with the availability it has afterwards.

    ENROLLED lists the enrollment's current devices, AVAILABLE. UNENROLLED lists every device the enrollment
    ever had, UNAVAILABLE. DEVICE_REPLACED lists the old device UNAVAILABLE and the new one AVAILABLE, the
    other current devices AVAILABLE and the ones replaced earlier UNAVAILABLE (see the module docstring).
    """
    known = {row.device_id for row in devices}
    if change is SyncChange.DEVICE_REPLACED:
        missing = [d for d in (old_device_id, new_device_id) if d not in known]
        if missing:
            raise ValueError(f"enrollment {enrollment_id}: devices {missing} are not devices of the enrollment")
    out: list[contract.SyncedDevice] = []
    for row in devices:
        current = row.removed_at is None
        if change is SyncChange.ENROLLED:
            if not current:
                continue
            available = True
        elif change is SyncChange.UNENROLLED:
            available = False
        elif row.device_id == new_device_id:
            available = True
        elif row.device_id == old_device_id:
            available = False
        else:
            available = current
        out.append(
            contract.SyncedDevice(
                head_end_system=row.head_end_system,
                nic_id=row.nic_id,
                device_type=row.device_type,
                manufacturer=row.manufacturer,
                model=row.model,
                availability=DeviceAvailability.AVAILABLE if available else DeviceAvailability.UNAVAILABLE,
            )
        )
    if not out:
        raise ValueError(f"enrollment {enrollment_id} has no device to sync")
    return out
