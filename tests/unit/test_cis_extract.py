"""The rules a CIS extract row must meet (pure: no file, no database)."""

from __future__ import annotations

import pytest

from derbridge.cis.extract import (
    CIS_COLUMNS,
    VALID_COLUMNS,
    AccountStatus,
    CisRecord,
    ExtractHeaderError,
    RejectedRow,
    check_header,
    parse_row,
    validate_columns,
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


# --- the vectorised validation agrees with parse_row, row for row ----------------------------------

EDGE_ROWS: list[list[str]] = [
    row(),
    row(account_status="closed"),
    row(account_status="Pending_Start"),
    row(account_status="act\u0131ve"),  # dotless i: str.upper() makes it ACTIVE, an ASCII kernel cannot
    row(city="  Springfield \u3000"),  # Unicode space stripped as str.strip() does
    row(name="\x1c Zoë Ünal\x1f"),
    row(email="zoë@example.org"),  # non-ASCII address: parse_row's \S accepts it
    row(email="a b@example.org"),
    row(email="a@b"),
    row(email="  "),
    row(latitude="+1.5", longitude=".5"),
    row(latitude="1e1", longitude="-180"),
    row(latitude=" 45 ", longitude=""),
    row(latitude="1_0"),  # float() accepts underscores
    row(latitude="٤٥"),  # and Arabic-Indic digits
    row(latitude="inf"),
    row(latitude="90.0000001"),
    row(cis_premise_id="P" * 64),
    row(cis_premise_id="P" * 65),
    row(cis_premise_id="-P1"),
    row(time_zone="UTC"),
    row(time_zone="America/Argentina/Buenos_Aires"),
    row(time_zone="Etc/GMT+5"),
    row(time_zone="a/b/c/d"),
    row(address2="x" * 200),
    row(address2="x" * 201),
    row(postal="62701\ufffd"),
    row(name="Ada\x00Lovelace"),
    row(address2="\x1bFlat"),
    row(city="Spring\tfield"),
    row(division=""),
    row(county=""),
]


def test_validate_columns_accepts_and_rejects_exactly_what_parse_row_does() -> None:
    pa = pytest.importorskip("pyarrow")
    lines = list(range(2, 2 + len(EDGE_ROWS)))
    columns = [pa.array([r[i] for r in EDGE_ROWS], pa.string()) for i in range(len(CIS_COLUMNS))]

    table, rejected = validate_columns(pa.array(lines, pa.int64()), columns)

    expected_records: list[CisRecord] = []
    expected_rejected: list[RejectedRow] = []
    for line, fields in zip(lines, EDGE_ROWS, strict=True):
        parsed = parse_row(line, fields)
        (expected_rejected if isinstance(parsed, RejectedRow) else expected_records).append(parsed)  # type: ignore[arg-type]
    assert sorted(rejected, key=lambda r: r.line) == expected_rejected
    got = table.to_pylist()
    assert [r["line"] for r in got] == [r.line for r in expected_records]
    for record, values in zip(expected_records, got, strict=True):
        for name in VALID_COLUMNS:
            want = getattr(record, name)
            assert values[name] == (want.value if isinstance(want, AccountStatus) else want), (record.line, name)
    # Both paths exercised:
    assert len(expected_records) > 10
    assert len(expected_rejected) > 8
