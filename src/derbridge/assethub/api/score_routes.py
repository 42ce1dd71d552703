"""F4 on demand: ``POST /assethub/v1/score-transfers`` computes and sends a score snapshot now."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request

from derbridge.assethub.services import score_transfer
from derbridge.errors import Conflict
from derbridge.infra.problems import PROBLEM_RESPONSES
from derbridge.infra.web import BusinessNow, SystemEngine, require_service_token

router = APIRouter(dependencies=[Depends(require_service_token)], responses=PROBLEM_RESPONSES)


@router.post("/score-transfers", status_code=202, tags=["scores"])
async def start_score_transfer(
    request: Request, engine: SystemEngine, now: BusinessNow
) -> score_transfer.TransferReport:
    """Score every device of every ACTIVE enrollment in an ACTIVE program now, store the score file and send
    its manifest to the DERMS. 202: the snapshot is recorded in Asset Hub and the message is on its way;
    the DERMS loads it asynchronously and acknowledges (see the bridge's messages of flow
    ``device-score-transfer``). 409 while another transfer runs."""
    try:
        return await score_transfer.transfer_scores(engine, request.app.state.settings, now=now)
    except score_transfer.TransferBusy as busy:
        raise Conflict("transfer-in-progress", "A score transfer is running", f"{busy} (one runs at a time).") from None
