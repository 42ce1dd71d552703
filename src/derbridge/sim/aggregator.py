"""A simulated aggregator (head-end): what it enrolls, how its devices report, how they behave in events.

It reads its inventory from ``derbridge generate`` (``aggregators/<HEAD_END>.csv``) and keeps the hidden
behaviour columns to itself (``expected_result``, ``propensity``, ``offline``): they are never sent. Device
behaviour in an event follows scoring.md — a pre-emptive opt-out (3 %), else an in-flight override (10 %
on the first event of a streak, +2 % per consecutive event day), else participation with the device's
latent propensity (Beta-distributed), else no response; offline devices never respond. Shed per
participating thermostat: 1.0 kW mean, sd 0.3, floor 0.

The behaviour is pure (a seeded ``random.Random``); :mod:`derbridge.demo` drives the DERMS's API with it
today, and the OpenADR VEN will drive the edge with it.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

OPT_OUT_SHARE = 0.03
OVERRIDE_FIRST = 0.10
OVERRIDE_STEP = 0.02
SHED_MEAN_KW = 1.0
SHED_SD_KW = 0.3

_REQUEST_FIELDS = ("request_id", "requested_at")
_CUSTOMER_FIELDS = ("cis_person_id", "cis_account_id", "name", "home_phone", "business_phone", "email")
_LOCATION_FIELDS = (
    "division",
    "cis_premise_id",
    "cis_service_point_id",
    "time_zone",
    "address1",
    "address2",
    "address3",
    "address4",
    "city",
    "county",
    "state",
    "postal",
    "country",
)
_DEVICE_FIELDS = ("device_type", "manufacturer", "model", "serial_no", "nic_id", "head_end_system", "badge_no")


@dataclass(frozen=True)
class SimDevice:
    """A device of the aggregator, with its hidden behaviour."""

    head_end_system: str
    nic_id: str
    propensity: float
    offline: bool
    expected_result: str


@dataclass
class Aggregator:
    """One head-end's inventory: the enrollment requests it will send and its devices."""

    head_end_system: str
    requests: list[dict[str, Any]] = field(default_factory=list)
    devices: dict[str, SimDevice] = field(default_factory=dict)
    streak_days: dict[str, int] = field(default_factory=dict)

    @property
    def online_devices(self) -> list[SimDevice]:
        """Devices that communicate."""
        return [d for d in self.devices.values() if not d.offline]


def _blank_to_none(value: str) -> str | None:
    return value or None


def load_aggregator(path: Path) -> Aggregator:
    """Read one inventory file into enrollment requests (the F1 shape the DERMS API takes) and devices."""
    aggregator = Aggregator(head_end_system=path.stem)
    current: dict[str, Any] | None = None
    with path.open(newline="", encoding="utf-8") as handle:
        for row in csv.DictReader(handle):
            if current is None or current["request_id"] != row["request_id"]:
                current = _request(row)
                aggregator.requests.append(current)
            current["devices"].append(
                {"sequence": int(row["device_sequence"])}
                | {k: (_blank_to_none(row[k]) if k == "badge_no" else row[k]) for k in _DEVICE_FIELDS}
            )
            # A DEVICE_ALREADY_ENROLLED request repeats an enrolled device: the first row describes it.
            aggregator.devices.setdefault(
                row["nic_id"],
                SimDevice(
                    head_end_system=row["head_end_system"],
                    nic_id=row["nic_id"],
                    propensity=float(row["propensity"]),
                    offline=row["offline"] == "true",
                    expected_result=row["expected_result"],
                ),
            )
    return aggregator


def _request(row: dict[str, str]) -> dict[str, Any]:
    return {
        "request_id": row["request_id"],
        "requested_at": row["requested_at"],
        "customer": {
            k: (row[k] or None) if k in {"home_phone", "business_phone", "email"} else row[k] for k in _CUSTOMER_FIELDS
        },
        "program": {
            "program_code": row["program_code"],
            "cis_service_agreement_id": row["cis_service_agreement_id"] or None,
            # Sent as the aggregator has it, even when it is not a date: Asset Hub refuses that request.
            "start_date": row["start_date"] or None,
        },
        "location": {
            k: (row[k] or None) if k in {"address2", "address3", "address4", "county"} else row[k]
            for k in _LOCATION_FIELDS
        },
        "devices": [],
        "installation_method": row["installation_method"],
        "asset_ownership": row["asset_ownership"],
    }


def load_aggregators(directory: Path) -> list[Aggregator]:
    """Every aggregator of a generated utility (``DIR/aggregators/*.csv``), by head-end name."""
    return [load_aggregator(p) for p in sorted(directory.glob("*.csv"))]


def heartbeats(aggregator: Aggregator, now: datetime, rng: random.Random) -> list[dict[str, Any]]:
    """Communication reports of the aggregator's online devices: each seen within the last hour."""
    return [
        {
            "head_end_system": d.head_end_system,
            "nic_id": d.nic_id,
            "communication_status": "ONLINE",
            "last_communication_at": (now - timedelta(seconds=rng.randint(0, 3600))).isoformat(),
            "source": aggregator.head_end_system,
        }
        for d in aggregator.online_devices
    ]


def event_outcomes(
    aggregator: Aggregator,
    reserved_nic_ids: Iterable[str],
    start_at: datetime,
    end_at: datetime,
    rng: random.Random,
) -> list[dict[str, Any]]:
    """What the aggregator reports after an event for its reserved devices. Offline devices and devices
    that did not respond are not reported at all: the DERMS closes them as NON_RESPONSIVE."""
    reports: list[dict[str, Any]] = []
    for nic_id in sorted(reserved_nic_ids):
        device = aggregator.devices.get(nic_id)
        if device is None or device.offline:
            continue
        streak = aggregator.streak_days.get(nic_id, 0)
        aggregator.streak_days[nic_id] = streak + 1
        base = {"head_end_system": device.head_end_system, "nic_id": nic_id}
        if rng.random() < OPT_OUT_SHARE:
            reports.append(base | {"outcome": "IN_FLIGHT_OVERRIDE", "preemptive_opt_out": True})
            continue
        if rng.random() < OVERRIDE_FIRST + OVERRIDE_STEP * streak:
            minutes = rng.uniform(0, (end_at - start_at).total_seconds() / 60)
            reports.append(
                base
                | {
                    "outcome": "IN_FLIGHT_OVERRIDE",
                    "preemptive_opt_out": False,
                    "participation_start_at": start_at.isoformat(),
                    "participation_end_at": (start_at + timedelta(minutes=minutes)).isoformat(),
                    "shed_kw": round(max(0.0, rng.gauss(SHED_MEAN_KW, SHED_SD_KW)) * 0.5, 3),
                }
            )
            continue
        if rng.random() < device.propensity:
            reports.append(
                base
                | {
                    "outcome": "SUCCESSFUL_PARTICIPATION",
                    "preemptive_opt_out": False,
                    "participation_start_at": start_at.isoformat(),
                    "participation_end_at": end_at.isoformat(),
                    "shed_kw": round(max(0.0, rng.gauss(SHED_MEAN_KW, SHED_SD_KW)), 3),
                }
            )
        elif rng.random() < 0.2:
            reports.append(base | {"outcome": "ERROR", "preemptive_opt_out": False, "error_message": "device fault"})
        # else: no report — the device did not respond
    return reports
