"""The invariants the fault suite checks after every fault, read through the public APIs only: Asset Hub's
and the DERMS's ``/…/v1``, the VTN as each aggregator sees it, the bridge's operations API, ``/metrics``, and
``derbridge wait idle`` (an operator's read of what is still in flight).

Each check answers ``(ok, detail)``; :meth:`Checker.check_all` runs them all. Names:

- ``bridge-idle``: every outbox message relayed and settled (``derbridge wait idle``);
- ``no-message-stuck``: the bridge tracks none pending, retrying, parked or dead — every message delivered;
- ``exactly-once``: every resource on the VTN is one DERMS request and one Asset Hub enrollment; every
  reservation, participation and outcome is one per device and event; every request message has exactly
  one reply (tracked by correlation id);
- ``enrollments-agree``: per resource, the VTN's ENROLLMENT_STATUS / ENROLLMENT_STATE / ENROLLMENT_ID, the
  DERMS's request (status, state, enrollment id) and Asset Hub's enrollment (state) say the same;
- ``availability-agrees``: Asset Hub's ACTIVE enrollments are exactly the DERMS's AVAILABLE ones;
- ``programs-agree``: every Asset Hub program's version is the DERMS's, applied;
- ``events-agree``: each event is cancelled in both systems or in neither; its reservations are Asset Hub's
  participations (released and CANCELLED for a cancelled one); the VTN withdrew cancelled events;
- ``outcomes-agree``: a completed event has an outcome for every reserved device, the same in both;
- ``jobs-run``: every phase's event went SCHEDULED → COMPLETED (event-lifecycle) and reached the VENs
  (edge-mirror), no accepted enrollment of an online device is left PENDING (enrollment-setup), and, where
  ``/metrics`` exposes ``derbridge_job_last_success_timestamp_seconds``, every job succeeded after the heal.
"""

from __future__ import annotations

import contextlib
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from random import Random
from typing import Any

import httpx

from derbridge.edge import domain
from derbridge.sim.ven import SimulatedVen, is_program_event
from tests.support.topology import API_TOKEN, Topology

JOB_METRIC = "derbridge_job_last_success_timestamp_seconds"
Result = tuple[bool, str]
DERMS_VIEW = {"DEVICE_SETUP": "PENDING", "SETUP_FAILED": "PENDING"}
"""Asset Hub's states as the DERMS knows them: enrollment sync (F3) carries ACTIVE and UNENROLLED only, so
the setup step's states stay PENDING there (docs/flows/enrollment-sync.md)."""
TERMINAL = {"COMPLETED", "CANCELLED"}


@dataclass
class EventRecord:
    """An event the suite created: its id, and whether it was cancelled or left to run."""

    event_id: str
    phase: str
    cancel: bool
    reserved: int = 0
    expect_seen: bool = True
    """Whether an aggregator must have seen it on the VTN: not for an event that ended while a failed phase's
    topology was broken (the mirror does not publish an event already over; that phase reported it)."""


@dataclass
class Checker:
    """Reads both systems, the VTN and the bridge, and says which invariants hold."""

    topology: Topology
    credentials: dict[str, dict[str, str]]
    offline: dict[str, set[str]]
    """Head-end → NIC ids the inventory marks offline (their setup check cannot succeed)."""
    events: list[EventRecord] = field(default_factory=list)
    require_job_metrics: bool = False
    seen_event_names: Callable[[], set[str]] | None = None
    """The event names the aggregators' VENs have seen on the VTN so far (edge-mirror's effect)."""
    _vens: dict[str, SimulatedVen] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.http = httpx.Client(headers={"Authorization": f"Bearer {API_TOKEN}"}, timeout=30)

    def close(self) -> None:
        self.http.close()
        for ven in self._vens.values():
            with contextlib.suppress(Exception):
                ven.close()

    # --- reading ---------------------------------------------------------------------------------------

    def _pages(self, url: str, **params: Any) -> Iterator[dict[str, Any]]:
        after: str | None = None
        while True:
            answer = self.http.get(url, params=params | {"limit": 1000} | ({"after": after} if after else {}))
            answer.raise_for_status()
            body = answer.json()
            yield from body["items"]
            after = body.get("next_after")
            if not after:
                return

    def ah(self, path: str, **params: Any) -> list[dict[str, Any]]:
        return list(self._pages(self.topology.url("assethub") + "/assethub/v1" + path, **params))

    def dm(self, path: str, **params: Any) -> list[dict[str, Any]]:
        return list(self._pages(self.topology.url("derms") + "/derms/v1" + path, **params))

    def get(self, url: str) -> Any:
        answer = self.http.get(url)
        answer.raise_for_status()
        return answer.json()

    def ven(self, head_end: str) -> SimulatedVen:
        """A VEN client of the aggregator's own, for reading what the VTN shows it."""
        from derbridge.sim.aggregator import Aggregator

        if head_end not in self._vens:
            made = self.credentials[head_end]
            ven = SimulatedVen(
                self.topology.url("derms"), made["client_id"], made["client_secret"], Aggregator(head_end), Random(0)
            )
            self._vens[head_end] = ven
        ven = self._vens[head_end]
        if ven.client is None:
            ven.connect()
        return ven

    def vtn_resources(self) -> dict[str, dict[str, Any]]:
        """Every resource on the VTN (by id), with its head-end and enrollment attributes."""
        found: dict[str, dict[str, Any]] = {}
        for head_end in self.credentials:
            ven = self.ven(head_end)
            for resource in ven._pages(ven._client().get_resources):
                attributes = domain.attribute_map(resource.get("attributes"))
                found[str(resource["id"])] = {
                    "head_end": head_end,
                    "name": resource["resourceName"],
                    "nic": str(attributes.get("NIC_ID", [""])[0]),
                    "status": (attributes.get(domain.ENROLLMENT_STATUS) or [None])[0],
                    "state": (attributes.get(domain.ENROLLMENT_STATE) or [None])[0],
                    "enrollment_id": (attributes.get("ENROLLMENT_ID") or [None])[0],
                }
        return found

    def vtn_event_names(self) -> set[str]:
        names: set[str] = set()
        for head_end in self.credentials:
            ven = self.ven(head_end)
            names |= {
                str(e.get("eventName") or "") for e in ven._pages(ven._client().get_events) if is_program_event(e)
            }
        return names

    # --- the invariants ------------------------------------------------------------------------------------

    def check_all(self, healed_unix: float | None = None) -> dict[str, Result]:
        """Every invariant; a check that cannot read (a server still down) is false with why."""
        checks: dict[str, Callable[[], Result]] = {
            "bridge-idle": self.bridge_idle,
            "no-message-stuck": self.no_message_stuck,
            "exactly-once": self.exactly_once,
            "enrollments-agree": self.enrollments_agree,
            "programs-agree": self.programs_agree,
            "events-agree": self.events_agree,
            "outcomes-agree": self.outcomes_agree,
            "jobs-run": lambda: self.jobs_run(healed_unix),
            # Last, and only once the others hold: it reads every DERMS device one by one.
            "availability-agrees": self.availability_agrees,
        }
        results: dict[str, Result] = {}
        for name, check in checks.items():
            if name == "availability-agrees" and not all(ok for ok, _ in results.values()):
                results[name] = (False, "not read until the other invariants hold")
                continue
            try:
                results[name] = check()
            except Exception as error:  # unreadable now: not true yet
                results[name] = (False, f"could not read: {type(error).__name__}: {str(error)[:300]}")
                for ven in self._vens.values():  # connect again next time (closed: no socket left behind)
                    with contextlib.suppress(Exception):
                        ven.close()
                    ven.client = None
        return results

    def bridge_idle(self) -> Result:
        done = self.topology.cli("wait", "idle", "--timeout", "1", check=False, timeout=120)
        return done.returncode == 0, (done.stderr.strip().splitlines() or ["(no output)"])[-1][:400]

    def stats(self) -> dict[str, dict[str, int]]:
        stats: dict[str, dict[str, int]] = self.get(self.topology.url("bridge") + "/bridge/v1/stats")
        return stats

    def no_message_stuck(self) -> Result:
        stuck = {
            f"{flow}:{state}": n
            for flow, counts in self.stats().items()
            for state, n in counts.items()
            if state != "delivered" and n
        }
        return not stuck, f"not delivered: {stuck}" if stuck else "every tracked message delivered"

    def tracked(self) -> list[dict[str, Any]]:
        return list(self._pages(self.topology.url("bridge") + "/bridge/v1/messages"))

    def exactly_once(self) -> Result:
        problems: list[str] = []
        resources = self.vtn_resources()
        enrollments = Counter(e["request_id"] for e in self.ah("/enrollments"))
        requests: Counter[str] = Counter()
        for head_end in self.credentials:
            requests.update(r["request_id"] for r in self.dm("/enrollment-requests", head_end_system=head_end))
        if twice := {k: n for k, n in enrollments.items() if n > 1}:
            problems.append(f"{len(twice)} requests with several Asset Hub enrollments, e.g. {next(iter(twice))}")
        if twice := {k: n for k, n in requests.items() if n > 1}:
            problems.append(f"{len(twice)} requests recorded several times in the DERMS")
        if missing := [rid for rid in resources if rid not in requests]:
            problems.append(f"{len(missing)} VTN resources with no DERMS request, e.g. {missing[0]}")
        for record in self.events:
            base = self.topology.url("derms") + f"/derms/v1/events/{record.event_id}"
            reserved = Counter(r["device_id"] for r in self._pages(base + "/reservations"))
            outcomes = Counter(o["device_id"] for o in self._pages(base + "/outcomes"))
            parts = Counter(p["device_id"] for p in self.ah(f"/events/{record.event_id}/participations"))
            for what, counts in (("reservations", reserved), ("outcomes", outcomes), ("participations", parts)):
                if twice := [d for d, n in counts.items() if n > 1]:
                    problems.append(f"event {record.event_id}: {len(twice)} devices with several {what}")
        # Request and reply: each request message answered once (replies carry the request's correlation id).
        tracked = self.tracked()
        replies = Counter(m["correlation_id"] for m in tracked if _is_reply(m["type"]))
        asked = Counter(m["correlation_id"] for m in tracked if _expects_reply(m["type"]))
        # A status check may be answered twice by design: at once from what the DERMS knows, then again when
        # the aggregator's fresh reading arrives (docs/flows/device-status-check.md) — never more.
        allowed: Counter[str] = Counter()
        for m in tracked:
            if _expects_reply(m["type"]):
                allowed[m["correlation_id"]] += 2 if m["type"] == STATUS_CHECK else 1
        unanswered = [c for c in asked if replies[c] < asked[c]]
        extra = [c for c in replies if replies[c] > allowed.get(c, 0)]
        if unanswered:
            problems.append(f"{len(unanswered)} requests without a reply, e.g. correlation {unanswered[0]}")
        if extra:
            problems.append(f"{len(extra)} correlations with more replies than requests, e.g. {extra[0]}")
        redelivered = sum(1 for m in tracked if m["attempts"] > 1)
        detail = "; ".join(problems) or (
            f"{len(resources)} resources, {sum(requests.values())} requests, {sum(enrollments.values())} enrollments, "
            f"{len(tracked)} messages ({redelivered} needed more than one attempt)"
        )
        return not problems, detail

    def enrollments_agree(self) -> Result:
        resources = self.vtn_resources()
        enrollments = {e["request_id"]: e for e in self.ah("/enrollments")}
        requests: dict[str, dict[str, Any]] = {}
        for head_end in self.credentials:
            requests |= {r["request_id"]: r for r in self.dm("/enrollment-requests", head_end_system=head_end)}
        bad: Counter[str] = Counter()
        example: dict[str, str] = {}
        for rid, resource in resources.items():
            request = requests.get(rid)
            enrollment = enrollments.get(rid)
            if request is None or enrollment is None:
                why = "not in the DERMS" if request is None else "not in Asset Hub"
            elif request["status"] == "RECEIVED" or resource["status"] not in ("ACCEPTED", "REJECTED"):
                why = f"unanswered (DERMS {request['status']}, VTN {resource['status']})"
            elif resource["status"] != request["status"]:
                why = f"VTN {resource['status']} vs DERMS {request['status']}"
            elif request["state"] != DERMS_VIEW.get(enrollment["state"], enrollment["state"]):
                why = f"DERMS state {request['state']} vs Asset Hub {enrollment['state']}"
            elif resource["status"] == "ACCEPTED" and resource["state"] != request["state"]:
                why = f"VTN ENROLLMENT_STATE {resource['state']} vs DERMS {request['state']}"
            elif request["enrollment_id"] != enrollment["enrollment_id"]:
                why = "enrollment ids differ"
            else:
                continue
            bad[why.split(" (")[0] if why.startswith("unanswered") else why] += 1
            example.setdefault(why, rid)
        if bad:
            return False, f"{sum(bad.values())} of {len(resources)} disagree: {dict(bad)}; e.g. {example}"
        states = Counter(e["state"] for e in enrollments.values())
        return True, f"{len(resources)} resources agree; Asset Hub states {dict(states)}"

    def availability_agrees(self) -> Result:
        active = {e["enrollment_id"] for e in self.ah("/enrollments", state="ACTIVE")}
        base = self.topology.url("derms") + "/derms/v1/devices/"
        # The listing leaves availability out: each device is read whole.
        available = {
            a["enrollment_id"]
            for d in self.dm("/devices")
            for a in self.get(base + str(d["device_id"]))["availability"]
            if a["availability"] == "AVAILABLE"
        }
        if active == available:
            return True, f"{len(active)} ACTIVE enrollments, all AVAILABLE in the DERMS"
        return False, (
            f"{len(active - available)} ACTIVE in Asset Hub not AVAILABLE in the DERMS, "
            f"{len(available - active)} AVAILABLE in the DERMS not ACTIVE in Asset Hub"
        )

    def programs_agree(self) -> Result:
        mine = {p["program_code"]: p for p in self.ah("/programs")}
        theirs = {p["program_code"]: p for p in self.dm("/programs")}
        bad = [
            code
            for code, p in mine.items()
            if code not in theirs or theirs[code]["version"] != p["version"] or theirs[code]["status"] != p["status"]
        ]
        return not bad, f"programs out of step: {bad}" if bad else f"{len(mine)} programs in step"

    def events_agree(self) -> Result:
        problems: list[str] = []
        vtn_names = self.vtn_event_names()
        for record in self.events:
            event = self.get(self.topology.url("derms") + f"/derms/v1/events/{record.event_id}")
            theirs = self.get(self.topology.url("assethub") + f"/assethub/v1/events/{record.event_id}")
            # Asset Hub keeps an event as the DERMS announced it (F5) until it is cancelled (F6): it learns
            # no start or completion, so only "cancelled or not" is compared.
            if (event["status"] == "CANCELLED") != (theirs["status"] == "CANCELLED"):
                problems.append(f"{record.event_id}: DERMS {event['status']}, Asset Hub {theirs['status']}")
                continue
            reservations = self.dm(f"/events/{record.event_id}/reservations")
            parts = self.ah(f"/events/{record.event_id}/participations")
            held = {r["device_id"] for r in reservations if r["status"] == "RESERVED"}
            if event["status"] == "CANCELLED":
                if held:
                    problems.append(f"{record.event_id}: cancelled, {len(held)} reservations still held")
                if [p for p in parts if p["status"] != "CANCELLED"]:
                    problems.append(f"{record.event_id}: cancelled, participations not all CANCELLED")
                if any(name.endswith(record.event_id) for name in vtn_names):
                    problems.append(f"{record.event_id}: cancelled, still on the VTN")
            elif len(parts) != len(reservations):
                problems.append(f"{record.event_id}: {len(reservations)} reservations, {len(parts)} participations")
        return not problems, "; ".join(problems) or f"{len(self.events)} events agree"

    def outcomes_agree(self) -> Result:
        problems: list[str] = []
        for record in self.events:
            base = self.topology.url("derms") + f"/derms/v1/events/{record.event_id}"
            event = self.get(base)
            if event["status"] != "COMPLETED":
                continue
            reserved = {r["device_id"] for r in self._pages(base + "/reservations") if r["status"] == "RESERVED"}
            outcomes = {o["device_id"]: o["outcome"] for o in self._pages(base + "/outcomes")}
            if missing := reserved - outcomes.keys():
                problems.append(f"{record.event_id}: {len(missing)} reserved devices without an outcome")
            parts = self.ah(f"/events/{record.event_id}/participations")
            # Asset Hub's device ids are its own: compare the outcomes as a multiset.
            mine = Counter(p["outcome"] for p in parts)
            if mine != Counter(outcomes.values()):
                problems.append(
                    f"{record.event_id}: outcomes DERMS {dict(Counter(outcomes.values()))}, Asset Hub {dict(mine)}"
                )
        return not problems, "; ".join(problems) or "every completed event's outcomes agree"

    def job_metrics(self) -> dict[str, float]:
        """``system/job`` → the newest last-success time any replica reports (empty when not exposed)."""
        newest: dict[str, float] = {}
        pattern = re.compile(JOB_METRIC + r"\{([^}]*)\}\s+([0-9.e+]+)")
        for service in self.topology.services.values():
            if service.kind == "bridge":
                continue
            with contextlib.suppress(httpx.HTTPError):
                text = httpx.get(service.url + "/metrics", timeout=5).text
                for labels, value in pattern.findall(text):
                    found = dict(re.findall(r'(\w+)="([^"]*)"', labels))
                    key = f"{found.get('system', service.kind)}/{found.get('job', '?')}"
                    newest[key] = max(newest.get(key, 0.0), float(value))
        return newest

    def jobs_run(self, healed_unix: float | None) -> Result:
        problems: list[str] = []
        notes: list[str] = []
        for record in self.events:
            if record.cancel:
                continue
            status = self.get(self.topology.url("derms") + f"/derms/v1/events/{record.event_id}")["status"]
            if status != "COMPLETED":
                problems.append(f"event-lifecycle: {record.event_id} is {status}, not COMPLETED")
            if (
                record.reserved
                and record.expect_seen
                and self.seen_event_names is not None
                and not any(n.endswith(record.event_id) for n in self.seen_event_names())
            ):
                problems.append(f"edge-mirror: no aggregator saw event {record.event_id} on the VTN")
        pending = 0
        for e in self.ah("/enrollments", state="PENDING"):
            one = self.get(self.topology.url("assethub") + f"/assethub/v1/enrollments/{e['enrollment_id']}")
            if any(d["nic_id"] not in self.offline.get(d["head_end_system"], set()) for d in one["devices"]):
                pending += 1
        if pending:
            problems.append(f"enrollment-setup: {pending} enrollments of online devices still PENDING")
        if healed_unix is not None:
            metrics = self.job_metrics()
            if metrics:
                late = [k for k, v in metrics.items() if v < healed_unix]
                if late:
                    problems.append(f"{JOB_METRIC}: no success since the heal for {sorted(late)}")
                notes.append(f"{len(metrics)} jobs' last success after the heal")
            elif self.require_job_metrics:
                problems.append(f"{JOB_METRIC} is not exposed on any replica's /metrics")
            else:
                notes.append(f"{JOB_METRIC} not exposed: jobs judged by their effects only")
        return not problems, "; ".join(problems + notes) or "jobs ran"


STATUS_CHECK = "device-status-check.v1"


def _is_reply(message_type: str) -> bool:
    return message_type.endswith(("-response.v1", "-ack.v1"))


def _expects_reply(message_type: str) -> bool:
    return not _is_reply(message_type)
