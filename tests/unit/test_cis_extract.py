"""The rules a CIS extract row must meet (pure: no file, no database)."""

from __future__ import annotations

import pytest

from derbridge.cis.extract import (
    CIS_COLUMNS,
    AccountStatus,
    CisRecord,
    ExtractHeaderError,
    RejectedRow,
    check_header,
    parse_row,
)

GOOD = {
    "cis_person_id": "P1",
    "name": "Ada Lovelace",
    "email": "ada@example.org",
    "home_phone": "555-0100",
    "business_phone": "",
    "cis_account_id": "A1",
    "account_status": "ACTIVE",
    "cis_premise_id": "PR1",
    "cis_service_point_id": "SP1",
    "division": "NORTH",
    "address1": "1 Main St",
    "address2": "",
    "address3": "",
    "address4": "",
    "city": "Springfield",
    "county": "Sangamon",
    "state": "IL",
    "postal": "62701",
    "country": "US",
    "time_zone": "America/Chicago",
    "latitude": "39.78",
    "longitude": "-89.65",
}


def row(**changes: str) -> list[str]:
    return [changes.get(c, GOOD[c]) for c in CIS_COLUMNS]


def test_a_good_row_becomes_a_record_with_empty_fields_as_none() -> None:
    record = parse_row(2, row())
    assert isinstance(record, CisRecord)
    assert record.line == 2
    assert record.account_status is AccountStatus.ACTIVE
    assert record.business_phone is None
    assert record.address2 is None
    assert record.latitude == pytest.approx(39.78)


def test_account_status_is_case_insensitive_and_closed_is_accepted() -> None:
    record = parse_row(3, row(account_status="closed"))
    assert isinstance(record, CisRecord)
    assert record.account_status is AccountStatus.CLOSED


def test_the_digest_changes_with_any_field_and_not_with_surrounding_spaces() -> None:
    base = parse_row(2, row())
    spaced = parse_row(9, row(city="  Springfield "))
    moved = parse_row(2, row(postal="62702"))
    assert isinstance(base, CisRecord)
    assert isinstance(spaced, CisRecord)
    assert isinstance(moved, CisRecord)
    assert base.row_hash == spaced.row_hash
    assert base.row_hash != moved.row_hash


@pytest.mark.parametrize(
    ("changes", "column", "words"),
    [
        ({"cis_person_id": ""}, "cis_person_id", "required"),
        ({"name": ""}, "name", "required"),
        ({"time_zone": ""}, "time_zone", "required"),
        ({"cis_account_id": "A 1"}, "cis_account_id", "not an identifier"),
        ({"account_status": "OPEN"}, "account_status", "not one of"),
        ({"email": "not-an-email"}, "email", "not an e-mail"),
        ({"time_zone": "Chicago time"}, "time_zone", "IANA"),
        ({"latitude": "north"}, "latitude", "not a number"),
        ({"latitude": "91"}, "latitude", "outside"),
        ({"longitude": "-181"}, "longitude", "outside"),
        ({"longitude": "nan"}, "longitude", "outside"),
        ({"address1": "x" * 201}, "address1", "longer than"),
    ],
)
def test_each_bad_field_is_named_with_its_line(changes: dict[str, str], column: str, words: str) -> None:
    rejected = parse_row(17, row(**changes))
    assert isinstance(rejected, RejectedRow)
    assert rejected.line == 17
    assert rejected.column == column
    assert words in rejected.reason


def test_a_row_with_the_wrong_number_of_fields_is_rejected() -> None:
    rejected = parse_row(5, row()[:-1])
    assert isinstance(rejected, RejectedRow)
    assert rejected.column is None
    assert "expected 22 fields, found 21" in rejected.reason


def test_the_exact_header_passes_and_a_bom_is_tolerated() -> None:
    check_header(list(CIS_COLUMNS))
    check_header(["\ufeff" + CIS_COLUMNS[0], *CIS_COLUMNS[1:]])


def test_a_header_that_is_not_a_cis_extract_names_what_is_missing_and_unexpected() -> None:
    with pytest.raises(ExtractHeaderError) as caught:
        check_header(["id", "name", "email"])
    message = str(caught.value)
    assert "not a CIS extract" in message
    assert "missing columns: cis_person_id" in message
    assert "unexpected columns: id" in message


def test_a_header_with_columns_out_of_order_is_refused() -> None:
    with pytest.raises(ExtractHeaderError, match="out of order"):
        check_header([CIS_COLUMNS[1], CIS_COLUMNS[0], *CIS_COLUMNS[2:]])
