"""Valid messages for bridge tests, built from the real contracts."""

from __future__ import annotations

from datetime import UTC, datetime

from derbridge.contracts.enrollment_sync import (
    Contact,
    DeviceAvailability,
    EnrollmentSync,
    Subscription,
    SubscriptionStatus,
    SyncChange,
    SyncedDevice,
    SyncLocation,
)
from derbridge.contracts.envelope import Endpoint, Envelope, Flow, SystemName
from derbridge.contracts.program_sync import ProgramStatus, ProgramSync
from derbridge.infra.ids import new_id


def enrollment_sync(n: int, *, account: str | None = None, sequence: int = 1) -> Envelope:
    """An ENROLLED enrollment-sync for enrollment n (Asset Hub → DERMS)."""
    enrollment_id = f"E{n:07d}"
    payload = EnrollmentSync(
        sync_id=new_id(),
        change=SyncChange.ENROLLED,
        contact=Contact(contact_id=f"P{n:07d}", cis_person_id=f"P{n:07d}"),
        subscription=Subscription(
            subscription_id=enrollment_id,
            cis_account_id=account or f"A{n:07d}",
            program_code="SUMMER-BYOT",
            status=SubscriptionStatus.ACTIVE,
            start_at=datetime(2027, 5, 1, tzinfo=UTC),
        ),
        location=SyncLocation(division="NORTH", cis_premise_id=f"PR{n:07d}", cis_service_point_id=f"SP{n:07d}"),
        devices=[
            SyncedDevice(
                head_end_system="ECOBEE",
                nic_id=f"NIC{n:07d}",
                device_type="THERMOSTAT",
                manufacturer="ecobee",
                model="Premium",
                availability=DeviceAvailability.AVAILABLE,
            )
        ],
    )
    return Envelope(
        type="enrollment-sync.v1",
        flow=Flow.ENROLLMENT_SYNC,
        correlation_id=enrollment_id,
        source=Endpoint(system=SystemName.ASSETHUB),
        target=Endpoint(system=SystemName.DERMS),
        business_key=enrollment_id,
        sequence=sequence,
        occurred_at=datetime.now(UTC),
        payload=payload.model_dump(mode="json"),
    )


def program_sync(
    code: str = "SUMMER-BYOT",
    version: int = 1,
    *,
    name: str | None = None,
    status: str = "ACTIVE",
    expected_shed_kw: float = 1.0,
    outcome_grace_hours: float = 24.0,
) -> Envelope:
    """A program-sync of ``code`` at ``version`` (Asset Hub → DERMS), ordered as Asset Hub orders it."""
    payload = ProgramSync(
        program_code=code,
        version=version,
        name=name or code,
        status=ProgramStatus(status),
        expected_shed_kw=expected_shed_kw,
        outcome_grace_hours=outcome_grace_hours,
    )
    return Envelope(
        type="program-sync.v1",
        flow=Flow.PROGRAM_SYNC,
        correlation_id=new_id(),
        source=Endpoint(system=SystemName.ASSETHUB),
        target=Endpoint(system=SystemName.DERMS),
        business_key=code,
        sequence=version,
        occurred_at=datetime.now(UTC),
        payload=payload.model_dump(mode="json"),
    )
