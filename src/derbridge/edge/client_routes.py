"""The edge gateway's OAuth2 clients through the DERMS API, ``/derms/v1/edge-clients``: what ``derbridge edge
client add|revoke`` does on the database, for an operator or a tool that has only the API (``derbridge
smoke`` makes its test aggregator's client here, and revokes it afterwards).

The edge is the DERMS's gateway and its clients live in the DERMS database, so they are managed with the
DERMS's service credential, not with an OpenADR token: a VTN client must never be able to mint another.
A secret is answered once, on creation; only its argon2 hash is kept. A client is revoked, never deleted:
its objects on the VTN keep naming it.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from derbridge.contracts.common import HeadEnd
from derbridge.edge import auth
from derbridge.edge.roles import Role
from derbridge.errors import not_found
from derbridge.infra.problems import PROBLEM_RESPONSES
from derbridge.infra.web import NO_NUL, IdPath, SystemEngine, require_service_token

router = APIRouter(dependencies=[Depends(require_service_token)], responses=PROBLEM_RESPONSES)


class EdgeClientIn(BaseModel):
    """A client to create: who it is, the head-end it speaks for, and its role."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, pattern=NO_NUL, examples=["ecobee VEN"])
    head_end_system: HeadEnd
    role: Role = Role.VEN


class EdgeClient(BaseModel):
    """A client as kept (never its secret)."""

    client_id: str
    name: str
    head_end_system: str
    role: Role
    created_at: datetime
    revoked_at: datetime | None = None


class NewEdgeClient(EdgeClient):
    """A client just created, with its secret: shown this once, store it now."""

    client_secret: str = Field(description="Trade it with the client id at the VTN's /auth/token.")


@router.post("/edge-clients", status_code=201, tags=["edge clients"])
async def create_edge_client(engine: SystemEngine, body: EdgeClientIn) -> NewEdgeClient:
    """Create a client of the VTN with a fresh id and secret (answered once; only its hash is kept)."""
    made = await auth.create_client(engine, body.name.strip(), body.head_end_system, body.role)
    kept = await auth.get_client(engine, made.client_id)
    assert kept is not None  # just committed
    return NewEdgeClient.model_validate(kept | {"client_secret": made.client_secret})


@router.get("/edge-clients/{client_id}", tags=["edge clients"])
async def get_edge_client(engine: SystemEngine, client_id: IdPath) -> EdgeClient:
    """One client, revoked or not."""
    kept = await auth.get_client(engine, client_id)
    if kept is None:
        raise not_found("edge client", client_id)
    return EdgeClient.model_validate(kept)


@router.post("/edge-clients/{client_id}/revoke", tags=["edge clients"])
async def revoke_edge_client(engine: SystemEngine, client_id: IdPath) -> EdgeClient:
    """Revoke a client: its tokens stop working at once and it gets no new ones. Revoking a revoked client
    answers it as it is (the first revocation's time stays); 404 for a client that never existed."""
    await auth.revoke(engine, client_id)
    kept = await auth.get_client(engine, client_id)
    if kept is None:
        raise not_found("edge client", client_id)
    return EdgeClient.model_validate(kept)
