"""What the VTN tests share: the OpenADR resource attributes of an F1 request, which event is a program's
status event, a resource's attributes by type, and a webhook receiver on loopback."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse

from tests.support.enrollment import request_body


def enrollment_attributes(n: int) -> list[dict[str, Any]]:
    """The enrollment attributes of request n of the F1 tests (customer n, device NIC{n})."""
    body = request_body(n)
    c, p, loc, d = body["customer"], body["program"], body["location"], body["devices"][0]
    pairs = {
        "ENROLLMENT_PROGRAM": p["program_code"],
        "PROGRAM_START_DATE": p["start_date"],
        "CIS_SERVICE_AGREEMENT_ID": p["cis_service_agreement_id"],
        "CIS_PERSON_ID": c["cis_person_id"],
        "CIS_ACCOUNT_ID": c["cis_account_id"],
        "CUSTOMER_NAME": c["name"],
        "EMAIL": c["email"],
        "DIVISION": loc["division"],
        "CIS_PREMISE_ID": loc["cis_premise_id"],
        "CIS_SERVICE_POINT_ID": loc["cis_service_point_id"],
        "TIME_ZONE": loc["time_zone"],
        "CITY": loc["city"],
        "STATE": loc["state"],
        "POSTAL_CODE": loc["postal"],
        "COUNTRY": loc["country"],
        "DEVICE_TYPE": d["device_type"],
        "MANUFACTURER": d["manufacturer"],
        "MODEL": d["model"],
        "SERIAL_NUMBER": d["serial_no"],
        "NIC_ID": d["nic_id"],
        "INSTALLATION_METHOD": body["installation_method"],
        "ASSET_OWNERSHIP": body["asset_ownership"],
    }
    return [{"type": k, "values": [v]} for k, v in pairs.items()] + [{"type": "ADDRESS", "values": [loc["address1"]]}]


def is_status_event(event: dict[str, Any]) -> bool:
    """The program's standing status event (the VENs' heartbeats), not a DERMS program event."""
    return bool(event["eventName"].endswith(" status"))


def attributes_of(resource: dict[str, Any]) -> dict[str, list[Any]]:
    return {a["type"]: a["values"] for a in resource.get("attributes", [])}


class Receiver:
    """A webhook endpoint on loopback: answers the echo challenge, records notifications and tokens."""

    def __init__(self) -> None:
        self.received: list[tuple[str | None, dict[str, Any]]] = []
        self.app = FastAPI()

        @self.app.get("/hook")
        async def challenge(echo: str) -> PlainTextResponse:
            return PlainTextResponse(echo)

        @self.app.post("/hook")
        async def notify(request: Request) -> dict[str, str]:
            self.received.append((request.headers.get("authorization"), await request.json()))
            return {"status": "ok"}
