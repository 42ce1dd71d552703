"""``derbridge smoke``: a post-deployment check that drives one small loop through the public HTTP APIs of a
running deployment, as its users would, and cleans up after itself (docs/smoke.md).

Everything goes through HTTP — Asset Hub's API, the DERMS's API and the edge's OpenADR 3.1 VTN — never a
database, so it checks what an operator deployed: the processes, their settings, the bridge between them,
the jobs, the shared secrets. One run, ``SMOKE-<UTC time>-<random>``, names every record it makes, so two
runs (or a run and real traffic) never collide and anything left behind says where it came from:

1. **reach**: each API answers and accepts the service credential;
2. **customer**: a test customer (person, account, premise, service point ``SMOKE-…``) loaded into both
   systems with a one-row CIS extract (``POST …/cis-imports``);
3. **program**: an ACTIVE program ``SMOKE-…`` made in Asset Hub, seen by the DERMS (program sync);
4. **aggregator**: a VTN client of head-end ``SMOKE-…`` (``POST /derms/v1/edge-clients``), its token, its VEN;
5. **enrollment request**: one resource with enrollment attributes on the VTN, as an aggregator onboards;
6. **enrollment active**: the enrollment ACTIVE in Asset Hub, in the DERMS's record of the request and in the
   resource's ``ENROLLMENT_STATE`` on the VTN (F1, the setup status check F2, F3);
7. **status check**: an agent's check answered, and the VEN's fresh reading taken (F2 through the edge);
8. **scores**: a score transfer (F4) loaded by the DERMS — the event's candidates need a current score;
9. **event**: a DEVICE_TEST event of one device, its reservation seen by Asset Hub and on the VTN (F5);
10. **cancellation**: the event cancelled, seen by Asset Hub and withdrawn from the VTN (F6).

Then, whatever happened, each thing made is undone in reverse order, each undo a step of its own:
the event cancelled (if it is not), the enrollment unenrolled (seen by the DERMS and the VTN), the VEN and
its resource deleted, the client revoked, the program CLOSED, the customer's account CLOSED. The domain
keeps history by design — programs, enrollments, events, CIS accounts and edge clients are closed, never
deleted — so those stay, marked ``SMOKE-…`` and closed; only the VTN's VEN and resource are deleted.

The steps are data (:data:`STEPS`); :func:`run_smoke` runs them and hands each result to a callback as it
comes, so the CLI prints one line per step; :class:`SmokeReport` is the whole run.
"""

from __future__ import annotations

import csv
import io
import secrets
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

import httpx

ASSETHUB_PREFIX = "/assethub/v1"
DERMS_PREFIX = "/derms/v1"
VTN_PREFIX = "/openadr3/3.1.0"
POLL_SECONDS = 0.5
"""Between two reads while waiting for something to reach another system."""
REQUEST_SECONDS = 30.0
"""The longest one HTTP call may take."""
EVENT_STARTS_IN = timedelta(hours=1)
"""The test event starts this long after it is made: it must still be before its start when it is cancelled."""


def base_url(url: str, prefix: str) -> str:
    """The API's base URL from what an operator types: the server's root (``http://host:8080``), or the
    API's own URL (``…/assethub/v1``, also behind a proxy's path such as ``https://gw/dr/assethub/v1``)."""
    text = url.strip().rstrip("/")
    if not text.startswith(("http://", "https://")):
        text = "http://" + text
    return text if text.endswith(prefix) else text + prefix


@dataclass(frozen=True)
class Endpoints:
    """Where each system's API is (base URLs, prefixes included)."""

    assethub: str
    derms: str
    vtn: str

    @classmethod
    def parse(cls, assethub: str, derms: str, vtn: str) -> Endpoints:
        """Each URL as :func:`base_url` reads it."""
        return cls(base_url(assethub, ASSETHUB_PREFIX), base_url(derms, DERMS_PREFIX), base_url(vtn, VTN_PREFIX))


class Failure(StrEnum):
    """Why a step failed, which the CLI turns into its exit code."""

    UNREACHABLE = "unreachable"
    """Nothing answers at a URL."""
    REFUSED = "refused"
    """A credential was refused, or a rule refused what the step asked."""
    TIMEOUT = "timeout"
    """Something did not reach the other side in time."""
    FAILED = "failed"
    """An API answered something else than it should."""
    WRONG_URL = "wrong-url"
    """A server answers at a URL, but not the API named: the option is wrong (nothing was done)."""


class SmokeFailure(Exception):
    """A step failed: what went wrong, and what to check."""

    def __init__(self, kind: Failure, message: str, check: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message
        self.check = check


@dataclass(frozen=True)
class StepResult:
    """One step's line: its name, passed or not, how long it took, what it saw, and what to check if not."""

    step: str
    ok: bool
    seconds: float
    detail: str
    cleanup: bool = False
    failure: Failure | None = None
    check: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The step as ``--json`` prints it."""
        return {
            "step": self.step,
            "ok": self.ok,
            "seconds": round(self.seconds, 3),
            "detail": self.detail,
            "cleanup": self.cleanup,
            "failure": self.failure.value if self.failure else None,
            "check": self.check,
        }


@dataclass
class SmokeReport:
    """A whole run: its id and every step, the loop's then the clean-up's."""

    run_id: str
    endpoints: Endpoints
    steps: list[StepResult] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    """What the run made and leaves behind on purpose (closed records, kept as history)."""
    made: dict[str, str] = field(default_factory=dict)
    """The ids of what the run made (customer, program, client, VEN, resource, enrollment, event): where to
    look when a step failed, and what a test checks the clean-up of."""

    @property
    def ok(self) -> bool:
        """True when every step passed, clean-up included."""
        return all(step.ok for step in self.steps)

    @property
    def first_failure(self) -> StepResult | None:
        """The first step that failed (the loop's before the clean-up's)."""
        return next((step for step in self.steps if not step.ok), None)

    def as_dict(self) -> dict[str, Any]:
        """The report as ``--json`` prints it."""
        return {
            "run_id": self.run_id,
            "ok": self.ok,
            "endpoints": {
                "assethub": self.endpoints.assethub,
                "derms": self.endpoints.derms,
                "vtn": self.endpoints.vtn,
            },
            "steps": [step.as_dict() for step in self.steps],
            "made": self.made,
            "left": self.left,
        }


def new_run_id(now: datetime | None = None) -> str:
    """``SMOKE-<UTC time>-<random>``: sortable, unique, a valid program code, head-end and CIS id."""
    at = now or datetime.now(UTC)
    return f"SMOKE-{at:%Y%m%d%H%M%S}-{secrets.token_hex(3).upper()}"


# --- talking to the APIs ------------------------------------------------------------------------------


class Api:
    """One system's API: calls that turn transport errors and refusals into :class:`SmokeFailure` naming
    the system, its URL and the option that set it."""

    def __init__(
        self, name: str, option: str, base: str, prefix: str, token: str | None, transport: httpx.BaseTransport | None
    ) -> None:
        self.name = name
        self.option = option
        self.base = base
        self.prefix = prefix
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.http = httpx.Client(base_url=base, headers=headers, timeout=REQUEST_SECONDS, transport=transport)

    def close(self) -> None:
        """Close the connections."""
        self.http.close()

    def call(self, method: str, path: str, *, expect: tuple[int, ...] = (200,), **kwargs: Any) -> httpx.Response:
        """One call; an answer whose status is not in ``expect`` fails the step."""
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.TransportError as error:
            raise SmokeFailure(
                Failure.UNREACHABLE,
                f"cannot reach {self.name} at {self.base} ({type(error).__name__}: {error})",
                f"is {self.name} running, and is {self.option} its URL (the server's root or …{self.prefix})?",
            ) from None
        if response.status_code in expect:
            return response
        raise self.refusal(method, path, response)

    def refusal(self, method: str, path: str, response: httpx.Response) -> SmokeFailure:
        """The failure an unexpected answer means."""
        status = response.status_code
        said = _problem_text(response)
        where = f"{method} {self.base}{path}"
        if status == 401:
            return SmokeFailure(
                Failure.REFUSED,
                f"{self.name} refused the credential ({where}: 401 {said})",
                "pass the deployment's service credential with --token or DERBRIDGE_API_TOKEN"
                if self.option != "--vtn"
                else "the VTN refused the test client's token: are the VTN processes sharing edge.token_secret?",
            )
        kind = Failure.REFUSED if status in (403, 409, 422) else Failure.FAILED
        return SmokeFailure(kind, f"{self.name} answered {where}: {status} {said}", f"{self.name}'s log")


def _problem_text(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        title, detail = body.get("title"), body.get("detail")
        return " — ".join(str(part) for part in (title, detail) if part) or str(body)[:300]
    return str(body)[:300]


def attribute(resource: dict[str, Any], kind: str) -> str | None:
    """The first value of one of a VTN resource's attributes."""
    for item in resource.get("attributes") or []:
        if item.get("type") == kind and item.get("values"):
            return str(item["values"][0])
    return None


def wait_for(what: str, probe: Callable[[], tuple[Any, str]], timeout: float, check: str) -> Any:
    """Call ``probe`` until it gives a value (not None), at most ``timeout`` seconds. ``probe`` also says
    what it sees, so that a timeout tells where things stopped."""
    deadline = time.monotonic() + timeout
    while True:
        value, seen = probe()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise SmokeFailure(Failure.TIMEOUT, f"{what} not seen after {timeout:.0f} s ({seen})", check)
        time.sleep(POLL_SECONDS)


# --- the run ------------------------------------------------------------------------------------------


BRIDGE_CHECK = (
    "is the bridge running and delivering (derbridge messages stats; /bridge/v1 on the bridge's server), and "
    "are both systems' jobs running (their /readyz and logs)?"
)


@dataclass
class SmokeRun:
    """What one run holds: its APIs, the ids it made, and the undo of each thing it made."""

    run_id: str
    endpoints: Endpoints
    timeout: float
    assethub: Api
    derms: Api
    vtn_public: Api
    transport: httpx.BaseTransport | None = None
    vtn: Api | None = None
    undo: list[tuple[str, Callable[[SmokeRun], str]]] = field(default_factory=list)
    left: list[str] = field(default_factory=list)
    client_id: str | None = None
    client_secret: str | None = None
    ven_id: str | None = None
    resource_id: str | None = None
    enrollment_id: str | None = None
    event_id: str | None = None
    vtn_event_id: str | None = None

    @property
    def code(self) -> str:
        """The run's id as a program code, head-end and CIS id."""
        return self.run_id

    @property
    def nic_id(self) -> str:
        """The test device's id at its head-end."""
        return f"{self.run_id}-T1"

    def made(self) -> dict[str, str]:
        """The ids of what this run made so far."""
        ids = {
            "client_id": self.client_id,
            "ven_id": self.ven_id,
            "resource_id": self.resource_id,
            "enrollment_id": self.enrollment_id,
            "event_id": self.event_id,
        }
        undone = {name for name, _ in self.undo}
        base = {"cis_account_id": self.run_id} if "customer closed" in undone else {}
        if "program closed" in undone:
            base["program_code"] = self.code
        if self.client_id is not None:
            base["head_end_system"] = self.code
            base["nic_id"] = self.nic_id
        return base | {k: v for k, v in ids.items() if v is not None}

    def ven(self) -> Api:
        """The test aggregator's VEN session (after the aggregator step)."""
        if self.vtn is None:
            raise SmokeFailure(Failure.FAILED, "no VTN session: the aggregator step did not pass", "the step above")
        return self.vtn

    def close(self) -> None:
        """Close every connection."""
        for api in (self.assethub, self.derms, self.vtn_public, self.vtn):
            if api is not None:
                api.close()


@dataclass(frozen=True)
class Step:
    """One step of the loop: its name and what it does (returns the detail of its line)."""

    name: str
    run: Callable[[SmokeRun], str]


def _reach(run: SmokeRun) -> str:
    for api, path, key in (
        (run.assethub, "/programs", "items"),
        (run.derms, "/programs", "items"),
        (run.vtn_public, "/auth/server", "tokenURL"),
    ):
        response = api.call("GET", path, expect=(200, 404), params={"limit": 1} if key == "items" else None)
        try:
            answer = response.json() if response.status_code == 200 else None
        except ValueError:
            answer = None
        if not isinstance(answer, dict) or key not in answer:
            # A server answers, but not this API there: the URL names another server or path.
            raise SmokeFailure(
                Failure.WRONG_URL,
                f"no {api.name} API at {api.base} (GET {path}: {response.status_code} {_problem_text(response)[:120]})",
                f"{api.option} must be the server's root (http://host:8080) or the API's own URL (…{api.prefix})",
            )
    return "Asset Hub, the DERMS and the VTN answer; the service credential is accepted"


def cis_extract(run_id: str, status: str) -> str:
    """The one-row CIS extract of the run's test customer (account ``status``)."""
    from derbridge.cis.extract import CIS_COLUMNS

    row = {
        "cis_person_id": run_id,
        "name": f"Smoke Test {run_id}",
        "email": "",
        "home_phone": "",
        "business_phone": "",
        "cis_account_id": run_id,
        "account_status": status,
        "cis_premise_id": run_id,
        "cis_service_point_id": run_id,
        "division": "SMOKE",
        "address1": "1 Smoke Test Way",
        "address2": "",
        "address3": "",
        "address4": "",
        "city": "Testville",
        "county": "",
        "state": "ZZ",
        "postal": "00000",
        "country": "US",
        "time_zone": "UTC",
        "latitude": "",
        "longitude": "",
    }
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CIS_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerow(row)
    return buffer.getvalue()


def _import_customer(run: SmokeRun, status: str) -> None:
    body = cis_extract(run.run_id, status).encode()
    for api in (run.assethub, run.derms):
        counts = api.call("POST", "/cis-imports", content=body, headers={"Content-Type": "text/csv"}).json()
        if counts.get("rejected"):
            raise SmokeFailure(
                Failure.FAILED,
                f"{api.name} rejected the test customer's CIS row: {counts.get('rejected_rows')}",
                "docs/cis-import.md",
            )


def _customer(run: SmokeRun) -> str:
    _import_customer(run, "ACTIVE")
    run.undo.append(("customer closed", _close_customer))
    return f"account {run.run_id} loaded into Asset Hub and the DERMS"


def _close_customer(run: SmokeRun) -> str:
    _import_customer(run, "CLOSED")
    run.left.append(f"CIS account {run.run_id} (CLOSED in both systems: accounts are kept as history)")
    return f"account {run.run_id} CLOSED in both systems"


def _program(run: SmokeRun) -> str:
    run.assethub.call(
        "POST",
        "/programs",
        expect=(201,),
        json={
            "program_code": run.code,
            "name": f"derbridge smoke test {run.run_id}",
            "status": "ACTIVE",
            "eligible_device_types": ["THERMOSTAT"],
        },
    )
    run.undo.append(("program closed", _close_program))

    def in_derms() -> tuple[Any, str]:
        response = run.derms.call("GET", f"/programs/{run.code}", expect=(200, 404))
        if response.status_code == 404:
            return None, "the DERMS does not have it yet"
        program = response.json()
        return (program if program["status"] == "ACTIVE" else None), f"the DERMS has it {program['status']}"

    wait_for(f"program {run.code} in the DERMS", in_derms, run.timeout, BRIDGE_CHECK)
    return f"program {run.code} ACTIVE in Asset Hub and in the DERMS"


def _close_program(run: SmokeRun) -> str:
    run.assethub.call("PATCH", f"/programs/{run.code}", json={"status": "CLOSED"})

    def closed() -> tuple[Any, str]:
        status = run.derms.call("GET", f"/programs/{run.code}").json()["status"]
        return (True if status == "CLOSED" else None), f"the DERMS has it {status}"

    wait_for(f"program {run.code} CLOSED in the DERMS", closed, run.timeout, BRIDGE_CHECK)
    run.left.append(
        f"program {run.code} (CLOSED: programs are kept as history; the VTN keeps its mirror of it, with its "
        "status event, as it does for every DERMS program)"
    )
    return f"program {run.code} CLOSED in Asset Hub and in the DERMS"


def _aggregator(run: SmokeRun) -> str:
    made = run.derms.call(
        "POST",
        "/edge-clients",
        expect=(201,),
        json={"name": f"derbridge smoke {run.run_id}", "head_end_system": run.code, "role": "ven"},
    ).json()
    run.client_id, run.client_secret = str(made["client_id"]), str(made["client_secret"])
    run.undo.append(("client revoked", _revoke_client))
    token = _token(run)
    run.vtn = Api("VTN", "--vtn", run.endpoints.vtn, VTN_PREFIX, token, run.transport)
    ven = run.vtn.call("POST", "/vens", expect=(201,), json={"objectType": "VEN_VEN_REQUEST", "venName": run.code})
    run.ven_id = str(ven.json()["id"])
    run.undo.append(("VEN deleted", _delete_ven))
    return f"VTN client {run.client_id} (head-end {run.code}), its token and VEN {run.ven_id}"


def _token(run: SmokeRun) -> str:
    response = run.vtn_public.call(
        "POST",
        "/auth/token",
        expect=(200, 400, 401),
        data={"grant_type": "client_credentials", "client_id": run.client_id, "client_secret": run.client_secret},
    )
    if response.status_code != 200:
        raise SmokeFailure(
            Failure.REFUSED,
            f"the VTN refused the client the DERMS just made ({response.status_code} {_problem_text(response)})",
            "do --derms and --vtn name the same deployment (the same DERMS database)?",
        )
    return str(response.json()["access_token"])


def _revoke_client(run: SmokeRun) -> str:
    run.derms.call("POST", f"/edge-clients/{run.client_id}/revoke")
    refused = run.vtn_public.call(
        "POST",
        "/auth/token",
        expect=(200, 400, 401),
        data={"grant_type": "client_credentials", "client_id": run.client_id, "client_secret": run.client_secret},
    )
    if refused.status_code == 200:
        raise SmokeFailure(Failure.FAILED, f"client {run.client_id} still gets tokens after its revocation", "edge")
    run.left.append(f"VTN client {run.client_id} (revoked: clients are kept, never deleted)")
    return f"client {run.client_id} revoked: the VTN refuses it a token"


def _delete_ven(run: SmokeRun) -> str:
    ven = run.ven()
    ven.call("DELETE", f"/vens/{run.ven_id}")
    gone = ven.call("GET", f"/vens/{run.ven_id}", expect=(200, 404))
    if gone.status_code != 404:
        raise SmokeFailure(Failure.FAILED, f"VEN {run.ven_id} is still on the VTN after its deletion", "edge")
    if (
        run.resource_id is not None
        and ven.call("GET", f"/resources/{run.resource_id}", expect=(200, 404)).status_code != 404
    ):
        raise SmokeFailure(Failure.FAILED, f"resource {run.resource_id} outlived its VEN", "edge")
    return f"VEN {run.ven_id} and its resource deleted from the VTN"


def resource_request(run: SmokeRun) -> dict[str, Any]:
    """The test device's resource: an enrollment request for the test customer in the test program."""
    values = {
        "ENROLLMENT_PROGRAM": run.code,
        "CIS_PERSON_ID": run.run_id,
        "CIS_ACCOUNT_ID": run.run_id,
        "CUSTOMER_NAME": f"Smoke Test {run.run_id}",
        "DIVISION": "SMOKE",
        "CIS_PREMISE_ID": run.run_id,
        "CIS_SERVICE_POINT_ID": run.run_id,
        "TIME_ZONE": "UTC",
        "CITY": "Testville",
        "STATE": "ZZ",
        "POSTAL_CODE": "00000",
        "COUNTRY": "US",
        "ADDRESS": "1 Smoke Test Way",
        "DEVICE_TYPE": "THERMOSTAT",
        "MANUFACTURER": "derbridge",
        "MODEL": "smoke",
        "SERIAL_NUMBER": run.nic_id,
        "NIC_ID": run.nic_id,
        "INSTALLATION_METHOD": "CUSTOMER_INSTALLED",
        "ASSET_OWNERSHIP": "CUSTOMER_OWNED",
    }
    return {
        "objectType": "VEN_RESOURCE_REQUEST",
        "resourceName": run.nic_id,
        "venID": run.ven_id,
        "attributes": [{"type": kind, "values": [value]} for kind, value in values.items()],
    }


def _enrollment_request(run: SmokeRun) -> str:
    made = run.ven().call("POST", "/resources", expect=(201,), json=resource_request(run)).json()
    run.resource_id = str(made["id"])
    status = attribute(made, "ENROLLMENT_STATUS")
    if status != "RECEIVED":
        raise SmokeFailure(Failure.FAILED, f"the VTN shows the new request as {status}, not RECEIVED", "edge")
    return f"resource {run.resource_id} (device {run.nic_id}) RECEIVED by the VTN"


def _enrollment_active(run: SmokeRun) -> str:
    def resource() -> dict[str, Any]:
        found: dict[str, Any] = run.ven().call("GET", f"/resources/{run.resource_id}").json()
        return found

    def answered() -> tuple[Any, str]:
        found = resource()
        status = attribute(found, "ENROLLMENT_STATUS")
        if status == "REJECTED":
            reasons = [
                v
                for a in found.get("attributes") or []
                if a.get("type") == "ENROLLMENT_REJECTION"
                for v in a.get("values") or []
            ]
            raise SmokeFailure(Failure.REFUSED, f"Asset Hub rejected the enrollment request: {reasons}", "the reasons")
        return attribute(found, "ENROLLMENT_ID"), f"ENROLLMENT_STATUS {status} on the VTN"

    run.enrollment_id = str(wait_for("Asset Hub's answer to the request", answered, run.timeout, BRIDGE_CHECK))
    run.undo.append(("unenrolled", _unenroll))

    def active() -> tuple[Any, str]:
        states = {
            "Asset Hub": run.assethub.call("GET", f"/enrollments/{run.enrollment_id}").json()["state"],
            "DERMS": run.derms.call("GET", f"/enrollment-requests/{run.code}/{run.resource_id}").json()["state"],
            "VTN": attribute(resource(), "ENROLLMENT_STATE"),
        }
        seen = ", ".join(f"{system} {state}" for system, state in states.items())
        if states["Asset Hub"] in ("SETUP_FAILED", "REJECTED"):
            raise SmokeFailure(Failure.FAILED, f"enrollment {run.enrollment_id} is {states['Asset Hub']}", seen)
        return (True if set(states.values()) == {"ACTIVE"} else None), seen

    wait_for(
        f"enrollment {run.enrollment_id} ACTIVE everywhere",
        active,
        run.timeout,
        "the device setup status check (Asset Hub's enrollment-setup job), then the enrollment sync: " + BRIDGE_CHECK,
    )
    return f"enrollment {run.enrollment_id} ACTIVE in Asset Hub, the DERMS and on the VTN"


def _unenroll(run: SmokeRun) -> str:
    state = run.assethub.call("GET", f"/enrollments/{run.enrollment_id}").json()["state"]
    if state == "ACTIVE":
        run.assethub.call("POST", f"/enrollments/{run.enrollment_id}/unenroll", json={"reason": "derbridge smoke"})
    elif state not in ("UNENROLLED",):
        raise SmokeFailure(
            Failure.FAILED,
            f"enrollment {run.enrollment_id} is {state}: Asset Hub unenrolls only an ACTIVE one; it is left {state}",
            "derbridge enrollments show " + str(run.enrollment_id),
        )

    def everywhere() -> tuple[Any, str]:
        derms = run.derms.call("GET", f"/enrollment-requests/{run.code}/{run.resource_id}").json()["state"]
        vtn = attribute(run.ven().call("GET", f"/resources/{run.resource_id}").json(), "ENROLLMENT_STATE")
        return (True if derms == vtn == "UNENROLLED" else None), f"DERMS {derms}, VTN {vtn}"

    wait_for(f"enrollment {run.enrollment_id} UNENROLLED", everywhere, run.timeout, BRIDGE_CHECK)
    run.left.append(f"enrollment {run.enrollment_id} (UNENROLLED: enrollments are kept as history)")
    return f"enrollment {run.enrollment_id} UNENROLLED in Asset Hub, the DERMS and on the VTN"


def _status_check(run: SmokeRun) -> str:
    check = run.assethub.call(
        "POST",
        "/status-checks",
        expect=(202,),
        json={"head_end_system": run.code, "nic_id": run.nic_id, "requested_by": "derbridge smoke"},
    ).json()
    check_id = check["check_id"]

    def answered() -> tuple[Any, str]:
        found = run.assethub.call("GET", f"/status-checks/{check_id}").json()
        return (found if found["status"] != "OPEN" else None), f"check {check_id} {found['status']}"

    found = wait_for(f"the DERMS's answer to status check {check_id}", answered, run.timeout, BRIDGE_CHECK)
    if found["status"] != "ANSWERED" or found["communication_status"] != "ONLINE":
        raise SmokeFailure(
            Failure.FAILED,
            f"check {check_id} is {found['status']} {found.get('result')} {found.get('communication_status')} "
            f"({found.get('detail')}), not ANSWERED ONLINE",
            "the DERMS's communication status of the device (the VTN records it on every resource write)",
        )
    # An agent's check asks the device's VEN for a fresh reading: an event addressed to it, targeted at the
    # resource. Answer it as an aggregator would; the VTN then deletes the event.
    reading = wait_for(
        "the VTN's request for a fresh reading",
        lambda: (_fresh_reading_event(run), "no event yet"),
        run.timeout,
        "the DERMS's edge (fresh readings for an agent's status check)",
    )
    run.ven().call(
        "POST",
        "/reports",
        expect=(201,),
        json={
            "eventID": reading["id"],
            "programID": reading["programID"],
            "clientName": run.code,
            "reportName": f"{run.code} fresh reading",
            "resources": [
                {
                    "resourceName": run.nic_id,
                    "intervals": [{"id": 0, "payloads": [{"type": "OPERATING_STATE", "values": ["NORMAL"]}]}],
                }
            ],
        },
    )
    wait_for(
        "the fresh reading's event withdrawn",
        lambda: (True if _fresh_reading_event(run) is None else None, "the event is still there"),
        run.timeout,
        "the edge's report handling",
    )
    return f"check {check_id} ANSWERED ONLINE; the VEN's fresh reading taken"


def _ven_events(run: SmokeRun) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    skip = 0
    while True:
        page = run.ven().call("GET", "/events", params={"skip": skip, "limit": 50}).json()
        events.extend(page)
        if not page:  # a page may be cut short by bytes (edge.page_max_bytes): only an empty one is the end
            return events
        skip += len(page)


def _fresh_reading_event(run: SmokeRun) -> dict[str, Any] | None:
    for event in _ven_events(run):
        kinds = {d.get("payloadType") for d in event.get("reportDescriptors") or []}
        if run.nic_id in (event.get("targets") or []) and "PARTICIPATION" not in kinds and "OPERATING_STATE" in kinds:
            return event
    return None


def _scores(run: SmokeRun) -> str:
    def started() -> tuple[Any, str]:
        # Asset Hub answers once the whole file is made and stored: a large utility takes a while.
        response = run.assethub.call("POST", "/score-transfers", expect=(202, 409), timeout=max(run.timeout, 30.0))
        if response.status_code == 409:
            return None, "another score transfer is running"
        return response.json(), "started"

    report = wait_for("a score transfer", started, run.timeout, "Asset Hub's score-transfer job and lease")
    if report.get("status") != "transferred" or run.code not in report.get("programs", []):
        raise SmokeFailure(Failure.FAILED, f"the score transfer did not score program {run.code}: {report}", "scores")
    file_id = report["file_id"]

    def loaded() -> tuple[Any, str]:
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 1000} | ({"after": after} if after else {})
            page = run.derms.call("GET", "/score-snapshots", params=params).json()
            for snapshot in page["items"]:
                if snapshot["file_id"] == file_id:
                    current = snapshot["is_current"]
                    return (True if current else None), f"loaded, current {current}"
            after = page.get("next_after")
            if not after:
                return None, "not loaded yet"

    wait_for(
        f"score file {file_id} current in the DERMS",
        loaded,
        run.timeout,
        "the bridge, and the claim-check file store both systems must share (settings files.*): " + BRIDGE_CHECK,
    )
    return f"score file {file_id} ({report['row_count']} devices) loaded and current in the DERMS"


def _event(run: SmokeRun) -> str:
    start = datetime.now(UTC).replace(microsecond=0) + EVENT_STARTS_IN
    event = run.derms.call(
        "POST",
        "/events",
        expect=(201,),
        json={
            "program_code": run.code,
            "event_type": "DEVICE_TEST",
            "start_at": start.isoformat(),
            "end_at": (start + timedelta(minutes=15)).isoformat(),
            "target_devices": 1,
            "created_by": "derbridge smoke",
        },
    ).json()
    run.event_id = str(event["event_id"])
    run.undo.append(("event cancelled", _cancel_if_scheduled))
    if event["reserved_count"] != 1:
        raise SmokeFailure(
            Failure.FAILED,
            f"event {run.event_id} reserved {event['reserved_count']} of {event['candidate_count']} candidates, not "
            "the test device",
            "the device's availability and score in the DERMS (GET /derms/v1/devices?head_end_system=…)",
        )

    def in_assethub() -> tuple[Any, str]:
        response = run.assethub.call("GET", f"/events/{run.event_id}", expect=(200, 404))
        if response.status_code == 404:
            return None, "Asset Hub does not have it yet"
        records = run.assethub.call("GET", f"/events/{run.event_id}/participations").json()["items"]
        return (True if len(records) == 1 else None), f"Asset Hub has {len(records)} participation records"

    wait_for(f"event {run.event_id}'s reservation in Asset Hub", in_assethub, run.timeout, BRIDGE_CHECK)

    def on_vtn() -> tuple[Any, str]:
        for found in _ven_events(run):
            if run.nic_id in (found.get("targets") or []) and any(
                d.get("payloadType") == "PARTICIPATION" for d in found.get("reportDescriptors") or []
            ):
                return found, "found"
        return None, "the VEN sees no event targeting its device"

    vtn_event = wait_for(
        f"event {run.event_id} on the VTN", on_vtn, run.timeout, "the DERMS's edge-mirror job (DERMS /readyz, logs)"
    )
    run.vtn_event_id = str(vtn_event["id"])
    return f"event {run.event_id} reserved the test device; Asset Hub and the VEN see it"


def _cancellation(run: SmokeRun) -> str:
    run.derms.call("POST", f"/events/{run.event_id}/cancel", json={"reason_text": "derbridge smoke"})
    return _cancelled_everywhere(run)


def _cancelled_everywhere(run: SmokeRun) -> str:
    def in_assethub() -> tuple[Any, str]:
        status = run.assethub.call("GET", f"/events/{run.event_id}").json()["status"]
        return (True if status == "CANCELLED" else None), f"Asset Hub has it {status}"

    wait_for(f"event {run.event_id}'s cancellation in Asset Hub", in_assethub, run.timeout, BRIDGE_CHECK)
    vtn_id = run.vtn_event_id
    if vtn_id is not None:

        def withdrawn() -> tuple[Any, str]:
            status = run.ven().call("GET", f"/events/{vtn_id}", expect=(200, 404)).status_code
            return (True if status == 404 else None), "the VEN still sees the event"

        wait_for(f"event {run.event_id} withdrawn from the VTN", withdrawn, run.timeout, "the DERMS's edge-mirror job")
    return f"event {run.event_id} CANCELLED in the DERMS and Asset Hub, withdrawn from the VTN"


def _cancel_if_scheduled(run: SmokeRun) -> str:
    status = run.derms.call("GET", f"/events/{run.event_id}").json()["status"]
    if status == "SCHEDULED":
        run.derms.call("POST", f"/events/{run.event_id}/cancel", json={"reason_text": "derbridge smoke clean-up"})
        _cancelled_everywhere(run)
    run.left.append(f"event {run.event_id} (CANCELLED: events are kept as history)")
    return f"event {run.event_id} CANCELLED"


STEPS: tuple[Step, ...] = (
    Step("reach", _reach),
    Step("customer", _customer),
    Step("program", _program),
    Step("aggregator", _aggregator),
    Step("enrollment request", _enrollment_request),
    Step("enrollment active", _enrollment_active),
    Step("status check", _status_check),
    Step("scores", _scores),
    Step("event", _event),
    Step("cancellation", _cancellation),
)
"""The loop, in order. A step that fails ends the loop; the clean-up runs whatever happened."""


@contextmanager
def _timed() -> Iterator[Callable[[], float]]:
    started = time.monotonic()
    yield lambda: time.monotonic() - started


def _attempt(name: str, action: Callable[[SmokeRun], str], run: SmokeRun, *, cleanup: bool) -> StepResult:
    with _timed() as elapsed:
        try:
            detail = action(run)
        except SmokeFailure as failure:
            return StepResult(name, False, elapsed(), failure.message, cleanup, failure.kind, failure.check)
        except (httpx.HTTPError, KeyError, TypeError, ValueError) as error:
            # An answer of an unexpected shape: the deployment is not the derbridge this command knows.
            return StepResult(
                name,
                False,
                elapsed(),
                f"unexpected answer ({type(error).__name__}: {error})",
                cleanup,
                Failure.FAILED,
                "do the URLs name a derbridge of this version?",
            )
    return StepResult(name, True, elapsed(), detail, cleanup)


def run_smoke(
    endpoints: Endpoints,
    token: str | None,
    *,
    timeout: float = 120.0,
    run_id: str | None = None,
    on_step: Callable[[StepResult], None] | None = None,
    transport: httpx.BaseTransport | None = None,
) -> SmokeReport:
    """Run the loop against ``endpoints`` with the service credential ``token``, then clean up; each step's
    result goes to ``on_step`` as it ends. ``timeout`` bounds each wait for something to reach another
    system. ``transport`` is for tests (an in-process server)."""
    run = SmokeRun(
        run_id=run_id or new_run_id(),
        endpoints=endpoints,
        timeout=timeout,
        assethub=Api("Asset Hub", "--assethub", endpoints.assethub, ASSETHUB_PREFIX, token, transport),
        derms=Api("DERMS", "--derms", endpoints.derms, DERMS_PREFIX, token, transport),
        vtn_public=Api("VTN", "--vtn", endpoints.vtn, VTN_PREFIX, None, transport),
        transport=transport,
    )
    report = SmokeReport(run.run_id, endpoints)

    def record(result: StepResult) -> None:
        report.steps.append(result)
        if on_step is not None:
            on_step(result)

    try:
        for step in STEPS:
            result = _attempt(step.name, step.run, run, cleanup=False)
            record(result)
            if not result.ok:
                break
        for name, undo in reversed(run.undo):
            record(_attempt(name, undo, run, cleanup=True))
    finally:
        run.close()
    report.left = run.left
    report.made = run.made()
    return report
