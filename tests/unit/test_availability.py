"""Device availability from enrollment sync (flows.md F3)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest

from derbridge.derms.domain.availability import (
    Availability,
    DeviceRole,
    SyncChange,
    SyncDecision,
    SyncDevicesError,
    SyncedDevice,
    availability_after,
    check_sync_devices,
    decide_sync,
    reservations_to_release,
    synced_device,
)

AVAILABLE, UNAVAILABLE = Availability.AVAILABLE, Availability.UNAVAILABLE
NOW = datetime(2027, 7, 1, 12, 0, tzinfo=UTC)
US = timedelta(microseconds=1)


# ---------------------------------------------------------------- sequence ordering


@pytest.mark.parametrize(
    ("applied", "incoming", "expected"),
    [
        (None, 1, SyncDecision.APPLY),  # first sync of the enrollment
        (None, 0, SyncDecision.APPLY),
        (3, 4, SyncDecision.APPLY),  # newer
        (3, 40, SyncDecision.APPLY),  # newer with a gap: sequences need not be contiguous
        (3, 3, SyncDecision.STALE),  # duplicate
        (3, 2, SyncDecision.STALE),  # older, delivered late
        (3, 0, SyncDecision.STALE),
    ],
    ids=["first", "first zero", "newer", "newer gap", "duplicate", "stale", "stale zero"],
)
def test_decide_sync(applied: int | None, incoming: int, expected: SyncDecision) -> None:
    assert decide_sync(applied, incoming) is expected


# ---------------------------------------------------------------- availability after a change


@pytest.mark.parametrize(
    ("change", "role", "expected"),
    [
        (SyncChange.ENROLLED, DeviceRole.ENROLLMENT_DEVICE, AVAILABLE),
        (SyncChange.UNENROLLED, DeviceRole.ENROLLMENT_DEVICE, UNAVAILABLE),
        (SyncChange.DEVICE_REPLACED, DeviceRole.REPLACED, UNAVAILABLE),
        (SyncChange.DEVICE_REPLACED, DeviceRole.REPLACEMENT, AVAILABLE),
    ],
)
def test_availability_after(change: SyncChange, role: DeviceRole, expected: Availability) -> None:
    assert availability_after(change, role) is expected


VALID_ROLES = {
    (SyncChange.ENROLLED, DeviceRole.ENROLLMENT_DEVICE),
    (SyncChange.UNENROLLED, DeviceRole.ENROLLMENT_DEVICE),
    (SyncChange.DEVICE_REPLACED, DeviceRole.REPLACED),
    (SyncChange.DEVICE_REPLACED, DeviceRole.REPLACEMENT),
}


@pytest.mark.parametrize(
    ("change", "role"),
    [pair for pair in itertools.product(SyncChange, DeviceRole) if pair not in VALID_ROLES],
)
def test_a_role_foreign_to_the_change_is_refused(change: SyncChange, role: DeviceRole) -> None:
    with pytest.raises(ValueError, match=f"a {change.value} sync has no {role.value} device"):
        availability_after(change, role)


def test_synced_device_for_a_replacement() -> None:
    old = synced_device(SyncChange.DEVICE_REPLACED, DeviceRole.REPLACED, "ECOBEE", "n-1")
    new = synced_device(SyncChange.DEVICE_REPLACED, DeviceRole.REPLACEMENT, "ECOBEE", "n-2")
    assert old == SyncedDevice("ECOBEE", "n-1", UNAVAILABLE)
    assert new == SyncedDevice("ECOBEE", "n-2", AVAILABLE)
    assert old.key == ("ECOBEE", "n-1")
    check_sync_devices(SyncChange.DEVICE_REPLACED, [old, new])


# ---------------------------------------------------------------- the devices list of a sync


def test_enrolled_devices_are_available() -> None:
    check_sync_devices(
        SyncChange.ENROLLED, [SyncedDevice("NEST", "a", AVAILABLE), SyncedDevice("NEST", "b", AVAILABLE)]
    )
    with pytest.raises(SyncDevicesError, match="every device AVAILABLE: NEST:b"):
        check_sync_devices(
            SyncChange.ENROLLED, [SyncedDevice("NEST", "a", AVAILABLE), SyncedDevice("NEST", "b", UNAVAILABLE)]
        )


def test_unenrolled_devices_are_unavailable() -> None:
    check_sync_devices(SyncChange.UNENROLLED, [SyncedDevice("NEST", "a", UNAVAILABLE)])
    with pytest.raises(SyncDevicesError, match="every device UNAVAILABLE: NEST:a"):
        check_sync_devices(SyncChange.UNENROLLED, [SyncedDevice("NEST", "a", AVAILABLE)])


@pytest.mark.parametrize(
    "devices",
    [
        [SyncedDevice("NEST", "new", AVAILABLE)],
        [SyncedDevice("NEST", "old", UNAVAILABLE)],
        [SyncedDevice("NEST", "old", UNAVAILABLE), SyncedDevice("NEST", "other", UNAVAILABLE)],
    ],
    ids=["no replaced", "no replacement", "two replaced"],
)
def test_a_replacement_names_both_the_old_and_the_new_device(devices: list[SyncedDevice]) -> None:
    with pytest.raises(SyncDevicesError, match="replaced device UNAVAILABLE and the replacement AVAILABLE"):
        check_sync_devices(SyncChange.DEVICE_REPLACED, devices)


def test_a_replacement_may_list_unchanged_devices_of_the_enrollment() -> None:
    check_sync_devices(
        SyncChange.DEVICE_REPLACED,
        [
            SyncedDevice("ECOBEE", "old", UNAVAILABLE),
            SyncedDevice("ECOBEE", "new", AVAILABLE),
            SyncedDevice("ECOBEE", "upstairs", AVAILABLE),
        ],
    )


@pytest.mark.parametrize("change", list(SyncChange))
def test_a_sync_names_at_least_one_device(change: SyncChange) -> None:
    with pytest.raises(SyncDevicesError, match="at least one device"):
        check_sync_devices(change, [])


def test_a_device_appears_once() -> None:
    with pytest.raises(SyncDevicesError, match="ECOBEE:x appears more than once"):
        check_sync_devices(
            SyncChange.DEVICE_REPLACED,
            [SyncedDevice("ECOBEE", "x", UNAVAILABLE), SyncedDevice("ECOBEE", "x", AVAILABLE)],
        )


def test_sync_devices_error_is_a_value_error() -> None:
    assert issubclass(SyncDevicesError, ValueError)


# ---------------------------------------------------------------- releasing reservations


def test_an_unavailable_device_loses_reservations_of_events_not_started() -> None:
    reservations = [
        (101, 7, NOW + timedelta(days=1)),  # device 7, future event: released
        (102, 8, NOW + timedelta(days=1)),  # device 8 stays available: kept
        (103, 7, NOW - timedelta(hours=1)),  # device 7, event already started: kept
        (104, 7, NOW),  # starts exactly now: started, kept
        (105, 7, NOW + US),  # starts in a microsecond: released
        (106, 9, NOW + timedelta(hours=2)),  # device 9, future: released
    ]
    assert reservations_to_release([7, 9], reservations, NOW) == [101, 105, 106]


def test_nothing_to_release() -> None:
    assert reservations_to_release([], [(1, 7, NOW + timedelta(days=1))], NOW) == []
    assert reservations_to_release([7], [], NOW) == []


def test_release_accepts_any_iterables() -> None:
    device_ids = (d for d in [3])
    reservations = ((r, 3, NOW + timedelta(minutes=r)) for r in range(1, 4))
    assert reservations_to_release(device_ids, reservations, NOW) == [1, 2, 3]


def test_release_needs_an_aware_clock() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        reservations_to_release([1], [], NOW.replace(tzinfo=None))
