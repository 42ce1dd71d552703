"""The fault suite's load: simulated aggregators (``derbridge.sim``'s VENs) against the VTN, through the
DERMS balancer, in a thread of their own.

Each aggregator onboards the devices of the requests it is told to (a slice of its inventory per phase, so
every fault meets new enrollment requests), heartbeats every few seconds, polls its events, and reports
outcomes once an event is over — as ``derbridge sim aggregator`` does, but able to onboard in slices. A call
that fails (a reset, a refused or blackholed VTN) is retried at the next turn after the VEN reconnects and
re-reads what the VTN holds, as a careful aggregator would: nothing is registered twice.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from derbridge.edge import domain
from derbridge.sim.aggregator import load_aggregator
from derbridge.sim.ven import BATCH, SimulatedVen, is_program_event

HEARTBEAT_SECONDS = 3.0
POLL_SECONDS = 1.0


def event_over(event: dict[str, Any], now: datetime) -> bool:
    period = event.get("intervalPeriod") or {}
    if not period.get("start"):
        return False
    start = datetime.fromisoformat(str(period["start"]).replace("Z", "+00:00"))
    duration = domain.parse_duration(str(period["duration"])) if period.get("duration") else timedelta(0)
    return start + duration <= now


@dataclass
class Aggregator:
    """One aggregator: its edge client, its VEN, and what it has been told to onboard."""

    head_end: str
    credentials: dict[str, str]
    ven: SimulatedVen
    wanted: set[str] = field(default_factory=set)
    """Request ids of the inventory to onboard (grown phase by phase)."""
    seen_events: dict[str, str] = field(default_factory=dict)
    """VTN event id → its name (the DERMS event id is the name's suffix)."""
    next_beat: float = 0.0
    connected: bool = False


class AggregatorDriver:
    """Every aggregator, driven by one thread until :meth:`stop`."""

    def __init__(self, vtn_base: str, inventories: dict[str, Path], credentials: dict[str, dict[str, str]]) -> None:
        self.vtn_base = vtn_base
        self.aggregators: dict[str, Aggregator] = {}
        for head_end, path in inventories.items():
            made = credentials[head_end]
            ven = SimulatedVen(
                vtn_base, made["client_id"], made["client_secret"], load_aggregator(path), random.Random(head_end)
            )
            self.aggregators[head_end] = Aggregator(head_end, made, ven)
        self.errors = 0
        self.last_error = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-aggregators", daemon=True)

    def request_ids(self, head_end: str) -> list[str]:
        """The inventory's request ids, in its order."""
        return [str(r["request_id"]) for r in self.aggregators[head_end].ven.aggregator.requests]

    def want(self, head_end: str, request_ids: list[str]) -> None:
        """Onboard these requests' devices (from the next turn on)."""
        with self._lock:
            self.aggregators[head_end].wanted.update(request_ids)

    def pending_onboarding(self) -> int:
        """Devices told to onboard that the VTN has not registered yet."""
        with self._lock:
            return sum(len(self._missing(a)) for a in self.aggregators.values())

    def _missing(self, agg: Aggregator) -> list[dict[str, Any]]:
        if not agg.connected:
            return [{}] * sum(len(r["devices"]) for r in agg.ven.aggregator.requests if r["request_id"] in agg.wanted)
        return [r for r in agg.ven.resource_requests() if r["resourceName"].rsplit(".", 1)[0] in agg.wanted]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=60)
        for agg in self.aggregators.values():
            with contextlib.suppress(Exception):
                agg.ven.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            for agg in self.aggregators.values():
                if self._stop.is_set():
                    return
                try:
                    self._turn(agg)
                except Exception as error:  # any failure: reconnect and re-read at the next turn
                    self.errors += 1
                    self.last_error = f"{agg.head_end}: {type(error).__name__}: {str(error)[:300]}"
                    with contextlib.suppress(Exception):
                        agg.ven.close()
                    agg.connected = False
                    agg.ven.client = None
            self._stop.wait(POLL_SECONDS)

    def _turn(self, agg: Aggregator) -> None:
        ven = agg.ven
        if not agg.connected:
            ven.names.clear()
            ven.first_name.clear()
            ven.connect()  # token, its VEN, and every resource the VTN holds for it
            agg.connected = True
        with self._lock:
            wanted = self._missing(agg)
        for start in range(0, len(wanted), BATCH):
            made = ven.http.post("/resources/batch", json={"resources": wanted[start : start + BATCH]})
            if made.status_code >= 300:
                raise RuntimeError(f"onboarding: HTTP {made.status_code} {made.text[:300]}")
            with self._lock:
                for resource in made.json()["resources"]:
                    ven._remember(resource)
        if time.monotonic() >= agg.next_beat:
            ven.heartbeat()
            agg.next_beat = time.monotonic() + HEARTBEAT_SECONDS
        now = datetime.now(UTC)
        for event in ven.program_events():
            agg.seen_events[str(event["id"])] = str(event.get("eventName") or "")
            if is_program_event(event) and event["id"] not in ven.reported_events and event_over(event, now):
                try:
                    ven.report_outcomes(event)
                except Exception:
                    ven.reported_events.discard(event["id"])  # not reported: again at the next turn
                    raise
