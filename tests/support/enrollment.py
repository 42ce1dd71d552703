"""Enrollment requests (F1) as the flow tests make them: customers loaded from a CIS extract, the program
created through Asset Hub's API, request bodies, and reads of the answers and of both systems' tables."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from sqlalchemy import func, select

from derbridge.assethub.adapters import tables as ah
from derbridge.assethub.adapters.cis_loader import AssetHubCisLoader
from derbridge.cis.extract import CIS_COLUMNS
from derbridge.cis.importer import import_extract
from derbridge.contracts.envelope import Envelope
from derbridge.derms.adapters import tables as dm
from derbridge.derms.adapters.cis_loader import DermsCisLoader
from derbridge.runtime import Runtime

if TYPE_CHECKING:
    from tests.support.system import System


PROGRAM = "SUMMER-BYOT"
PROBLEM = "application/problem+json"


def import_cis(runtime: Runtime, path: Path) -> None:
    """Load a CIS extract into both systems, as ``derbridge cis import`` does."""
    loaders = [AssetHubCisLoader(runtime.sync_engine("assethub")), DermsCisLoader(runtime.sync_engine("derms"))]
    report = import_extract(path, loaders)
    assert report.rejected == []


def load_customers(runtime: Runtime, tmp_path: Path, rows: list[dict[str, str]]) -> None:
    """Write ``rows`` as a CIS extract and import it into both systems."""
    path = tmp_path / "cis.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=CIS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    import_cis(runtime, path)


async def create_program(system: System, code: str = PROGRAM, **assethub: Any) -> None:
    """Create an ACTIVE program, open since March 2027, in Asset Hub through its API, and let program sync
    carry it to the DERMS (the bridge settled)."""
    body = {
        "program_code": code,
        "name": f"Program {code}",
        "status": "ACTIVE",
        "enrollment_opens_at": "2027-03-01T00:00:00Z",
    } | assethub
    response = await system.client.post("/assethub/v1/programs", json=body)
    assert response.status_code == 201, response.text
    await system.settle()
    response = await system.client.get(f"/derms/v1/programs/{code}")
    assert response.status_code == 200, response.text


def device(n: int, *, head_end: str = "ECOBEE", sequence: int = 1, device_type: str = "THERMOSTAT") -> dict[str, Any]:
    """Device n of ``head_end`` as a request lists it (nic id ``NIC{n}``)."""
    return {
        "sequence": sequence,
        "device_type": device_type,
        "manufacturer": "ecobee",
        "model": "ecobee3 lite",
        "serial_no": f"EB{n:07d}",
        "nic_id": f"NIC{n}",
        "head_end_system": head_end,
        "badge_no": None,
    }


def request_body(
    n: int,
    *,
    request_id: str | None = None,
    program: str = PROGRAM,
    devices: list[dict[str, Any]] | None = None,
    start_date: Any = "2027-06-15",
    **changes: Any,
) -> dict[str, Any]:
    """An enrollment request of customer n for device n (the F1 request shape)."""
    body: dict[str, Any] = {
        "request_id": request_id or f"R{n}",
        "requested_at": "2027-05-20T10:00:00Z",
        "customer": {
            "cis_person_id": f"P{n}",
            "cis_account_id": f"A{n}",
            "name": f"Customer {n}",
            "home_phone": "555-0100",
            "business_phone": None,
            "email": f"c{n}@example.org",
        },
        "program": {"program_code": program, "cis_service_agreement_id": f"SA{n}", "start_date": start_date},
        "location": {
            "division": "NORTH",
            "cis_premise_id": f"PR{n}",
            "cis_service_point_id": f"SP{n}",
            "time_zone": "America/Chicago",
            "address1": f"{n} Main St",
            "city": "Springfield",
            "county": "Sangamon",
            "state": "IL",
            "postal": "62701",
            "country": "US",
        },
        "devices": devices if devices is not None else [device(n)],
        "installation_method": "CUSTOMER_INSTALLED",
        "asset_ownership": "CUSTOMER_OWNED",
    }
    body.update(changes)
    return body


async def post_request(client: httpx.AsyncClient, body: dict[str, Any], head_end: str = "ECOBEE") -> dict[str, Any]:
    """Post one request to the DERMS; assert 202; return what is recorded."""
    response = await client.post("/derms/v1/enrollment-requests", json=body | {"head_end_system": head_end})
    assert response.status_code == 202, response.text
    recorded: dict[str, Any] = response.json()
    return recorded


async def post_batch(client: httpx.AsyncClient, head_end: str, bodies: list[dict[str, Any]]) -> dict[str, Any]:
    """Post a batch to the DERMS; assert 202; return the batch answer."""
    response = await client.post(
        "/derms/v1/enrollment-requests/batch", json={"head_end_system": head_end, "requests": bodies}
    )
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def read_request(client: httpx.AsyncClient, head_end: str, request_id: str) -> dict[str, Any]:
    """What the aggregator reads about a request at the DERMS."""
    response = await client.get(f"/derms/v1/enrollment-requests/{head_end}/{request_id}")
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


def codes(recorded: dict[str, Any]) -> list[str]:
    """The rejection codes of a recorded request."""
    return [r["code"] for r in recorded["rejections"]]


async def count(system: System, name: str, table: Any, *where: Any) -> int:
    """Rows of ``table`` in system ``name`` matching ``where``."""
    async with system.runtime.async_engine(name).connect() as connection:  # type: ignore[arg-type]
        return int(await connection.scalar(select(func.count()).select_from(table).where(*where)) or 0)


async def outbox_envelopes(system: System, name: str, message_type: str) -> list[Envelope]:
    """The envelopes of ``message_type`` in system ``name``'s outbox, in order."""
    outbox = ah.outbox if name == "assethub" else dm.outbox
    async with system.runtime.async_engine(name).connect() as connection:  # type: ignore[arg-type]
        rows = await connection.execute(
            select(outbox.c.envelope).where(outbox.c.type == message_type).order_by(outbox.c.position)
        )
        return [Envelope.model_validate_json(r.envelope) for r in rows]
