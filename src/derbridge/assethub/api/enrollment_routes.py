"""F3 in Asset Hub's API: end an ACTIVE enrollment, replace its device, and see its syncs to the DERMS.

``POST /enrollments/{id}/unenroll`` and ``POST /enrollments/{id}/replace-device`` call
:mod:`derbridge.assethub.services.enrollment_sync`; ``GET /enrollments/{id}/syncs`` reads what Asset Hub
knows of each sync (SENT until the DERMS acknowledges it; a sync the DERMS cannot apply yet is parked in
the bridge: ``derbridge messages list --state parked --business-key ENROLLMENT_ID``).
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from derbridge.assethub import queries
from derbridge.assethub.api.schemas import EnrollmentSyncsOut, SyncOut
from derbridge.assethub.domain.enrollment_sync import SyncState
from derbridge.assethub.services import enrollment_sync as service
from derbridge.assethub.services.enrollment_sync import DeviceKey, EnrollmentChange, ReplacementDevice
from derbridge.contracts.enrollment_sync import SyncChange
from derbridge.infra.problems import PROBLEM_RESPONSES
from derbridge.infra.web import NO_NUL, BusinessNow, IdPath, SystemEngine, require_service_token

router = APIRouter(dependencies=[Depends(require_service_token)], responses=PROBLEM_RESPONSES)


Engine = SystemEngine


class UnenrollIn(BaseModel):
    """Why the enrollment ends (kept on its UNENROLLED transition)."""

    model_config = ConfigDict(extra="forbid")

    reason: str = Field(min_length=1, max_length=500, pattern=NO_NUL, examples=["customer moved out"])


class ReplaceDeviceIn(BaseModel):
    """The device taken out, and the device put in its place."""

    model_config = ConfigDict(extra="forbid")

    old: DeviceKey
    new: ReplacementDevice


class EnrollmentChangeOut(BaseModel):
    """The enrollment after the change, and the sync that tells the DERMS."""

    enrollment_id: str
    state: str
    change: SyncChange
    at: datetime
    sync: SyncOut


def _out(change: EnrollmentChange) -> EnrollmentChangeOut:
    return EnrollmentChangeOut(
        enrollment_id=change.enrollment_id,
        state=change.state.value,
        change=change.change,
        at=change.at,
        sync=SyncOut(
            sync_id=change.sync.sync_id,
            message_id=change.sync.message_id,
            sequence=change.sync.sequence,
            change=change.sync.change,
            state=SyncState.SENT.value,
            sent_at=change.at,
        ),
    )


@router.post("/enrollments/{enrollment_id}/unenroll", tags=["enrollments"])
async def unenroll(engine: Engine, now: BusinessNow, enrollment_id: IdPath, body: UnenrollIn) -> EnrollmentChangeOut:
    """End an ACTIVE enrollment: it becomes UNENROLLED (kept with the reason) and the DERMS is told to make
    its devices unavailable. 409 from any other state."""
    return _out(await service.unenroll(engine, enrollment_id, body.reason, now=now))


@router.post("/enrollments/{enrollment_id}/replace-device", tags=["enrollments"])
async def replace_device(
    engine: Engine, now: BusinessNow, enrollment_id: IdPath, body: ReplaceDeviceIn
) -> EnrollmentChangeOut:
    """Swap a device of an ACTIVE enrollment: the old device is removed (kept for history), the new one
    added, and the DERMS makes the old one unavailable and the new one available in one step. 409 when the
    enrollment is not ACTIVE or the new device is enrolled elsewhere; 422 for a device that cannot be
    swapped in or out."""
    return _out(await service.replace_device(engine, enrollment_id, body.old, body.new, now=now))


@router.get("/enrollments/{enrollment_id}/syncs", tags=["enrollments"])
async def list_syncs(engine: Engine, enrollment_id: IdPath) -> EnrollmentSyncsOut:
    """The enrollment's sync state and the history of its syncs to the DERMS."""
    async with engine.connect() as connection:
        return await queries.enrollment_syncs(connection, enrollment_id)
