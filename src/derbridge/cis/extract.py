"""The CIS extract: its columns, and the rules a row must meet before either system loads it.

A CIS extract is a CSV file (UTF-8, header row) with one row per service point. Each row carries the
service point's premise, the account that serves the premise, and the person who holds the account, so
the same person or account appears on several rows. This module is pure: it reads no file and writes no
database; :mod:`derbridge.cis.reader` streams a file through it.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

CIS_COLUMNS: Final[tuple[str, ...]] = (
    "cis_person_id",
    "name",
    "email",
    "home_phone",
    "business_phone",
    "cis_account_id",
    "account_status",
    "cis_premise_id",
    "cis_service_point_id",
    "division",
    "address1",
    "address2",
    "address3",
    "address4",
    "city",
    "county",
    "state",
    "postal",
    "country",
    "time_zone",
    "latitude",
    "longitude",
)
"""The columns of a CIS extract, in file order (flows.md, P0)."""

REQUIRED_COLUMNS: Final[frozenset[str]] = frozenset(
    {
        "cis_person_id",
        "name",
        "cis_account_id",
        "account_status",
        "cis_premise_id",
        "cis_service_point_id",
        "division",
        "address1",
        "city",
        "state",
        "postal",
        "country",
        "time_zone",
    }
)
"""Columns that may not be empty on any row."""

MAX_FIELD_LENGTH: Final = 200
"""Longest text we accept in one field; a longer one is a broken row, not a real address."""

_ID_PATTERN: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$")
_EMAIL_PATTERN: Final = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_TIME_ZONE_PATTERN: Final = re.compile(r"^[A-Za-z_]+(/[A-Za-z0-9_+-]+){0,2}$|^UTC$")
_ID_COLUMNS: Final = ("cis_person_id", "cis_account_id", "cis_premise_id", "cis_service_point_id")


class AccountStatus(StrEnum):
    """Status of a CIS account. A closed account is kept and marked closed, never deleted."""

    ACTIVE = "ACTIVE"
    """The account is billed and may enroll devices."""
    PENDING_START = "PENDING_START"
    """Service has been ordered but has not started: not yet enrollable."""
    SUSPENDED = "SUSPENDED"
    """Service is on hold (collections, vacancy): not enrollable."""
    CLOSED = "CLOSED"
    """Service has ended: history may refer to it, nothing new may use it."""


class ExtractHeaderError(ValueError):
    """The file is not a CIS extract: its header is not the one CIS_COLUMNS names."""


@dataclass(frozen=True, slots=True)
class CisRecord:
    """One validated row of a CIS extract."""

    line: int
    cis_person_id: str
    name: str
    email: str | None
    home_phone: str | None
    business_phone: str | None
    cis_account_id: str
    account_status: AccountStatus
    cis_premise_id: str
    cis_service_point_id: str
    division: str
    address1: str
    address2: str | None
    address3: str | None
    address4: str | None
    city: str
    county: str | None
    state: str
    postal: str
    country: str
    time_zone: str
    latitude: float | None
    longitude: float | None
    row_hash: str
    """Digest of every field: a re-import compares it to tell unchanged rows from updated ones."""


@dataclass(frozen=True, slots=True)
class RejectedRow:
    """A row that cannot be loaded, with its 1-based line number in the file and why."""

    line: int
    column: str | None
    reason: str


def check_header(header: list[str]) -> None:
    """Refuse a file whose header is not a CIS extract's, naming what is missing or unexpected."""
    names = [h.strip().lstrip("\ufeff") for h in header]
    if tuple(names) == CIS_COLUMNS:
        return
    missing = [c for c in CIS_COLUMNS if c not in names]
    unexpected = [c for c in names if c not in CIS_COLUMNS]
    parts = []
    if missing:
        parts.append("missing columns: " + ", ".join(missing))
    if unexpected:
        parts.append("unexpected columns: " + ", ".join(unexpected))
    if not parts:
        parts.append("columns are out of order; expected: " + ",".join(CIS_COLUMNS))
    raise ExtractHeaderError("not a CIS extract (" + "; ".join(parts) + ")")


def _coordinate(value: str, column: str, limit: float) -> float | RejectedRow | None:
    if not value:
        return None
    try:
        number = float(value)
    except ValueError:
        return RejectedRow(0, column, f"{column} {value!r} is not a number")
    if not math.isfinite(number) or abs(number) > limit:
        return RejectedRow(0, column, f"{column} {value!r} is outside -{limit:g}..{limit:g}")
    return number


def parse_row(line: int, fields: list[str]) -> CisRecord | RejectedRow:
    """Validate one data row (``fields`` in CIS_COLUMNS order) into a record, or say why it is rejected."""
    if len(fields) != len(CIS_COLUMNS):
        return RejectedRow(line, None, f"expected {len(CIS_COLUMNS)} fields, found {len(fields)}")
    values = dict(zip(CIS_COLUMNS, (f.strip() for f in fields), strict=True))
    for column in CIS_COLUMNS:
        value = values[column]
        if not value and column in REQUIRED_COLUMNS:
            return RejectedRow(line, column, f"{column} is required")
        if len(value) > MAX_FIELD_LENGTH:
            return RejectedRow(line, column, f"{column} is longer than {MAX_FIELD_LENGTH} characters")
    for column in _ID_COLUMNS:
        if not _ID_PATTERN.match(values[column]):
            return RejectedRow(
                line, column, f"{column} {values[column]!r} is not an identifier (letters, digits, . _ : -)"
            )
    try:
        status = AccountStatus(values["account_status"].upper())
    except ValueError:
        allowed = ", ".join(s.value for s in AccountStatus)
        return RejectedRow(
            line, "account_status", f"account_status {values['account_status']!r} is not one of {allowed}"
        )
    email = values["email"]
    if email and not _EMAIL_PATTERN.match(email):
        return RejectedRow(line, "email", f"email {email!r} is not an e-mail address")
    if not _TIME_ZONE_PATTERN.match(values["time_zone"]):
        return RejectedRow(
            line, "time_zone", f"time_zone {values['time_zone']!r} is not an IANA zone like America/Chicago"
        )
    latitude = _coordinate(values["latitude"], "latitude", 90.0)
    longitude = _coordinate(values["longitude"], "longitude", 180.0)
    for coordinate in (latitude, longitude):
        if isinstance(coordinate, RejectedRow):
            return RejectedRow(line, coordinate.column, coordinate.reason)
    assert not isinstance(latitude, RejectedRow)
    assert not isinstance(longitude, RejectedRow)
    values["account_status"] = status.value
    digest = hashlib.blake2b("\x1f".join(values.values()).encode(), digest_size=16).hexdigest()
    return CisRecord(
        line=line,
        cis_person_id=values["cis_person_id"],
        name=values["name"],
        email=email or None,
        home_phone=values["home_phone"] or None,
        business_phone=values["business_phone"] or None,
        cis_account_id=values["cis_account_id"],
        account_status=status,
        cis_premise_id=values["cis_premise_id"],
        cis_service_point_id=values["cis_service_point_id"],
        division=values["division"],
        address1=values["address1"],
        address2=values["address2"] or None,
        address3=values["address3"] or None,
        address4=values["address4"] or None,
        city=values["city"],
        county=values["county"] or None,
        state=values["state"],
        postal=values["postal"],
        country=values["country"],
        time_zone=values["time_zone"],
        latitude=latitude,
        longitude=longitude,
        row_hash=digest,
    )
