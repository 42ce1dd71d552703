"""P0 · CIS import into both systems: counts, idempotence, updates, bad rows and foreign files,
on SQLite and PostgreSQL."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from sqlalchemy import select

from derbridge.assethub.adapters import tables as ah
from derbridge.assethub.adapters.cis_loader import AssetHubCisLoader
from derbridge.cis.extract import CIS_COLUMNS, ExtractHeaderError
from derbridge.cis.importer import ImportReport, import_extract
from derbridge.derms.adapters import tables as dm
from derbridge.derms.adapters.cis_loader import DermsCisLoader
from derbridge.runtime import Runtime
from tests.support.cis_rows import cis_row as service_point_row


def cis_row(n: int, **changes: str) -> dict[str, str]:
    """Service point n: person P{n//2} holds account A{n//2} serving premise PR{n} (two rows share a person)."""
    person = n // 2
    shared = {
        "cis_person_id": f"P{person}",
        "name": f"Customer {person}",
        "email": f"c{person}@example.org",
        "cis_account_id": f"A{person}",
    }
    return service_point_row(n, **(shared | changes))


def write_extract(path: Path, rows: list[dict[str, str]], header: tuple[str, ...] = CIS_COLUMNS) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def run_import(runtime: Runtime, path: Path, chunk_rows: int = 3) -> ImportReport:
    # A small chunk size makes the tests cross chunk boundaries the way a million-row file does.
    loaders = [AssetHubCisLoader(runtime.sync_engine("assethub")), DermsCisLoader(runtime.sync_engine("derms"))]
    return import_extract(path, loaders, chunk_rows=chunk_rows)


def counts(report: ImportReport, system: str) -> tuple[int, int, int, int, int]:
    c = report.systems[system]
    return c.read, c.inserted, c.updated, c.unchanged, c.rejected


def test_first_import_inserts_every_row_into_both_systems(runtime: Runtime, tmp_path: Path) -> None:
    report = run_import(runtime, write_extract(tmp_path / "cis.csv", [cis_row(n) for n in range(8)]))
    assert counts(report, "assethub") == (8, 8, 0, 0, 0)
    assert counts(report, "derms") == (8, 8, 0, 0, 0)
    assert report.rejected == []
    with runtime.sync_engine("assethub").connect() as connection:
        assert connection.scalar(select(ah.persons.c.name).where(ah.persons.c.cis_person_id == "P3")) == "Customer 3"
        assert len(connection.execute(select(ah.accounts)).all()) == 4
        assert len(connection.execute(select(ah.premises)).all()) == 8
        assert len(connection.execute(select(ah.service_points)).all()) == 8
    with runtime.sync_engine("derms").connect() as connection:
        assert len(connection.execute(select(dm.contacts)).all()) == 4
        assert len(connection.execute(select(dm.customers)).all()) == 4
        location = connection.execute(select(dm.locations).where(dm.locations.c.cis_service_point_id == "SP5")).one()
        assert (location.cis_premise_id, location.cis_account_id, location.address1) == ("PR5", "A2", "5 Main St")


def test_importing_the_same_file_again_changes_nothing(runtime: Runtime, tmp_path: Path) -> None:
    path = write_extract(tmp_path / "cis.csv", [cis_row(n) for n in range(8)])
    run_import(runtime, path)
    with runtime.sync_engine("assethub").connect() as connection:
        before = connection.execute(select(ah.persons.c.cis_person_id, ah.persons.c.updated_at)).all()
    again = run_import(runtime, path)
    assert counts(again, "assethub") == (8, 0, 0, 8, 0)
    assert counts(again, "derms") == (8, 0, 0, 8, 0)
    with runtime.sync_engine("assethub").connect() as connection:
        after = connection.execute(select(ah.persons.c.cis_person_id, ah.persons.c.updated_at)).all()
    assert sorted(after) == sorted(before)  # not even a timestamp was rewritten


def test_changed_rows_are_updated_and_a_closed_account_is_kept_marked_closed(runtime: Runtime, tmp_path: Path) -> None:
    run_import(runtime, write_extract(tmp_path / "v1.csv", [cis_row(n) for n in range(6)]))
    rows = [cis_row(n) for n in range(6)]
    rows[2] = cis_row(2, account_status="CLOSED")  # account A1 closes…
    rows[3] = cis_row(3, account_status="CLOSED", address1="3 Elm St")  # …on both its rows; SP3 moved street
    rows.append(cis_row(6))  # and a new service point arrives
    report = run_import(runtime, write_extract(tmp_path / "v2.csv", rows))
    assert counts(report, "assethub") == (7, 1, 2, 4, 0)
    assert counts(report, "derms") == (7, 1, 2, 4, 0)
    with runtime.sync_engine("assethub").connect() as connection:
        status = connection.scalar(select(ah.accounts.c.status).where(ah.accounts.c.cis_account_id == "A1"))
        street = connection.scalar(select(ah.premises.c.address1).where(ah.premises.c.cis_premise_id == "PR3"))
    assert (status, street) == ("CLOSED", "3 Elm St")
    with runtime.sync_engine("derms").connect() as connection:
        status = connection.scalar(select(dm.customers.c.status).where(dm.customers.c.cis_account_id == "A1"))
    assert status == "CLOSED"
    # Rows absent from a later extract are not deleted: history refers to them.
    shorter = run_import(runtime, write_extract(tmp_path / "v3.csv", rows[:2]))
    assert counts(shorter, "assethub") == (2, 0, 0, 2, 0)
    with runtime.sync_engine("assethub").connect() as connection:
        assert len(connection.execute(select(ah.service_points)).all()) == 7


def test_bad_rows_are_reported_by_line_and_the_good_rows_still_load(runtime: Runtime, tmp_path: Path) -> None:
    path = tmp_path / "cis.csv"
    write_extract(path, [cis_row(n) for n in range(6)])
    lines = path.read_text().splitlines()
    lines[2] = lines[2].replace("ACTIVE", "MAYBE")  # line 3 of the file: service point SP1
    lines[4] = "this,is,not,a,row"  # line 5: SP3
    lines.append(lines[6])  # line 8: SP5 again
    path.write_text("\n".join(lines) + "\n")

    report = run_import(runtime, path)

    assert [(r.line, r.column) for r in report.rejected] == [
        (3, "account_status"),
        (5, None),
        (8, "cis_service_point_id"),
    ]
    assert "already appears on line 7" in report.rejected[2].reason
    assert counts(report, "assethub") == (7, 4, 0, 0, 3)
    assert counts(report, "derms") == (7, 4, 0, 0, 3)
    with runtime.sync_engine("derms").connect() as connection:
        loaded = set(connection.scalars(select(dm.locations.c.cis_service_point_id)))
    assert loaded == {"SP0", "SP2", "SP4", "SP5"}


def test_a_file_that_is_not_a_cis_extract_is_refused_and_loads_nothing(runtime: Runtime, tmp_path: Path) -> None:
    path = write_extract(tmp_path / "other.csv", [cis_row(1)], header=("cis_person_id", "name", "email"))
    with pytest.raises(ExtractHeaderError, match="missing columns"):
        run_import(runtime, path)
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ExtractHeaderError, match="empty"):
        run_import(runtime, empty)
    with runtime.sync_engine("assethub").connect() as connection:
        assert connection.execute(select(ah.persons)).all() == []


def test_a_row_with_broken_utf8_is_rejected_alone(runtime: Runtime, tmp_path: Path) -> None:
    path = write_extract(tmp_path / "cis.csv", [cis_row(n) for n in range(3)])
    data = path.read_bytes().replace(b",0 Main St,", b",0 Main St\xff,")  # row of SP0 only
    path.write_bytes(data)
    report = run_import(runtime, path)
    assert [(r.line, r.reason) for r in report.rejected] == [(2, "address1 is not valid UTF-8")]
    assert counts(report, "assethub") == (3, 2, 0, 0, 1)


@pytest.mark.parametrize("bad", ["Customer\x000", "Customer\x07 bell", "\x00"])
def test_a_row_with_a_nul_or_control_character_is_rejected_alone_naming_its_field(
    runtime: Runtime, tmp_path: Path, bad: str
) -> None:
    # Issue 15, finding 4: on PostgreSQL one NUL byte aborted the whole chunk (0 of 3 rows loaded) with a
    # traceback. The row is rejected with its line and field; the others load on either backend.
    path = write_extract(tmp_path / "cis.csv", [cis_row(0), cis_row(2, name=bad), cis_row(4)])
    report = run_import(runtime, path)
    assert [(r.line, r.column) for r in report.rejected] == [(3, "name")]
    assert "control character" in report.rejected[0].reason
    assert counts(report, "assethub") == (3, 2, 0, 0, 1)
    assert counts(report, "derms") == (3, 2, 0, 0, 1)
    with runtime.sync_engine("derms").connect() as connection:
        loaded = set(connection.scalars(select(dm.locations.c.cis_service_point_id)))
    assert loaded == {"SP0", "SP4"}


def test_a_nul_in_a_file_without_quotes_takes_the_same_path_as_any_other_bad_row(
    runtime: Runtime, tmp_path: Path
) -> None:
    path = write_extract(tmp_path / "cis.csv", [cis_row(n) for n in range(3)])
    path.write_bytes(path.read_bytes().replace(b",1 Main St,", b",1 Main\x00St,"))
    report = run_import(runtime, path)
    assert [(r.line, r.column) for r in report.rejected] == [(3, "address1")]
    assert counts(report, "assethub") == (3, 2, 0, 0, 1)
    assert counts(report, "derms") == (3, 2, 0, 0, 1)
