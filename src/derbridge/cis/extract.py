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
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

import numpy as np

ADDRESS_COLUMNS = (
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
"""The premise's division, address, time zone and position: columns of the extract that each system keeps
with its premise (Asset Hub) or location (DERMS)."""

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
    *ADDRESS_COLUMNS,
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
_CONTROL_CHARACTERS: Final = r"[\x00-\x08\x0b\x0c\x0e-\x1f]"
"""C0 control characters other than tab and line ends: never in a name or an address, and PostgreSQL
refuses NUL in text outright (one such row aborted the whole chunk on PostgreSQL, issue 15)."""
_CONTROL_PATTERN: Final = re.compile(_CONTROL_CHARACTERS)


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
        if "\ufffd" in value:  # the reader decodes with errors="replace": a byte that was not UTF-8
            return RejectedRow(line, column, f"{column} is not valid UTF-8")
        if control := _CONTROL_PATTERN.search(value):
            code = f"U+{ord(control.group()):04X}"
            return RejectedRow(line, column, f"{column} contains the control character {code} (only tab and line ends)")
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
    digest = row_digest(list(values.values()))
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


# --- Vectorised validation -------------------------------------------------------------------------
#
# A million rows through ``parse_row`` one by one cost about 20 s of Python. ``validate_columns`` applies
# the same rules to whole columns with Arrow compute kernels (C++), and sends only the rows those kernels
# cannot vouch for through ``parse_row``, which stays the single definition of every rule and every
# reason. The kernels are deliberately *stricter* than ``parse_row`` (ASCII-only e-mail addresses and
# coordinates): a row they flag is merely checked again in Python, so they can never accept a row that
# ``parse_row`` would reject, nor word a reason differently.

_WHITESPACE: Final = "".join(chr(c) for c in range(0x110000) if chr(c).isspace())
"""Exactly what ``str.strip()`` removes, for Arrow's ``utf8_trim``."""
_ID_RE2: Final = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
_EMAIL_ASCII_RE2: Final = r"^[!-?A-~]+@[!-?A-~]+\.[!-?A-~]+$"
"""Printable ASCII without ``@`` or space on each side: a subset of ``_EMAIL_PATTERN``'s ``[^@\\s]``."""
_TIME_ZONE_RE2: Final = _TIME_ZONE_PATTERN.pattern
_NUMBER_RE2: Final = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
_OPTIONAL_TEXT: Final = ("email", "home_phone", "business_phone", "address2", "address3", "address4", "county")

VALID_COLUMNS: Final[tuple[str, ...]] = ("line", *CIS_COLUMNS, "row_hash")
"""The columns of a validated chunk (:func:`validate_columns`): the file line, every CIS column normalised
as in :class:`CisRecord` (stripped; empty optional text null; status upper case; coordinates float64),
and the row digest."""


def _valid_schema() -> Any:
    import pyarrow as pa

    fields = [pa.field("line", pa.int64())]
    for column in CIS_COLUMNS:
        kind = pa.float64() if column in ("latitude", "longitude") else pa.string()
        fields.append(pa.field(column, kind))
    fields.append(pa.field("row_hash", pa.string()))
    return pa.schema(fields)


def row_digest(values: Sequence[str]) -> str:
    """The digest of a row's normalised field values (``parse_row`` and ``validate_columns`` agree)."""
    return hashlib.blake2b("\x1f".join(values).encode(), digest_size=16).hexdigest()


def _records_table(records: Sequence[CisRecord]) -> Any:
    import pyarrow as pa

    columns: dict[str, list[Any]] = {name: [] for name in VALID_COLUMNS}
    for record in records:
        for name in VALID_COLUMNS:
            value = getattr(record, name)
            columns[name].append(value.value if isinstance(value, AccountStatus) else value)
    return pa.table(columns, schema=_valid_schema())


def validate_columns(lines: Any, raw: Sequence[Any]) -> tuple[Any, list[RejectedRow]]:
    """Validate rows given as columns: ``lines`` (int64 Arrow array of file lines) and ``raw`` (22 Arrow
    string arrays in CIS_COLUMNS order, as read). Returns the valid rows as an Arrow table of
    :data:`VALID_COLUMNS`, in line order, and the rejected rows.

    The result is the one ``parse_row`` gives row by row (a test holds them to it), including a field
    with U+FFFD (a byte that was not UTF-8) or a control character.
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    count = len(lines)
    if count == 0:
        return _valid_schema().empty_table(), []
    values = {c: pc.utf8_trim(raw[i], characters=_WHITESPACE) for i, c in enumerate(CIS_COLUMNS)}
    ok = pa.array(np.ones(count, dtype=bool))
    lengths = {c: pc.utf8_length(values[c]) for c in CIS_COLUMNS}
    for column in CIS_COLUMNS:
        ok = pc.and_(ok, pc.less_equal(lengths[column], MAX_FIELD_LENGTH))
        ok = pc.and_(ok, pc.invert(pc.match_substring(raw[CIS_COLUMNS.index(column)], "\ufffd")))
        ok = pc.and_(ok, pc.invert(pc.match_substring_regex(values[column], _CONTROL_CHARACTERS)))
        if column in REQUIRED_COLUMNS:
            ok = pc.and_(ok, pc.greater(lengths[column], 0))
    for column in _ID_COLUMNS:
        ok = pc.and_(ok, pc.match_substring_regex(values[column], _ID_RE2))
    status = pc.ascii_upper(values["account_status"])
    ok = pc.and_(ok, pc.is_in(status, value_set=pa.array([s.value for s in AccountStatus])))
    email_ok = pc.or_(pc.equal(lengths["email"], 0), pc.match_substring_regex(values["email"], _EMAIL_ASCII_RE2))
    ok = pc.and_(ok, email_ok)
    ok = pc.and_(ok, pc.match_substring_regex(values["time_zone"], _TIME_ZONE_RE2))
    coordinates: dict[str, Any] = {}
    for column, limit in (("latitude", 90.0), ("longitude", 180.0)):
        text = values[column]
        empty = pc.equal(lengths[column], 0)
        numeric = pc.match_substring_regex(text, _NUMBER_RE2)
        number = pc.cast(pc.if_else(numeric, text, "0"), pa.float64())
        inside = pc.less_equal(pc.abs(number), limit)
        ok = pc.and_(ok, pc.or_(empty, pc.and_(numeric, inside)))
        coordinates[column] = pc.if_else(empty, pa.scalar(None, pa.float64()), number)
    ok = pc.fill_null(ok, False)

    # The rows the kernels vouch for: normalise and digest them column-wise.
    good = pc.indices_nonzero(ok)
    normal = dict(values)
    normal["account_status"] = status
    joined = pc.binary_join_element_wise(*(pc.take(normal[c], good) for c in CIS_COLUMNS), "\x1f")
    blake2b = hashlib.blake2b
    digests = [blake2b(v, digest_size=16).hexdigest() for v in pc.cast(joined, pa.binary()).to_pylist()]
    columns: dict[str, Any] = {"line": pc.take(lines, good)}
    for column in CIS_COLUMNS:
        if column in coordinates:
            columns[column] = pc.take(coordinates[column], good)
        elif column in _OPTIONAL_TEXT:
            taken = pc.take(normal[column], good)
            columns[column] = pc.if_else(pc.equal(pc.utf8_length(taken), 0), pa.scalar(None, pa.string()), taken)
        else:
            columns[column] = pc.take(normal[column], good)
    columns["row_hash"] = pa.array(digests, pa.string())
    table = pa.table(columns, schema=_valid_schema())

    # The others (few in a real extract) go through parse_row, the definition of every rule and reason.
    rejected: list[RejectedRow] = []
    suspects = pc.indices_nonzero(pc.invert(ok)).to_pylist()
    if suspects:
        rescued: list[CisRecord] = []
        for index in suspects:
            line = lines[index].as_py()
            fields = [raw[i][index].as_py() for i in range(len(CIS_COLUMNS))]
            parsed = parse_row(line, fields)
            if isinstance(parsed, RejectedRow):
                rejected.append(parsed)
            else:
                rescued.append(parsed)
        if rescued:
            table = pa.concat_tables([table, _records_table(rescued)])
            table = table.take(pc.sort_indices(table["line"]))
    return table, rejected
