"""Reading a CIS extract file: line numbers and rejections whatever the layout and the block cuts."""

from __future__ import annotations

from pathlib import Path

import pytest

from derbridge.cis import reader
from derbridge.cis.extract import CIS_COLUMNS
from derbridge.cis.reader import ReadTally, read_extract


def line_of(n: int, **changes: str) -> str:
    values = dict.fromkeys(CIS_COLUMNS, "") | {
        "cis_person_id": f"P{n}",
        "name": f"Customer {n}",
        "cis_account_id": f"A{n}",
        "account_status": "ACTIVE",
        "cis_premise_id": f"PR{n}",
        "cis_service_point_id": f"SP{n}",
        "division": "NORTH",
        "address1": f"{n} Main St",
        "city": "Springfield",
        "state": "IL",
        "postal": "62701",
        "country": "US",
        "time_zone": "America/Chicago",
    }
    values.update(changes)
    return ",".join(values[c] for c in CIS_COLUMNS)


def extract(tmp_path: Path) -> Path:
    lines = [
        ",".join(CIS_COLUMNS),  # 1
        line_of(0),  # 2
        line_of(1, name='"Ada\nLovelace, Countess"'),  # 3-4: a quoted field over two lines
        "",  # 5: blank, not a row
        "P9,too,few,fields",  # 6
        line_of(0, name="Again"),  # 7: SP0 again
        line_of(3) + "\r",  # 8: CRLF
        line_of(4, email="not-an-address"),  # 9
        line_of(5),  # 10
    ]
    path = tmp_path / "cis.csv"
    path.write_bytes(("\n".join(lines) + "\n").encode())
    return path


@pytest.mark.parametrize("block_bytes", [40, 200, 1 << 20])
def test_lines_and_rejections_do_not_depend_on_how_the_file_is_cut(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_bytes: int
) -> None:
    monkeypatch.setattr(reader, "BLOCK_BYTES", block_bytes)
    tally = ReadTally()
    chunks = list(read_extract(extract(tmp_path), tally, chunk_rows=2))
    rows = [r for chunk in chunks for r in chunk.to_pylist()]
    assert [(r["line"], r["cis_service_point_id"]) for r in rows] == [(2, "SP0"), (4, "SP1"), (8, "SP3"), (10, "SP5")]
    assert rows[1]["name"] == "Ada\nLovelace, Countess"
    assert [(r.line, r.column) for r in sorted(tally.rejected, key=lambda r: r.line)] == [
        (6, None),
        (7, "cis_service_point_id"),
        (9, "email"),
    ]
    assert "already appears on line 2" in next(r.reason for r in tally.rejected if r.line == 7)
    assert tally.read == 7
    assert all(chunk.num_rows <= 2 for chunk in chunks)


def test_a_clean_block_and_the_same_rows_through_the_csv_module_give_the_same_digests(tmp_path: Path) -> None:
    plain = tmp_path / "plain.csv"
    plain.write_text(",".join(CIS_COLUMNS) + "\n" + "\n".join(line_of(n) for n in range(5)) + "\n")
    quoted = tmp_path / "quoted.csv"  # one quote anywhere sends the block through the csv module
    quoted.write_text(
        ",".join(CIS_COLUMNS) + "\n" + "\n".join(line_of(n, city='"Springfield"') for n in range(5)) + "\n"
    )
    fast = [r for c in read_extract(plain, ReadTally()) for r in c.to_pylist()]
    slow = [r for c in read_extract(quoted, ReadTally()) for r in c.to_pylist()]
    assert fast == slow


def test_an_unterminated_quote_is_rejected_alone_and_the_rows_after_it_are_read(tmp_path: Path) -> None:
    # Issue 15, finding 5: a quote opened on line 2 and never closed swallowed the 50 good rows after it
    # (read=1, rejected=1 at line 52). A continuation line of a quoted field is never a complete row by
    # itself, so the reader gives up the open field at the next complete row and names line 2.
    path = tmp_path / "cis.csv"
    lines = [",".join(CIS_COLUMNS), line_of(0, name='"Ada Lovelace')] + [line_of(n) for n in range(1, 51)]
    path.write_text("\n".join(lines) + "\n")
    tally = ReadTally()
    rows = [r for chunk in read_extract(path, tally, chunk_rows=7) for r in chunk.to_pylist()]
    assert [r["line"] for r in rows] == list(range(3, 53))
    assert [(r.line, r.column) for r in tally.rejected] == [(2, None)]
    assert "quoted field" in tally.rejected[0].reason
    assert tally.read == 51


@pytest.mark.parametrize("block_bytes", [40, 300, 1 << 20])
def test_every_line_an_unterminated_quote_could_not_read_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block_bytes: int
) -> None:
    monkeypatch.setattr(reader, "BLOCK_BYTES", block_bytes)
    path = tmp_path / "cis.csv"
    lines = [
        ",".join(CIS_COLUMNS),  # 1
        line_of(0),  # 2
        line_of(1, address2='"Flat 4'),  # 3: opens a quote
        "  and some more text",  # 4: not a row by itself, so it may continue the field
        line_of(2),  # 5: a complete row: the field of line 3 cannot reach past it
        line_of(3, name='"Multi\nline"'),  # 6-7: a sound quoted field over two lines
        line_of(4, city='"Spring'),  # 8: opens a quote the file never closes
        "field",  # 9
    ]
    path.write_text("\n".join(lines) + "\n")
    tally = ReadTally()
    rows = [r for chunk in read_extract(path, tally) for r in chunk.to_pylist()]
    assert [(r["line"], r["cis_service_point_id"]) for r in rows] == [(2, "SP0"), (5, "SP2"), (7, "SP3")]
    assert [r.line for r in sorted(tally.rejected, key=lambda r: r.line)] == [3, 4, 8, 9]
    assert all("quoted field" in r.reason for r in tally.rejected)
