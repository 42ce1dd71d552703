"""The synthetic utility (scoring.md, "The synthetic utility"): a CIS extract and the aggregators' inventories.

:func:`generate_utility` writes two kinds of file and nothing else; everything else must arrive through
the flows:

* ``cis_extract.csv``: the P0 extract, one row per service point, header :data:`CIS_COLUMNS`. Every one
  of the N customers holds an ACTIVE account; a few percent of CIS-only people hold CLOSED, SUSPENDED or
  PENDING_START accounts; some customers have a second home (a second account and premise).
* ``aggregators/<HEAD_END>.csv``: what each simulated aggregator will send as F1 enrollment requests, one
  row per device, the rows of one request contiguous (:data:`INVENTORY_COLUMNS`). ``expected_result``
  says what Asset Hub must answer: ``ACCEPTED`` or the one reason code the request was built to trip
  (about 3 % of requests); ``propensity`` and ``offline`` are the device's hidden behaviour, read only by
  the aggregator simulator.

Every request is built to have exactly the one defect its ``expected_result`` names, judged by the rules
of :mod:`derbridge.assethub.domain.enrollment_validation` (which reports every defect, not the first).

The same ``(customers, seed, program_code)`` gives byte-identical files. All randomness comes from one
``numpy.random.default_rng(seed)`` drawn in a fixed order over whole columns; the files are then formatted
chunk by chunk with pyarrow compute and written with pyarrow's CSV writer, which keeps a million
customers to seconds and memory to a few hundred megabytes. The CSV is written without quoting: no value
the generator makes can contain a comma, a quote or a line break, and pyarrow refuses to write one that
does, so a mistake in the word lists fails loudly instead of producing a broken file.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from derbridge.assethub.domain.program import DeviceType
from derbridge.cis.extract import CIS_COLUMNS, AccountStatus
from derbridge.sim.names import (
    CITIES,
    EMAIL_DOMAIN_WEIGHTS,
    EMAIL_DOMAINS,
    FIRST_NAMES,
    LAST_NAMES,
    STREET_NAMES,
    STREET_SUFFIXES,
)

IntArray = npt.NDArray[np.int64]
UIntArray = npt.NDArray[np.uint64]
FloatArray = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]

Progress = Callable[[str, int, int], None]
"""``progress(stage, done, total)``; stages are ``model`` (0/1, 1/1), ``cis_extract`` (rows written)
and ``inventories`` (device rows written, over all head ends)."""

# --- distributions (scoring.md, "The synthetic utility") -----------------------------------------------

HEAD_ENDS: Final[tuple[str, ...]] = ("ECOBEE", "NEST", "HONEYWELL", "SENSI")
"""Head-end systems, one simulated aggregator each."""
HEAD_END_SHARES: Final[tuple[float, ...]] = (0.45, 0.40, 0.10, 0.05)
"""Share of enrolled premises per head end, in HEAD_ENDS order."""
DEVICES_PER_PREMISE: Final[tuple[int, ...]] = (1, 2, 3)
DEVICES_PER_PREMISE_SHARES: Final[tuple[float, ...]] = (0.80, 0.17, 0.03)
REJECTED_SHARE: Final = 0.03
"""Share of all enrollment requests that Asset Hub must reject."""
CIS_ONLY_SHARE: Final = 0.02
"""CIS-only people (inactive accounts, never enrolled) per customer."""
SECOND_HOME_SHARE: Final = 0.05
OFFLINE_SHARE: Final = 0.05
PROPENSITY_BETA: Final[tuple[float, float]] = (8.0, 2.0)
"""Beta(a, b) of a device's latent probability of participating in an event (mean 0.8)."""
EMAIL_SHARE: Final = 0.85
HOME_PHONE_SHARE: Final = 0.90
BUSINESS_PHONE_SHARE: Final = 0.20
ADDRESS2_SHARE: Final = 0.08
PROFESSIONAL_INSTALL_SHARE: Final = 0.12
BADGE_SHARE: Final = 0.25
MIN_CIS_ONLY_PEOPLE: Final = 3
"""Enough inactive accounts for one of each non-ACTIVE status even in a tiny utility."""
MAX_CUSTOMERS: Final = 10_000_000
"""Upper bound on ``customers``: memory, and the size of the smallest device-id space (HONEYWELL's MACs)."""

ENROLLMENT_OPENS: Final = datetime(2027, 3, 1, tzinfo=UTC)
ENROLLMENT_CLOSES: Final = datetime(2027, 6, 1, tzinfo=UTC)
"""``requested_at`` falls in [ENROLLMENT_OPENS, ENROLLMENT_CLOSES); ``start_date`` is its UTC date. A
program the requests should be ACCEPTED into must be open over this window."""

ACCEPTED: Final = "ACCEPTED"
REJECTION_REASONS: Final[tuple[str, ...]] = (
    "UNKNOWN_ACCOUNT",
    "ACCOUNT_NOT_ACTIVE",
    "PREMISE_NOT_ON_ACCOUNT",
    "UNKNOWN_PROGRAM",
    "DEVICE_TYPE_NOT_ELIGIBLE",
    "DEVICE_ALREADY_ENROLLED",
    "INVALID_REQUEST",
)
"""The F1 reason codes the generator plants (PROGRAM_NOT_OPEN depends on the clock, not on the data)."""
REJECTION_WEIGHTS: Final[tuple[float, ...]] = (0.20, 0.20, 0.15, 0.10, 0.10, 0.15, 0.10)
"""Share of the rejected requests per reason, in REJECTION_REASONS order."""
UNKNOWN_PROGRAM_CODE: Final = "NO-SUCH-PROGRAM"
INVALID_START_DATE: Final = "2027-13-45"

INVENTORY_COLUMNS: Final[tuple[str, ...]] = (
    "request_id",
    "requested_at",
    "cis_person_id",
    "cis_account_id",
    "name",
    "home_phone",
    "business_phone",
    "email",
    "program_code",
    "cis_service_agreement_id",
    "start_date",
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
    "installation_method",
    "asset_ownership",
    "device_sequence",
    "device_type",
    "manufacturer",
    "model",
    "serial_no",
    "nic_id",
    "head_end_system",
    "badge_no",
    "expected_result",
    "propensity",
    "offline",
)
"""Columns of an aggregator inventory file, in file order."""

CIS_EXTRACT_FILE: Final = "cis_extract.csv"
AGGREGATORS_DIR: Final = "aggregators"

_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_MIN_ID_DIGITS: Final = 7
_EMAIL_SEPARATORS: Final = (".", "", "_", "")
"""Local-part styles: first.last, firstlast, first_last, and (the last) initial + last."""
_CHUNK_ROWS: Final = 131_072
_SERIAL_SPACE: Final = 10**10
_INACTIVE_STATUSES: Final = (AccountStatus.CLOSED, AccountStatus.SUSPENDED, AccountStatus.PENDING_START)
_STATUS_TEXT: Final = (AccountStatus.ACTIVE.value, *(s.value for s in _INACTIVE_STATUSES))
# Status numbers as stored in _Accounts.status, indexing _STATUS_TEXT.
_ACTIVE: Final = 0
_CLOSED: Final = 1
_SUSPENDED: Final = 2
_PENDING_START: Final = 3
# Reason numbers as stored in _Requests.reason: 0 is ACCEPTED, i + 1 is REJECTION_REASONS[i].
_UNKNOWN_ACCOUNT: Final = 1
_NOT_ACTIVE: Final = 2
_PREMISE_ELSEWHERE: Final = 3
_UNKNOWN_PROGRAM: Final = 4
_NOT_ELIGIBLE: Final = 5
_DUPLICATE: Final = 6
_INVALID: Final = 7


class _Model(NamedTuple):
    head_end: str | None
    """None for a model no head end sells as a thermostat (the ineligible devices)."""
    device_type: DeviceType
    manufacturer: str
    model: str
    serial_prefix: str
    weight: float


_MODELS: Final[tuple[_Model, ...]] = (
    _Model("ECOBEE", DeviceType.THERMOSTAT, "ecobee", "ecobee3 lite", "EB3L", 0.35),
    _Model("ECOBEE", DeviceType.THERMOSTAT, "ecobee", "Smart Thermostat Premium", "EBPR", 0.25),
    _Model("ECOBEE", DeviceType.THERMOSTAT, "ecobee", "Smart Thermostat Enhanced", "EBEN", 0.20),
    _Model("ECOBEE", DeviceType.THERMOSTAT, "ecobee", "SmartThermostat with voice control", "EBSV", 0.20),
    _Model("NEST", DeviceType.THERMOSTAT, "Google", "Nest Learning Thermostat (3rd gen)", "09AA", 0.35),
    _Model("NEST", DeviceType.THERMOSTAT, "Google", "Nest Thermostat", "09NT", 0.35),
    _Model("NEST", DeviceType.THERMOSTAT, "Google", "Nest Learning Thermostat (4th gen)", "09LT", 0.15),
    _Model("NEST", DeviceType.THERMOSTAT, "Google", "Nest Thermostat E", "09TE", 0.15),
    _Model("HONEYWELL", DeviceType.THERMOSTAT, "Honeywell", "T6 Pro Smart", "TH6", 0.35),
    _Model("HONEYWELL", DeviceType.THERMOSTAT, "Honeywell", "T9 Smart", "TH9", 0.30),
    _Model("HONEYWELL", DeviceType.THERMOSTAT, "Honeywell", "T5 Smart", "TH5", 0.20),
    _Model("HONEYWELL", DeviceType.THERMOSTAT, "Honeywell", "T10 Pro Smart", "THX", 0.15),
    _Model("SENSI", DeviceType.THERMOSTAT, "Emerson", "Sensi Touch", "ST55", 0.30),
    _Model("SENSI", DeviceType.THERMOSTAT, "Emerson", "Sensi Touch 2", "ST75", 0.30),
    _Model("SENSI", DeviceType.THERMOSTAT, "Emerson", "Sensi Smart", "ST25", 0.30),
    _Model("SENSI", DeviceType.THERMOSTAT, "Emerson", "Sensi Lite", "ST22", 0.10),
    _Model(None, DeviceType.WATER_HEATER, "Rheem", "ProTerra Hybrid Electric", "RHWH", 0.6),
    _Model(None, DeviceType.WATER_HEATER, "A. O. Smith", "Voltex Hybrid Electric", "AOWH", 0.4),
)

# NIC ids look like each vendor's: ecobee's 12-digit ids, MAC-based ids under Nest's, Honeywell's and
# Emerson's OUIs. Each is an affine bijection of the device's rank within its head end, so ids are unique
# per head end by construction; the space is the count of distinct ids the format can hold.
_NIC_SPACE: Final[dict[str, int]] = {"ECOBEE": 10**11, "NEST": 2**40, "HONEYWELL": 2**24, "SENSI": 2**40}


@dataclass(frozen=True)
class GenerationReport:
    """What :func:`generate_utility` wrote: counts, per-head-end and per-reason breakdowns, and paths."""

    customers: int
    """Customers with an ACTIVE, enrollable account (the N asked for); one accepted request each."""
    cis_rows: int
    """Rows of the CIS extract (service points), CIS-only people and second homes included."""
    devices: int
    """Device rows over all inventory files."""
    requests: int
    """Enrollment requests over all inventory files, rejected ones included."""
    rejected_requests: int
    devices_by_head_end: dict[str, int]
    rejections_by_reason: dict[str, int]
    cis_extract: Path
    inventories: dict[str, Path]
    """Inventory file per head end (every head end has one, possibly with the header only)."""
    seconds: float
    """Wall-clock time of the run (the only part of the report that is not reproducible)."""


# --- the numeric model ----------------------------------------------------------------------------------


@dataclass(slots=True)
class _People:
    count: int
    is_customer: BoolArray
    first: IntArray
    last: IntArray
    has_email: BoolArray
    email_style: IntArray
    email_number: IntArray
    """-1 when the address has no number."""
    email_domain: IntArray
    home_phone: IntArray
    """Last four digits; -1 when the person gave no home phone."""
    business_phone: IntArray
    home_city: IntArray
    """City of the person's first premise, for the phone area code; filled by :func:`_make_accounts`."""


@dataclass(slots=True)
class _Accounts:
    """One row per account; each account serves one premise with one service point (a CIS row)."""

    count: int
    person: IntArray
    first_of_person: IntArray
    """Row of each person's first (primary) account."""
    status: IntArray
    premise_no: IntArray
    service_point_no: IntArray
    city: IntArray
    house: IntArray
    street: IntArray
    suffix: IntArray
    apartment: IntArray
    """0 when the premise has no address2."""
    postal: IntArray
    latitude: FloatArray
    longitude: FloatArray


@dataclass(slots=True)
class _Requests:
    count: int
    accepted: int
    reason: IntArray
    account_row: IntArray
    """The account whose holder and id the request names."""
    account_no: IntArray
    """The account number written, which differs from the row's for UNKNOWN_ACCOUNT."""
    premise_row: IntArray
    """The account row whose premise and service point the request names."""
    head_end: IntArray
    device_count: IntArray
    professional: BoolArray
    invalid_date: BoolArray
    blank_service_point: BoolArray
    key: FloatArray
    """Position in the aggregators' files: requests are written in key order within a head end."""
    requested_at: IntArray
    """Seconds since the epoch, increasing with key; filled by :func:`_schedule`."""


@dataclass(slots=True)
class _Devices:
    count: int
    request: IntArray
    first_of_request: IntArray
    sequence: IntArray
    model: IntArray
    serial: UIntArray
    nic: UIntArray
    propensity: FloatArray
    offline: BoolArray
    badge: IntArray
    """-1 when the device has no badge number."""


def _shares(weights: Sequence[float]) -> FloatArray:
    array = np.asarray(weights, dtype=np.float64)
    return np.asarray(array / array.sum(), dtype=np.float64)


def _make_people(rng: np.random.Generator, customers: int) -> _People:
    cis_only = max(MIN_CIS_ONLY_PEOPLE, round(customers * CIS_ONLY_SHARE))
    count = customers + cis_only
    is_customer = np.ones(count, dtype=np.bool_)
    # CIS-only people are scattered among the customers, as closed accounts are in a real CIS.
    is_customer[rng.choice(count, cis_only, replace=False)] = False
    # Most addresses carry a number, as real ones do; it also keeps addresses nearly unique.
    numbered = rng.random(count) < 0.7
    return _People(
        count=count,
        is_customer=is_customer,
        first=rng.integers(0, len(FIRST_NAMES), count),
        last=rng.integers(0, len(LAST_NAMES), count),
        has_email=rng.random(count) < EMAIL_SHARE,
        email_style=rng.integers(0, len(_EMAIL_SEPARATORS), count),
        email_number=np.where(numbered, rng.integers(1, 10_000, count), -1),
        email_domain=rng.choice(len(EMAIL_DOMAINS), count, p=_shares(EMAIL_DOMAIN_WEIGHTS)),
        home_phone=np.where(rng.random(count) < HOME_PHONE_SHARE, rng.integers(0, 10_000, count), -1),
        business_phone=np.where(rng.random(count) < BUSINESS_PHONE_SHARE, rng.integers(0, 10_000, count), -1),
        home_city=np.zeros(count, dtype=np.int64),
    )


def _make_accounts(rng: np.random.Generator, people: _People) -> _Accounts:
    second_home = people.is_customer & (rng.random(people.count) < SECOND_HOME_SHARE)
    per_person = 1 + second_home.astype(np.int64)
    person = np.repeat(np.arange(people.count, dtype=np.int64), per_person)
    count = len(person)
    first_of_person = np.cumsum(per_person) - per_person

    status = np.full(count, _ACTIVE, dtype=np.int64)
    inactive_rows = first_of_person[~people.is_customer]
    n = len(inactive_rows)
    # Fixed quotas rather than independent draws, so that every non-ACTIVE status is present.
    suspended = max(1, round(n * 0.1))
    pending = max(1, round(n * 0.1))
    statuses = np.array([_SUSPENDED] * suspended + [_PENDING_START] * pending + [_CLOSED] * (n - suspended - pending))
    status[inactive_rows] = rng.permutation(statuses)

    city = rng.choice(len(CITIES), count, p=_shares([c.weight for c in CITIES]))
    latitude = np.array([c.latitude for c in CITIES])[city] + rng.normal(0.0, 0.06, count)
    longitude = np.array([c.longitude for c in CITIES])[city] + rng.normal(0.0, 0.08, count)
    people.home_city = city[first_of_person]
    return _Accounts(
        count=count,
        person=person,
        first_of_person=first_of_person,
        status=status,
        # Premise and service point numbers are unrelated to account numbers, as in a real CIS.
        premise_no=rng.permutation(count).astype(np.int64) + 1,
        service_point_no=rng.permutation(count).astype(np.int64) + 1,
        city=city,
        house=rng.integers(1, 10_000, count),
        street=rng.integers(0, len(STREET_NAMES), count),
        suffix=rng.integers(0, len(STREET_SUFFIXES), count),
        apartment=np.where(rng.random(count) < ADDRESS2_SHARE, rng.integers(1, 60, count), 0),
        postal=np.array([c.zip_base for c in CITIES])[city] + rng.integers(0, 20, count),
        latitude=latitude,
        longitude=longitude,
    )


def _rejection_quotas(customers: int) -> list[int]:
    """Rejected requests per reason: ~REJECTED_SHARE of all requests, and at least one of each reason."""
    total = max(len(REJECTION_REASONS), round(customers * REJECTED_SHARE / (1.0 - REJECTED_SHARE)))
    return [max(1, round(total * weight)) for weight in REJECTION_WEIGHTS]


def _make_requests(rng: np.random.Generator, customers: int, people: _People, accounts: _Accounts) -> _Requests:
    quotas = _rejection_quotas(customers)
    count = customers + sum(quotas)
    reason = np.repeat(np.arange(len(REJECTION_REASONS) + 1, dtype=np.int64), [customers, *quotas])
    bounds = np.cumsum([customers, *quotas])
    span = {code: slice(int(bounds[code - 1]), int(bounds[code])) for code in range(1, len(bounds))}
    customer_accounts = accounts.first_of_person[people.is_customer]

    # Every customer enrolls its primary premise once (the accepted requests). The rejected requests
    # borrow customers too, but each is a separate request for a new device that Asset Hub refuses, so
    # it creates nothing that could stand in the way of an accepted one.
    # The DEVICE_ALREADY_ENROLLED requests stay zero here: _plant_duplicates fills them once devices exist.
    account_row = np.zeros(count, dtype=np.int64)
    account_row[:customers] = customer_accounts
    for code in (_UNKNOWN_ACCOUNT, _PREMISE_ELSEWHERE, _UNKNOWN_PROGRAM, _NOT_ELIGIBLE, _INVALID):
        q = quotas[code - 1]
        account_row[span[code]] = customer_accounts[rng.integers(0, customers, q)]
    inactive_rows = np.flatnonzero(accounts.status != _ACTIVE)
    q = quotas[_NOT_ACTIVE - 1]
    account_row[span[_NOT_ACTIVE]] = rng.choice(inactive_rows, q, replace=q > len(inactive_rows))

    premise_row = account_row.copy()
    holder = accounts.person[account_row[span[_PREMISE_ELSEWHERE]]]
    elsewhere = rng.integers(0, accounts.count, len(holder))
    # The other premise must belong to another person: a person's own second home is on another account
    # too, but a premise of someone else is the unambiguous case.
    clash = accounts.person[elsewhere] == holder
    while clash.any():
        elsewhere[clash] = rng.integers(0, accounts.count, int(clash.sum()))
        clash = accounts.person[elsewhere] == holder
    premise_row[span[_PREMISE_ELSEWHERE]] = elsewhere

    account_no = account_row + 1
    q = quotas[_UNKNOWN_ACCOUNT - 1]
    # Numbers past the last account: an account opened after the extract was taken, or a typo.
    account_no[span[_UNKNOWN_ACCOUNT]] = accounts.count + 1 + rng.choice(max(100, 10 * q), q, replace=False)

    device_count = rng.choice(
        np.array(DEVICES_PER_PREMISE, dtype=np.int64), count, p=_shares(DEVICES_PER_PREMISE_SHARES)
    )
    device_count[span[_NOT_ELIGIBLE]] = 1
    device_count[span[_DUPLICATE]] = 1

    invalid_date = np.zeros(count, dtype=np.bool_)
    blank_service_point = np.zeros(count, dtype=np.bool_)
    q = quotas[_INVALID - 1]
    # Half bad start dates, half blank service points, in a seeded order.
    flavour = rng.permutation(np.arange(q) % 2)
    invalid_date[span[_INVALID]] = flavour == 0
    blank_service_point[span[_INVALID]] = flavour == 1

    key = np.empty(count, dtype=np.float64)
    key[:customers] = rng.permutation(customers)
    key[customers:] = rng.random(count - customers) * customers
    return _Requests(
        count=count,
        accepted=customers,
        reason=reason,
        account_row=account_row,
        account_no=account_no,
        premise_row=premise_row,
        head_end=rng.choice(len(HEAD_ENDS), count, p=_shares(HEAD_END_SHARES)),
        device_count=device_count,
        professional=rng.random(count) < PROFESSIONAL_INSTALL_SHARE,
        invalid_date=invalid_date,
        blank_service_point=blank_service_point,
        key=key,
        requested_at=np.zeros(count, dtype=np.int64),
    )


def _bijection(rng: np.random.Generator, ranks: IntArray, space: int) -> UIntArray:
    """Distinct, scrambled-looking numbers below ``space`` for distinct ranks below ``space``.

    ``(a * rank + b) mod space`` with ``a`` coprime to ``space`` (space is a power of 2 or of 10). The
    product stays below 2**64 because both factors stay below 2**40 and 2**24.
    """
    a = int(rng.integers(space // 3, space // 2)) | 1
    if a % 5 == 0:
        a += 2
    b = int(rng.integers(0, space))
    values = ranks.astype(np.uint64) * np.uint64(a) + np.uint64(b)
    return np.asarray(values % np.uint64(space), dtype=np.uint64)


def _make_devices(rng: np.random.Generator, requests: _Requests) -> _Devices:
    request = np.repeat(np.arange(requests.count, dtype=np.int64), requests.device_count)
    count = len(request)
    first_of_request = np.cumsum(requests.device_count) - requests.device_count
    head_end = requests.head_end[request]

    model = np.empty(count, dtype=np.int64)
    for h, name in enumerate(HEAD_ENDS):
        rows = np.flatnonzero(head_end == h)
        choices = [i for i, m in enumerate(_MODELS) if m.head_end == name]
        model[rows] = rng.choice(choices, len(rows), p=_shares([_MODELS[i].weight for i in choices]))
    rows = np.flatnonzero(requests.reason[request] == _NOT_ELIGIBLE)
    choices = [i for i, m in enumerate(_MODELS) if m.head_end is None]
    model[rows] = rng.choice(choices, len(rows), p=_shares([_MODELS[i].weight for i in choices]))

    nic = np.empty(count, dtype=np.uint64)
    for h, name in enumerate(HEAD_ENDS):
        rows = np.flatnonzero(head_end == h)
        nic[rows] = _bijection(rng, np.arange(len(rows), dtype=np.int64), _NIC_SPACE[name])
    alpha, beta = PROPENSITY_BETA
    return _Devices(
        count=count,
        request=request,
        first_of_request=first_of_request,
        sequence=np.arange(count, dtype=np.int64) - first_of_request[request] + 1,
        model=model,
        serial=_bijection(rng, np.arange(count, dtype=np.int64), _SERIAL_SPACE),
        nic=nic,
        propensity=np.round(rng.beta(alpha, beta, count), 4),
        offline=rng.random(count) < OFFLINE_SHARE,
        badge=np.where(rng.random(count) < BADGE_SHARE, rng.integers(10**7, 10**8, count), -1),
    )


def _plant_duplicates(rng: np.random.Generator, requests: _Requests, devices: _Devices) -> None:
    """Turn the DEVICE_ALREADY_ENROLLED requests into re-sends of devices of accepted requests.

    The original is an online device of an accepted request from the first half of the files, and the
    re-send goes at least a quarter of the files later: by the time it arrives the original's enrollment
    has had time to be recorded, and, its device being online, is not failed by the device-setup step.
    """
    duplicates = np.flatnonzero(requests.reason == _DUPLICATE)
    half = requests.accepted / 2
    of_accepted = requests.reason[devices.request] == 0
    candidates = np.flatnonzero(of_accepted & ~devices.offline & (requests.key[devices.request] < half))
    if len(candidates) == 0:
        candidates = np.flatnonzero(of_accepted)
    original = rng.choice(candidates, len(duplicates), replace=len(duplicates) > len(candidates))
    source = devices.request[original]
    for column in (requests.head_end, requests.account_row, requests.account_no, requests.premise_row):
        column[duplicates] = column[source]
    quarter = requests.accepted / 4
    start = requests.key[source] + quarter
    requests.key[duplicates] = start + rng.random(len(duplicates)) * (requests.accepted - start)
    copies = devices.first_of_request[duplicates]
    for field in (devices.model, devices.serial, devices.nic, devices.propensity, devices.offline, devices.badge):
        field[copies] = field[original]


def _schedule(rng: np.random.Generator, requests: _Requests) -> None:
    """Give requests seeded ``requested_at`` times that increase with their position in the files."""
    window = int((ENROLLMENT_CLOSES - ENROLLMENT_OPENS).total_seconds())
    times = np.sort(rng.integers(0, window, requests.count))
    order = np.argsort(requests.key, kind="stable")
    requests.requested_at[order] = int(ENROLLMENT_OPENS.timestamp()) + times


# --- text -------------------------------------------------------------------------------------------------


def _strings(values: Iterable[str]) -> Any:
    return pa.array(list(values), type=pa.string())


def _take(table: Any, index: npt.NDArray[Any]) -> Any:
    return table.take(pa.array(np.asarray(index, dtype=np.int64)))


def _digits(values: npt.NDArray[Any], width: int = 0) -> Any:
    text = pc.cast(pa.array(np.asarray(values, dtype=np.int64)), pa.string())
    return pc.utf8_lpad(text, width, "0") if width else text


def _concat(*parts: Any) -> Any:
    return pc.binary_join_element_wise(*parts, "")


def _unless(blank: BoolArray, values: Any) -> Any:
    return pc.if_else(pa.array(blank), "", values)


def _repeat(value: str, count: int) -> Any:
    return pa.repeat(pa.scalar(value, pa.string()), count)


_SIGNS: Final = _strings(("", "-"))
_HEX_BYTES: Final = _strings(f"{b:02X}" for b in range(256))


def _decimal(values: FloatArray, places: int) -> Any:
    """Fixed-point text with exactly ``places`` decimals (pyarrow's float cast would drop trailing zeros)."""
    scale = 10**places
    scaled = np.rint(np.abs(values) * scale).astype(np.int64)
    negative = (values < 0) & (scaled > 0)
    return _concat(_take(_SIGNS, negative), _digits(scaled // scale), ".", _digits(scaled % scale, places))


def _hex(values: UIntArray, octets: int, separator: str) -> Any:
    parts = [
        _take(_HEX_BYTES, ((values >> np.uint64(8 * (octets - 1 - i))) & np.uint64(255)).astype(np.int64))
        for i in range(octets)
    ]
    return pc.binary_join_element_wise(*parts, separator)


def _nic_text(head_end: str, values: UIntArray) -> Any:
    if head_end == "ECOBEE":
        return _concat("5", _digits(values.astype(np.int64), 11))
    if head_end == "NEST":
        return _concat("18B430", _hex(values, 5, ""))
    if head_end == "HONEYWELL":
        return _concat("00:D0:2D:", _hex(values, 3, ":"))
    return _concat("36-6F-92-", _hex(values, 5, "-"))


class _Text:
    """Formats slices of the numeric model as pyarrow string columns."""

    def __init__(self, people: _People, accounts: _Accounts, program_code: str, width: int) -> None:
        self.people = people
        self.accounts = accounts
        self.width = width
        self.programs = _strings((program_code, UNKNOWN_PROGRAM_CODE))
        self.first = _strings(FIRST_NAMES)
        self.last = _strings(LAST_NAMES)
        self.first_lower = _strings(n.lower() for n in FIRST_NAMES)
        self.initial = _strings(n[0].lower() for n in FIRST_NAMES)
        self.last_lower = _strings(n.lower() for n in LAST_NAMES)
        self.separators = _strings(_EMAIL_SEPARATORS)
        self.domains = _strings(EMAIL_DOMAINS)
        self.streets = _strings(STREET_NAMES)
        self.suffixes = _strings(STREET_SUFFIXES)
        self.cities = _strings(c.name for c in CITIES)
        self.counties = _strings(c.county for c in CITIES)
        self.states = _strings(c.state for c in CITIES)
        self.zones = _strings(c.time_zone for c in CITIES)
        self.divisions = _strings(c.division for c in CITIES)
        self.area_codes = _strings(c.area_code + "-555-" for c in CITIES)
        self.statuses = _strings(_STATUS_TEXT)
        self.results = _strings((ACCEPTED, *REJECTION_REASONS))
        self.installs = _strings(("CUSTOMER_INSTALLED", "PROFESSIONAL_INSTALLED"))
        self.booleans = _strings(("false", "true"))
        self.device_types = _strings(m.device_type.value for m in _MODELS)
        self.manufacturers = _strings(m.manufacturer for m in _MODELS)
        self.models = _strings(m.model for m in _MODELS)
        self.serial_prefixes = _strings(m.serial_prefix for m in _MODELS)

    def ids(self, prefix: str, numbers: npt.NDArray[Any]) -> Any:
        return _concat(prefix, _digits(numbers, self.width))

    def person(self, person: IntArray) -> dict[str, Any]:
        """The customer columns of the people ``person`` (P0 and F1 share them)."""
        p = self.people
        first, last = p.first[person], p.last[person]
        style = p.email_style[person]
        number = p.email_number[person]
        initial_style = style == len(_EMAIL_SEPARATORS) - 1
        email = _concat(
            pc.if_else(pa.array(initial_style), _take(self.initial, first), _take(self.first_lower, first)),
            _take(self.separators, style),
            _take(self.last_lower, last),
            _unless(number < 0, _digits(number)),
            "@",
            _take(self.domains, p.email_domain[person]),
        )
        area = _take(self.area_codes, p.home_city[person])
        home, business = p.home_phone[person], p.business_phone[person]
        return {
            "cis_person_id": self.ids("P", person + 1),
            "name": _concat(_take(self.first, first), " ", _take(self.last, last)),
            "email": _unless(~p.has_email[person], email),
            "home_phone": _unless(home < 0, _concat(area, _digits(home, 4))),
            "business_phone": _unless(business < 0, _concat(area, _digits(business, 4))),
        }

    def location(self, row: IntArray) -> dict[str, Any]:
        """The premise columns of the account rows ``row`` (P0 and F1 share them)."""
        a = self.accounts
        city = a.city[row]
        apartment = a.apartment[row]
        count = len(row)
        return {
            "division": _take(self.divisions, city),
            "cis_premise_id": self.ids("PR", a.premise_no[row]),
            "cis_service_point_id": self.ids("SP", a.service_point_no[row]),
            "time_zone": _take(self.zones, city),
            "address1": _concat(
                _digits(a.house[row]), " ", _take(self.streets, a.street[row]), " ", _take(self.suffixes, a.suffix[row])
            ),
            "address2": _unless(apartment == 0, _concat("Apt ", _digits(apartment))),
            "address3": _repeat("", count),
            "address4": _repeat("", count),
            "city": _take(self.cities, city),
            "county": _take(self.counties, city),
            "state": _take(self.states, city),
            "postal": _digits(a.postal[row], 5),
            "country": _repeat("US", count),
        }

    def cis_rows(self, row: IntArray) -> dict[str, Any]:
        """All CIS extract columns of the account rows ``row``."""
        a = self.accounts
        columns = self.person(a.person[row])
        columns.update(self.location(row))
        columns["cis_account_id"] = self.ids("A", row + 1)
        columns["account_status"] = _take(self.statuses, a.status[row])
        columns["latitude"] = _decimal(a.latitude[row], 5)
        columns["longitude"] = _decimal(a.longitude[row], 5)
        return columns

    def inventory_rows(
        self, head_end: str, requests: _Requests, devices: _Devices, row: IntArray, request_no: IntArray
    ) -> dict[str, Any]:
        """All inventory columns of the device rows ``row`` of ``head_end``'s file."""
        request = devices.request[row]
        columns = self.person(self.accounts.person[requests.account_row[request]])
        columns.update(self.location(requests.premise_row[request]))
        columns["cis_service_point_id"] = _unless(
            requests.blank_service_point[request], columns["cis_service_point_id"]
        )
        seconds = requests.requested_at[request]
        stamp = pc.cast(pa.array(seconds, pa.timestamp("s")), pa.string())
        columns["request_id"] = self.ids(f"{head_end}-R", request_no)
        columns["requested_at"] = _concat(pc.replace_substring(stamp, " ", "T", max_replacements=1), "Z")
        account_no = requests.account_no[request]
        columns["cis_account_id"] = self.ids("A", account_no)
        reason = requests.reason[request]
        columns["program_code"] = _take(self.programs, reason == _UNKNOWN_PROGRAM)
        columns["cis_service_agreement_id"] = self.ids("SA", account_no)
        day = pa.array((seconds // 86_400).astype(np.int32), pa.date32())
        columns["start_date"] = pc.if_else(
            pa.array(requests.invalid_date[request]), INVALID_START_DATE, pc.cast(day, pa.string())
        )
        columns["installation_method"] = _take(self.installs, requests.professional[request])
        columns["asset_ownership"] = _repeat("CUSTOMER_OWNED", len(row))
        columns["device_sequence"] = _digits(devices.sequence[row])
        model = devices.model[row]
        columns["device_type"] = _take(self.device_types, model)
        columns["manufacturer"] = _take(self.manufacturers, model)
        columns["model"] = _take(self.models, model)
        columns["serial_no"] = _concat(
            _take(self.serial_prefixes, model), _digits(devices.serial[row].astype(np.int64), 10)
        )
        columns["nic_id"] = _nic_text(head_end, devices.nic[row])
        columns["head_end_system"] = _repeat(head_end, len(row))
        badge = devices.badge[row]
        columns["badge_no"] = _unless(badge < 0, _digits(badge))
        columns["expected_result"] = _take(self.results, reason)
        columns["propensity"] = _decimal(devices.propensity[row], 4)
        columns["offline"] = _take(self.booleans, devices.offline[row])
        return columns


# --- files ------------------------------------------------------------------------------------------------


def _write_csv(
    path: Path,
    header: tuple[str, ...],
    batches: Iterable[dict[str, Any]],
    on_batch: Callable[[int], None],
) -> None:
    """Write ``header`` then each batch's columns in header order; replace ``path`` only when complete."""
    partial = path.with_name(path.name + ".partial")
    # pyarrow quotes the header even with quoting_style="none", so the header is written by hand.
    options = pcsv.WriteOptions(include_header=False, quoting_style="none")
    with pa.OSFile(str(partial), "wb") as sink:
        sink.write((",".join(header) + "\n").encode())
        for columns in batches:
            batch = pa.record_batch([columns[name] for name in header], names=list(header))
            pcsv.write_csv(batch, sink, options)
            on_batch(batch.num_rows)
    os.replace(partial, path)


def _chunks(total: int) -> Iterable[tuple[int, int]]:
    for start in range(0, total, _CHUNK_ROWS):
        yield start, min(start + _CHUNK_ROWS, total)


def _file_order(requests: _Requests, devices: _Devices, h: int) -> tuple[IntArray, IntArray]:
    """Device rows of head end ``h`` in file order, and the 1-based request number of each."""
    ordered = np.flatnonzero(requests.head_end == h)
    ordered = ordered[np.argsort(requests.key[ordered], kind="stable")]
    counts = requests.device_count[ordered]
    total = int(counts.sum())
    starts = np.cumsum(counts) - counts
    within = np.arange(total, dtype=np.int64) - np.repeat(starts, counts)
    rows = np.repeat(devices.first_of_request[ordered], counts) + within
    request_no = np.repeat(np.arange(1, len(ordered) + 1, dtype=np.int64), counts)
    return rows, request_no


def _silent(stage: str, done: int, total: int) -> None:
    """The default progress callback: report nothing."""


def _check_arguments(customers: int, program_code: str) -> None:
    if customers < 1:
        raise ValueError(f"customers must be at least 1, got {customers}")
    if customers > MAX_CUSTOMERS:
        raise ValueError(f"customers must be at most {MAX_CUSTOMERS:,}, got {customers:,}")
    if not _ID_PATTERN.match(program_code):
        raise ValueError(f"program_code {program_code!r} is not an identifier (letters, digits, . _ : -)")
    if program_code == UNKNOWN_PROGRAM_CODE:
        raise ValueError(f"program_code may not be {UNKNOWN_PROGRAM_CODE!r}: the generator uses it as unknown")


def generate_utility(
    customers: int,
    seed: int,
    out_dir: Path,
    *,
    program_code: str = "SUMMER-BYOT",
    progress: Progress | None = None,
) -> GenerationReport:
    """Write a synthetic utility's CIS extract and aggregator inventories under ``out_dir``.

    ``customers`` (1..MAX_CUSTOMERS) customers each get an ACTIVE account and one enrollment request into
    ``program_code`` that Asset Hub must accept; about REJECTED_SHARE more requests must be rejected, each
    for the reason its ``expected_result`` names. The same arguments give byte-identical files.
    ``progress(stage, done, total)`` is called as the work advances (see :data:`Progress`). Existing files
    of the same names are replaced, each only once it is completely written.

    Raises ``ValueError`` for ``customers`` out of range or an unusable ``program_code``.
    """
    _check_arguments(customers, program_code)
    started = time.perf_counter()
    report = progress or _silent
    report("model", 0, 1)
    rng = np.random.default_rng(seed)
    people = _make_people(rng, customers)
    accounts = _make_accounts(rng, people)
    requests = _make_requests(rng, customers, people, accounts)
    devices = _make_devices(rng, requests)
    _plant_duplicates(rng, requests, devices)
    _schedule(rng, requests)
    report("model", 1, 1)

    largest = max(people.count, int(requests.account_no.max()), requests.count)
    text = _Text(people, accounts, program_code, max(_MIN_ID_DIGITS, len(str(largest))))
    out_dir.mkdir(parents=True, exist_ok=True)
    cis_path = out_dir / CIS_EXTRACT_FILE
    written = 0

    def cis_progress(rows: int) -> None:
        nonlocal written
        written += rows
        report("cis_extract", written, accounts.count)

    report("cis_extract", 0, accounts.count)
    _write_csv(
        cis_path,
        CIS_COLUMNS,
        (text.cis_rows(np.arange(start, stop, dtype=np.int64)) for start, stop in _chunks(accounts.count)),
        cis_progress,
    )

    aggregators = out_dir / AGGREGATORS_DIR
    aggregators.mkdir(exist_ok=True)
    inventories: dict[str, Path] = {}
    devices_by_head_end: dict[str, int] = {}
    written = 0

    def inventory_progress(rows: int) -> None:
        nonlocal written
        written += rows
        report("inventories", written, devices.count)

    report("inventories", 0, devices.count)
    for h, head_end in enumerate(HEAD_ENDS):
        rows, request_no = _file_order(requests, devices, h)
        path = aggregators / f"{head_end}.csv"
        _write_csv(
            path,
            INVENTORY_COLUMNS,
            (
                text.inventory_rows(head_end, requests, devices, rows[start:stop], request_no[start:stop])
                for start, stop in _chunks(len(rows))
            ),
            inventory_progress,
        )
        inventories[head_end] = path
        devices_by_head_end[head_end] = len(rows)

    quotas = _rejection_quotas(customers)
    return GenerationReport(
        customers=customers,
        cis_rows=accounts.count,
        devices=devices.count,
        requests=requests.count,
        rejected_requests=requests.count - requests.accepted,
        devices_by_head_end=devices_by_head_end,
        rejections_by_reason=dict(zip(REJECTION_REASONS, quotas, strict=True)),
        cis_extract=cis_path,
        inventories=inventories,
        seconds=time.perf_counter() - started,
    )
