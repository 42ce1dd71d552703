"""F2 · device-status-check at Asset Hub's API: a contact-center agent asks for a device's communication
status (``POST /assethub/v1/status-checks``). The check is answered asynchronously by the DERMS; read it
with ``GET /assethub/v1/status-checks/{check_id}`` (in :mod:`derbridge.assethub.api.routes`)."""

from __future__ import annotations

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from derbridge.assethub.api.schemas import StatusCheck
from derbridge.assethub.services import status_checks as service
from derbridge.contracts.common import HeadEnd
from derbridge.infra.problems import PROBLEM_RESPONSES
from derbridge.infra.web import NO_NUL, BusinessNow, SystemEngine, require_service_token

router = APIRouter(dependencies=[Depends(require_service_token)], responses=PROBLEM_RESPONSES)


Engine = SystemEngine


class AgentStatusCheckIn(BaseModel):
    """An agent's request to check a device's communication status."""

    model_config = ConfigDict(extra="forbid")

    head_end_system: HeadEnd
    nic_id: str = Field(min_length=1, max_length=64, pattern=NO_NUL)
    requested_by: str = Field(
        min_length=1, max_length=100, pattern=NO_NUL, description="Who asks (the agent's id).", examples=["agent-17"]
    )


@router.post("/status-checks", status_code=202, tags=["status checks"])
async def start_status_check(engine: Engine, now: BusinessNow, body: AgentStatusCheckIn) -> StatusCheck:
    """Ask the DERMS for a device's latest communication status (reason AGENT_TROUBLESHOOT). The check is
    OPEN until the DERMS answers or its timeout passes: poll ``GET /status-checks/{check_id}``. 404 when
    Asset Hub does not know the device."""
    row = await service.start_agent_status_check(engine, body.head_end_system, body.nic_id, body.requested_by, now=now)
    return StatusCheck.model_validate(row)
