"""A simulated aggregator as a real OpenADR 3.1 VEN, on the ``openadr3`` client library (PyPI).

It drives the edge gateway's VTN exactly as an aggregator's VEN would (docs/edge.md):

- **token**: OAuth2 client credentials (``openadr3.fetch_token``, through ``/auth/server``);
- **its VEN**: registers ``<HEAD_END>-sim`` (``VEN_VEN_REQUEST``), or finds it when it already exists;
- **onboarding**: one resource per device of its inventory (``derbridge generate``), each with the enrollment
  attributes of its request, in batches through the VTN's bulk extension ``POST /resources/batch`` —
  the ``openadr3`` client has no method for it, so the call goes through the client's own httpx session
  (same base URL, same bearer token);
- **heartbeats**: a report on the program's standing status event: ``OPERATING_STATE`` NORMAL for each
  online device, ``COMMUNICATION_STATUS`` OFFLINE for each offline one (the first report is created, later
  ones replace it, so a long run keeps one heartbeat report);
- **events**: by polling ``GET /events``, and by webhook when given a callback URL (the subscription);
- **outcomes**: one report per event with the payloads of each reserved device that responded, drawn with
  scoring.md's distributions (:func:`derbridge.sim.aggregator.event_outcomes`); silent devices are not
  reported (the DERMS closes them NON_RESPONSIVE).

The ``openadr3`` client is synchronous: every method here blocks. Callers in an event loop that also serves
the VTN run them in a thread (:func:`asyncio.to_thread`).
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import openadr3

from derbridge.edge import domain
from derbridge.sim.aggregator import Aggregator, event_outcomes

PREFIX = "/openadr3/3.1.0"
BATCH = 1000
"""Resources per ``/resources/batch`` call: about 2.5 kB each, well under the server's body limit."""
PAGE = 50
"""The VTN's largest page."""


class VenFailure(RuntimeError):
    """The VTN refused a call the simulator needed."""


class VtnRefusedCredentials(VenFailure):
    """The VTN's token endpoint refused the client's id or secret."""


class VtnUnreachable(VenFailure):
    """Nothing answers at the VTN's URL (the server is down, or the URL is wrong)."""


def _ok(response: httpx.Response, what: str) -> Any:
    if not 200 <= response.status_code < 300:
        raise VenFailure(f"{what}: HTTP {response.status_code} {response.text[:500]}")
    return response.json()


def _attribute(kind: str, *values: str | None) -> dict[str, Any] | None:
    given = [v for v in values if v]
    return {"type": kind, "values": given} if given else None


def enrollment_attributes(request: dict[str, Any], device: dict[str, Any]) -> list[dict[str, Any]]:
    """The enrollment attributes of one device of an F1 request as the inventory gives it (docs/edge.md)."""
    c, p, loc = request["customer"], request["program"], request["location"]
    pairs = [
        ("ENROLLMENT_PROGRAM", p["program_code"]),
        ("PROGRAM_START_DATE", p.get("start_date")),
        ("PROGRAM_END_DATE", p.get("end_date")),
        ("CIS_SERVICE_AGREEMENT_ID", p.get("cis_service_agreement_id")),
        ("CIS_PERSON_ID", c["cis_person_id"]),
        ("CIS_ACCOUNT_ID", c["cis_account_id"]),
        ("CUSTOMER_NAME", c["name"]),
        ("HOME_PHONE", c.get("home_phone")),
        ("BUSINESS_PHONE", c.get("business_phone")),
        ("EMAIL", c.get("email")),
        ("DIVISION", loc["division"]),
        ("CIS_PREMISE_ID", loc["cis_premise_id"]),
        ("CIS_SERVICE_POINT_ID", loc["cis_service_point_id"]),
        ("TIME_ZONE", loc["time_zone"]),
        ("CITY", loc["city"]),
        ("COUNTY", loc.get("county")),
        ("STATE", loc["state"]),
        ("POSTAL_CODE", loc["postal"]),
        ("COUNTRY", loc["country"]),
        ("DEVICE_TYPE", device["device_type"]),
        ("MANUFACTURER", device["manufacturer"]),
        ("MODEL", device["model"]),
        ("SERIAL_NUMBER", device["serial_no"]),
        ("NIC_ID", device["nic_id"]),
        ("BADGE_NUMBER", device.get("badge_no")),
        ("INSTALLATION_METHOD", request["installation_method"]),
        ("ASSET_OWNERSHIP", request["asset_ownership"]),
        ("REQUESTED_AT", request.get("requested_at")),
    ]
    # A required attribute goes as the aggregator has it, even blank: Asset Hub refuses that request
    # (INVALID_REQUEST) and the aggregator reads why; an optional blank one is left out.
    required = {a.type for a in domain.ENROLLMENT_ATTRIBUTES if a.required}
    attributes: list[dict[str, Any]] = []
    for kind, value in pairs:
        if kind in required:
            attributes.append({"type": kind, "values": [value or ""]})
        elif (optional := _attribute(kind, value)) is not None:
            attributes.append(optional)
    address = _attribute("ADDRESS", loc["address1"], loc.get("address2"), loc.get("address3"), loc.get("address4"))
    return attributes + ([address] if address else [])


def outcome_payloads(outcome: dict[str, Any]) -> dict[str, Any]:
    """One resource of an outcome report: the F7 outcome (``sim.aggregator``'s shape) as the edge's payloads,
    the participation window as the interval's period."""
    payloads: list[dict[str, Any]] = [{"type": domain.PARTICIPATION, "values": [outcome["outcome"]]}]
    payloads.append({"type": domain.OPT_OUT, "values": [bool(outcome.get("preemptive_opt_out"))]})
    if outcome.get("shed_kw") is not None:
        payloads.append({"type": domain.SHED_KW, "values": [outcome["shed_kw"]]})
    if outcome.get("error_message"):
        payloads.append({"type": domain.ERROR_MESSAGE, "values": [outcome["error_message"]]})
    interval: dict[str, Any] = {"id": 0, "payloads": payloads}
    if outcome.get("participation_start_at"):
        start = datetime.fromisoformat(outcome["participation_start_at"])
        period: dict[str, Any] = {"start": start.isoformat().replace("+00:00", "Z")}
        if outcome.get("participation_end_at"):
            end = datetime.fromisoformat(outcome["participation_end_at"])
            period["duration"] = domain.iso_duration((end - start).total_seconds())
        interval["intervalPeriod"] = period
    return {"intervals": [interval]}


def is_program_event(event: dict[str, Any]) -> bool:
    """An event asking for outcomes (a DERMS program event), not a status event."""
    return any(d.get("payloadType") == domain.PARTICIPATION for d in event.get("reportDescriptors") or [])


def is_status_event(event: dict[str, Any]) -> bool:
    """A standing status event: it asks for heartbeats again and again."""
    return any(
        d.get("payloadType") == domain.OPERATING_STATE and d.get("repeat") == -1
        for d in event.get("reportDescriptors") or []
    )


@dataclass
class SimulatedVen:
    """One aggregator's VEN against a VTN at ``base_url`` (the server root; the VTN is under ``PREFIX``)."""

    base_url: str
    client_id: str
    client_secret: str
    aggregator: Aggregator
    rng: random.Random
    ven_name: str = ""
    client: openadr3.OpenADRClient | None = None
    ven_id: str | None = None
    names: dict[str, str] = field(default_factory=dict)
    """resourceName → the device's NIC id."""
    first_name: dict[str, str] = field(default_factory=dict)
    """NIC id → the resource the VEN reports it under (the first registered for it)."""
    heartbeat_report: str | None = None
    reported_events: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.ven_name = self.ven_name or f"{self.aggregator.head_end_system}-sim"

    @property
    def vtn(self) -> str:
        """The VTN's base URL."""
        return self.base_url.rstrip("/") + PREFIX

    @property
    def http(self) -> httpx.Client:
        """The ``openadr3`` client's httpx session (its bearer token): for the batch extension."""
        return self._client()._http

    def _client(self) -> openadr3.OpenADRClient:
        if self.client is None:
            raise VenFailure("connect() first")
        return self.client

    def close(self) -> None:
        """Close the client's connections."""
        if self.client is not None:
            self.client.close()

    # --- token and VEN -----------------------------------------------------------------------------

    def connect(self) -> None:
        """Fetch a token (client credentials) and find or register this aggregator's VEN."""
        try:
            token = openadr3.fetch_token(self.vtn, self.client_id, self.client_secret)
        except httpx.HTTPStatusError as error:
            status = error.response.status_code
            if status in (400, 401, 403):
                raise VtnRefusedCredentials(
                    f"the VTN refused client {self.client_id}'s credentials: check --client-id/--client-secret "
                    "(derbridge edge client add makes one)"
                ) from None
            if status == 404:
                raise VtnUnreachable(
                    f"no VTN at {self.base_url}: check --vtn (the server's base URL, e.g. http://127.0.0.1:8080)"
                ) from None
            raise VenFailure(f"the VTN's token endpoint answered HTTP {status}: {error.response.text[:300]}") from None
        except httpx.TransportError:
            raise VtnUnreachable(f"cannot reach the VTN at {self.base_url}: is derbridge up running?") from None
        self.client = openadr3.create_ven_client(self.vtn, token)
        for ven in _ok(self.client.get_vens(), "listing vens"):
            if ven.get("venName") == self.ven_name:
                self.ven_id = str(ven["id"])
                break
        else:
            made = _ok(
                self.client.create_ven({"objectType": "VEN_VEN_REQUEST", "venName": self.ven_name}), "creating the ven"
            )
            self.ven_id = str(made["id"])
        for resource in self._pages(self.client.get_resources):
            self._remember(resource)

    def _remember(self, resource: dict[str, Any]) -> None:
        name = str(resource["resourceName"])
        nic = domain.attribute_map(resource.get("attributes")).get("NIC_ID", [name])[0]
        self.names[name] = str(nic)
        self.first_name.setdefault(str(nic), name)

    def _pages(self, call: Any, **params: Any) -> Iterator[dict[str, Any]]:
        skip = 0
        while True:
            page = _ok(call(skip=skip, limit=PAGE, **params), "listing")
            yield from page
            # Not "fewer than PAGE": the VTN also cuts a page at edge.page_max_bytes (events targeting tens of
            # thousands of resources), so only an empty page is the end.
            if not page:
                return
            skip += len(page)

    # --- onboarding ----------------------------------------------------------------------------------

    def resource_requests(self) -> list[dict[str, Any]]:
        """One ``VEN_RESOURCE_REQUEST`` per device of the inventory not registered yet (named
        ``<request id>.<device sequence>``), each an enrollment request."""
        wanted = []
        for request in self.aggregator.requests:
            for device in request["devices"]:
                name = f"{request['request_id']}.{device['sequence']}"
                if name in self.names:
                    continue
                wanted.append(
                    {
                        "objectType": "VEN_RESOURCE_REQUEST",
                        "resourceName": name,
                        "venID": self.ven_id,
                        "attributes": enrollment_attributes(request, device),
                    }
                )
        return wanted

    def onboard(self, batch: int = BATCH) -> int:
        """Register every device not registered yet, ``batch`` at a time through ``/resources/batch``;
        returns how many were registered."""
        wanted = self.resource_requests()
        for start in range(0, len(wanted), batch):
            chunk = wanted[start : start + batch]
            made = _ok(self.http.post("/resources/batch", json={"resources": chunk}), "onboarding a batch")
            for resource in made["resources"]:
                self._remember(resource)
        return len(wanted)

    def enrollment_statuses(self) -> Counter[str]:
        """How many resources are RECEIVED, ACCEPTED, REJECTED (read back from the VTN, page by page)."""
        counts: Counter[str] = Counter()
        for resource in self._pages(self._client().get_resources):
            status = domain.attribute_map(resource.get("attributes")).get(domain.ENROLLMENT_STATUS)
            if status:
                counts[str(status[0])] += 1
        return counts

    # --- heartbeats ----------------------------------------------------------------------------------

    def status_event(self) -> dict[str, Any] | None:
        """The program's standing status event (the first one visible)."""
        return next((e for e in self._pages(self._client().get_events) if is_status_event(e)), None)

    def heartbeat(self, event: dict[str, Any] | None = None) -> int:
        """Report every registered device on the status event: online ones NORMAL, offline ones OFFLINE;
        returns how many devices were reported (0 when there is no status event yet)."""
        event = event or self.status_event()
        if event is None:
            return 0
        resources = []
        for nic, name in self.first_name.items():
            device = self.aggregator.devices.get(nic)
            if device is None:
                continue
            payload = (
                {"type": domain.COMMUNICATION_STATUS, "values": ["OFFLINE"]}
                if device.offline
                else {"type": domain.OPERATING_STATE, "values": ["NORMAL"]}
            )
            resources.append({"resourceName": name, "intervals": [{"id": 0, "payloads": [payload]}]})
        if not resources:
            return 0
        report = {
            "eventID": event["id"],
            "programID": event["programID"],
            "clientName": self.ven_name,
            "reportName": f"{self.ven_name} heartbeat",
            "resources": resources,
        }
        client = self._client()
        if self.heartbeat_report is None:
            self.heartbeat_report = str(_ok(client.create_report(report), "heartbeat")["id"])
        else:
            _ok(client.update_report(self.heartbeat_report, report), "heartbeat")
        return len(resources)

    # --- events and outcomes ---------------------------------------------------------------------------

    def program_events(self) -> list[dict[str, Any]]:
        """The program events addressed to this VEN now (polling)."""
        return [e for e in self._pages(self._client().get_events) if is_program_event(e)]

    def subscribe(self, callback_url: str, bearer_token: str | None = None) -> str:
        """Ask for webhooks on events (created, changed, withdrawn) and resources (enrollment answers)."""
        operation: dict[str, Any] = {
            "objects": ["EVENT", "RESOURCE"],
            "operations": ["CREATE", "UPDATE", "DELETE"],
            "callbackUrl": callback_url,
        }
        if bearer_token:
            operation["bearerToken"] = bearer_token
        made = _ok(
            self._client().create_subscription({"clientName": self.ven_name, "objectOperations": [operation]}),
            "subscribing",
        )
        return str(made["id"])

    def report_outcomes(self, event: dict[str, Any]) -> int:
        """Report what the event's targeted devices did (once per event); returns how many were reported."""
        if event["id"] in self.reported_events:
            return 0
        period = event.get("intervalPeriod") or {}
        start = datetime.fromisoformat(str(period["start"]).replace("Z", "+00:00"))
        end = start + (domain.parse_duration(str(period["duration"])) if period.get("duration") else timedelta(0))
        nics = {self.names[name] for name in event.get("targets") or [] if name in self.names}
        outcomes = event_outcomes(self.aggregator, nics, start, end, self.rng)
        self.reported_events.add(event["id"])
        if not outcomes:
            return 0
        report = {
            "eventID": event["id"],
            "programID": event["programID"],
            "clientName": self.ven_name,
            "reportName": f"{self.ven_name} outcomes",
            "resources": [{"resourceName": self.first_name[o["nic_id"]], **outcome_payloads(o)} for o in outcomes],
        }
        _ok(self._client().create_report(report), "reporting outcomes")
        return len(outcomes)
