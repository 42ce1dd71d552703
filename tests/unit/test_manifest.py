"""Claim-check manifests (flows.md F4): describe a file, and reject one that is not what it claims to be."""

from __future__ import annotations

import gzip
import hashlib
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import pytest

from derbridge.contracts.device_score_transfer import Compression, FileManifest
from derbridge.filestore.manifest import ManifestMismatch, describe_file, verify_file

GENERATED_AT = datetime(2027, 1, 2, 2, 0, tzinfo=UTC)

# A score file of three data rows, CRLF line ends as Python's csv module writes them. Its size and sha256
# were taken with `wc -c` and `sha256sum`, not with the code under test.
SCORE_CSV = (
    b"program_code,head_end_system,nic_id,device_id,score,eligible,ineligibility_reason,computed_at\r\n"
    b"SUMMER-BYOT,ECOBEE,N1,D1,87.5,true,,2027-01-02T02:00:00Z\r\n"
    b"SUMMER-BYOT,ECOBEE,N2,D2,12.0,false,LOW_PARTICIPATION,2027-01-02T02:00:00Z\r\n"
    b"SUMMER-BYOT,NEST,N3,D3,55.5,true,,2027-01-02T02:00:00Z\r\n"
)
SCORE_CSV_SIZE = 285
SCORE_CSV_SHA256 = "67b0678aeccdab6bf5870c2399a45cf2d54ec50331c9b6833b9a5eb50ec555ee"


def write(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def describe(path: Path, compression: Compression = Compression.NONE) -> FileManifest:
    return describe_file(path, file_id="01HSCOREFILE", generated_at=GENERATED_AT, compression=compression)


def mismatch(path: Path, manifest: FileManifest) -> str:
    with pytest.raises(ManifestMismatch) as caught:
        verify_file(path, manifest)
    assert caught.value.reason == str(caught.value)
    return caught.value.reason


# -- describe ------------------------------------------------------------------------------------------


def test_describe_plain_csv(tmp_path: Path) -> None:
    manifest = describe(write(tmp_path, "scores.csv", SCORE_CSV))

    assert manifest == FileManifest(
        file_id="01HSCOREFILE",
        generated_at=GENERATED_AT,
        row_count=3,
        sha256=SCORE_CSV_SHA256,
        byte_size=SCORE_CSV_SIZE,
        compression=Compression.NONE,
    )


def test_describe_gzip_csv_hashes_the_stored_bytes_and_counts_the_rows_inside(tmp_path: Path) -> None:
    stored = gzip.compress(SCORE_CSV, mtime=0)
    manifest = describe(write(tmp_path, "scores.csv.gz", stored), Compression.GZIP)

    assert manifest.row_count == 3
    assert manifest.byte_size == len(stored)
    assert manifest.byte_size != SCORE_CSV_SIZE
    assert manifest.sha256 == hashlib.sha256(stored).hexdigest()
    assert manifest.sha256 != SCORE_CSV_SHA256
    assert manifest.compression is Compression.GZIP


def test_gzip_of_several_members_counts_every_member(tmp_path: Path) -> None:
    # `cat a.gz b.gz` is valid gzip and holds both parts.
    more = b"SUMMER-BYOT,NEST,N4,D4,1.0,true,,2027-01-02T02:00:00Z\n"
    path = write(tmp_path, "scores.csv.gz", gzip.compress(SCORE_CSV) + gzip.compress(more))

    assert describe(path, Compression.GZIP).row_count == 4


@pytest.mark.parametrize(
    ("content", "rows"),
    [
        pytest.param(b"", 0, id="empty-file"),
        pytest.param(b"a,b\n", 0, id="header-only"),
        pytest.param(b"a,b\n1,2", 1, id="no-final-newline"),
        pytest.param(b"a,b\n1,2\n\n3,4\n\n\n", 2, id="blank-lines-are-not-rows"),
        pytest.param(b'a,b\n1,"two\nlines"\n3,"with ""quotes"", and comma"\n', 2, id="quoted-newline-is-one-row"),
        pytest.param("a,b\nÉlise,été\n".encode(), 1, id="utf-8"),
    ],
)
def test_row_count_counts_csv_records_after_the_header(tmp_path: Path, content: bytes, rows: int) -> None:
    assert describe(write(tmp_path, "f.csv", content)).row_count == rows
    gzipped = write(tmp_path, "f.csv.gz", gzip.compress(content))
    assert describe(gzipped, Compression.GZIP).row_count == rows


def test_describe_refuses_a_file_that_is_not_what_the_compression_says(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="gzip"):
        describe(write(tmp_path, "scores.csv.gz", SCORE_CSV), Compression.GZIP)
    with pytest.raises(ValueError, match="UTF-8"):
        describe(write(tmp_path, "scores.csv", gzip.compress(SCORE_CSV)), Compression.NONE)


def test_describe_streams_instead_of_reading_the_whole_file(tmp_path: Path) -> None:
    row = b"SUMMER-BYOT,ECOBEE,N0000001,D0000001,87.5,true,,2027-01-02T02:00:00Z\n"
    rows = 120_000  # about 8 MB
    path = tmp_path / "big.csv"
    with path.open("wb") as out:
        out.write(SCORE_CSV.splitlines()[0] + b"\n")
        for _ in range(rows // 1000):
            out.write(row * 1000)
    size = path.stat().st_size

    tracemalloc.start()
    try:
        manifest = describe(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert manifest.row_count == rows
    assert manifest.byte_size == size
    assert peak < size / 2, f"peak {peak} bytes for a {size}-byte file: the file is not streamed"


# -- verify --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", [Compression.NONE, Compression.GZIP])
def test_verify_accepts_the_file_it_described(tmp_path: Path, compression: Compression) -> None:
    data = gzip.compress(SCORE_CSV) if compression is Compression.GZIP else SCORE_CSV
    path = write(tmp_path, "scores", data)
    manifest = describe(path, compression)

    verify_file(path, manifest)  # no exception

    # The manifest survives the trip in a message.
    verify_file(path, FileManifest.model_validate_json(manifest.model_dump_json()))


@pytest.mark.parametrize("compression", [Compression.NONE, Compression.GZIP])
def test_truncated_file_is_rejected_by_byte_size(tmp_path: Path, compression: Compression) -> None:
    data = gzip.compress(SCORE_CSV) if compression is Compression.GZIP else SCORE_CSV
    path = write(tmp_path, "scores", data)
    manifest = describe(path, compression)
    path.write_bytes(data[: len(data) - 10])

    reason = mismatch(path, manifest)

    assert reason.startswith("byte size differs")
    assert f"{len(data)} bytes" in reason
    assert f"file has {len(data) - 10}" in reason
    assert "truncated" in reason


def test_longer_file_is_rejected_by_byte_size(tmp_path: Path) -> None:
    path = write(tmp_path, "scores.csv", SCORE_CSV)
    manifest = describe(path)
    path.write_bytes(SCORE_CSV + b"SUMMER-BYOT,NEST,N9,D9,1.0,true,,2027-01-02T02:00:00Z\r\n")

    assert mismatch(path, manifest).startswith("byte size differs")


@pytest.mark.parametrize("compression", [Compression.NONE, Compression.GZIP])
def test_one_flipped_byte_is_rejected_by_sha256(tmp_path: Path, compression: Compression) -> None:
    data = gzip.compress(SCORE_CSV) if compression is Compression.GZIP else SCORE_CSV
    path = write(tmp_path, "scores", data)
    manifest = describe(path, compression)
    corrupted = bytearray(data)
    corrupted[len(data) // 2] ^= 0x01  # same size, one bit off
    path.write_bytes(bytes(corrupted))

    reason = mismatch(path, manifest)

    assert reason.startswith("sha256 differs")
    assert manifest.sha256 in reason
    assert hashlib.sha256(corrupted).hexdigest() in reason


@pytest.mark.parametrize("compression", [Compression.NONE, Compression.GZIP])
def test_wrong_row_count_in_the_manifest_is_rejected(tmp_path: Path, compression: Compression) -> None:
    data = gzip.compress(SCORE_CSV) if compression is Compression.GZIP else SCORE_CSV
    path = write(tmp_path, "scores", data)
    manifest = describe(path, compression).model_copy(update={"row_count": 4})

    reason = mismatch(path, manifest)

    assert reason == "row count differs: manifest says 4 data rows, file has 3"


def test_file_that_is_not_gzip_is_rejected(tmp_path: Path) -> None:
    # Size and checksum match (the sender described these very bytes) but they are not gzip.
    path = write(tmp_path, "scores.csv.gz", SCORE_CSV)
    manifest = FileManifest(
        file_id="01HSCOREFILE",
        generated_at=GENERATED_AT,
        row_count=3,
        sha256=SCORE_CSV_SHA256,
        byte_size=SCORE_CSV_SIZE,
        compression=Compression.GZIP,
    )

    reason = mismatch(path, manifest)

    assert reason.startswith("not valid gzip")


def test_gzip_cut_before_its_end_is_rejected(tmp_path: Path) -> None:
    # A sender that wrote a truncated gzip and described it faithfully: only decompression can tell.
    stored = gzip.compress(SCORE_CSV)[:-12]
    path = write(tmp_path, "scores.csv.gz", stored)
    manifest = FileManifest(
        file_id="01HSCOREFILE",
        generated_at=GENERATED_AT,
        row_count=3,
        sha256=hashlib.sha256(stored).hexdigest(),
        byte_size=len(stored),
        compression=Compression.GZIP,
    )

    assert mismatch(path, manifest).startswith("not valid gzip")


def test_corrupted_gzip_is_reported_by_checksum_not_by_decompression(tmp_path: Path) -> None:
    # The bytes changed on the way: that is what an operator must hear, not a zlib error.
    stored = gzip.compress(SCORE_CSV)
    path = write(tmp_path, "scores.csv.gz", stored)
    manifest = describe(path, Compression.GZIP)
    path.write_bytes(stored[:20] + bytes(len(stored) - 20))

    assert mismatch(path, manifest).startswith("sha256 differs")


@pytest.mark.parametrize("block", [1, 2, 3, 5, 7])
def test_row_count_is_the_same_whatever_the_blocks_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    # Line ends, CRLF pairs, quoted line feeds, escaped quotes and multi-byte characters cut between blocks.
    from derbridge.filestore import manifest as m

    content = 'a,b\r\n1,"two\r\nlines"\r\n\r\n3,"with ""quotes"""\n\nÉ,"é\n"\r\n\r\n4,x'.encode()
    monkeypatch.setattr(m, "COUNT_CHUNK", block)
    assert describe(write(tmp_path, "f.csv", content)).row_count == 4
    assert describe(write(tmp_path, "f.csv.gz", gzip.compress(content)), Compression.GZIP).row_count == 4
    with pytest.raises(ValueError, match="UTF-8 text at decoded byte 6"):
        describe(write(tmp_path, "bad.csv", b"a,b\n1,\xc3(\n"))
