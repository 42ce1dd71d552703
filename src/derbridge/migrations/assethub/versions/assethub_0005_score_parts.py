"""score snapshots' rows as columnar parts (score_parts) instead of a row per device (device_scores)

Revision ID: assethub_0005
Revises: assethub_0004
Create Date: 2026-11-26 18:20:00.000000
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa
from alembic import op
from numpy.typing import NDArray

revision: str = "assethub_0005"
down_revision: str | None = "assethub_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("device_id", "score", "eligible", "ineligibility_reason", "reliability", "connectivity", "fatigue")

# The part format as this revision wrote it: a copy of derbridge.assethub.adapters.score_parts (encode_parts,
# decode_part) at this revision. A migration imports no application code, so that changing an adapter can
# never change what an old revision does.
_PART_ROWS = 50_000
_PART_COLUMNS: dict[str, pa.DataType] = {
    "device_id": pa.int64(),
    "score": pa.float64(),
    "eligible": pa.bool_(),
    "ineligibility_reason": pa.string(),
    "reliability": pa.float64(),
    "connectivity": pa.float64(),
    "fatigue": pa.float64(),
}


def _encode_parts(
    file_id: str, program_codes: list[str], program_index: NDArray[np.intp], rows: pa.Table
) -> list[dict[str, Any]]:
    """The ``score_parts`` rows of ``rows``; row ``i``'s program is ``program_codes[program_index[i]]``: cut
    by program and by ``device_id`` (sorted here unless they already are), :data:`_PART_ROWS` rows a part,
    each part one Parquet file (zstd)."""
    table = rows.select(list(_PART_COLUMNS)).cast(pa.schema(list(_PART_COLUMNS.items())))
    index = np.asarray(program_index, dtype=np.int64)
    key = (index << 44) | table.column("device_id").to_numpy()
    if len(key) > 1 and not bool(np.all(key[1:] > key[:-1])):
        order = np.argsort(key, kind="stable")
        table, index = table.take(pa.array(order)), index[order]
    bounds = [0, *(np.flatnonzero(np.diff(index)) + 1).tolist(), table.num_rows]
    parts: list[dict[str, Any]] = []
    for first, end in itertools.pairwise(bounds):
        if first == end:
            continue
        for start in range(first, end, _PART_ROWS):
            part = table.slice(start, min(_PART_ROWS, end - start))
            sink = pa.BufferOutputStream()
            pq.write_table(
                part,
                sink,
                compression="zstd",
                use_dictionary=["ineligibility_reason"],
                write_statistics=False,
                row_group_size=_PART_ROWS,
            )
            device_ids = part.column("device_id")
            parts.append(
                {
                    "file_id": file_id,
                    "part": len(parts),
                    "program_code": program_codes[int(index[first])],
                    "first_device_id": device_ids[0].as_py(),
                    "last_device_id": device_ids[-1].as_py(),
                    "row_count": part.num_rows,
                    "data": sink.getvalue().to_pybytes(),
                }
            )
    return parts


def _decode_part(data: bytes) -> pa.Table:
    """One part's rows, sorted by ``device_id``."""
    return pq.read_table(pa.BufferReader(data))


def upgrade() -> None:
    op.create_table(
        "score_parts",
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("program_code", sa.String(length=64), nullable=False),
        sa.Column("first_device_id", sa.BigInteger(), nullable=False),
        sa.Column("last_device_id", sa.BigInteger(), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("file_id", "part", name=op.f("pk_score_parts")),
    )
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        # The parts are zstd-compressed already: TOAST's own compression would only spend time failing.
        op.execute("ALTER TABLE score_parts ALTER COLUMN data SET STORAGE EXTERNAL")
    # Existing snapshots' rows become parts, snapshot by snapshot, in this revision's part format.
    files = [row[0] for row in bind.execute(sa.text("SELECT DISTINCT file_id FROM device_scores"))]
    parts_table = sa.table(
        "score_parts",
        *(sa.column(name) for name in ("file_id", "part", "program_code", "first_device_id", "last_device_id")),
        sa.column("row_count"),
        sa.column("data", sa.LargeBinary()),
    )
    for file_id in files:
        rows = bind.execute(
            sa.text(
                f"SELECT program_code, {', '.join(_COLUMNS)} FROM device_scores "  # noqa: S608
                "WHERE file_id = :file_id ORDER BY program_code, device_id"
            ),
            {"file_id": file_id},
        ).all()
        codes = sorted({row[0] for row in rows})
        position = {code: index for index, code in enumerate(codes)}
        table = pa.table({name: [row[i + 1] for row in rows] for i, name in enumerate(_COLUMNS)})
        index = np.array([position[row[0]] for row in rows], dtype=np.intp)
        parts = _encode_parts(file_id, codes, index, table)
        if parts:
            bind.execute(parts_table.insert(), parts)
    op.drop_table("device_scores")


def downgrade() -> None:
    op.create_table(
        "device_scores",
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("program_code", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("eligible", sa.Boolean(), nullable=False),
        sa.Column("ineligibility_reason", sa.String(length=32), nullable=True),
        sa.Column("reliability", sa.Float(), nullable=False),
        sa.Column("connectivity", sa.Float(), nullable=False),
        sa.Column("fatigue", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("file_id", "program_code", "device_id", name=op.f("pk_device_scores")),
    )
    bind = op.get_bind()
    scores = sa.table("device_scores", *(sa.column(name) for name in ("file_id", "program_code", *_COLUMNS)))
    for file_id, program_code, data in bind.execute(sa.text("SELECT file_id, program_code, data FROM score_parts")):
        rows = _decode_part(data).to_pylist()
        if rows:
            bind.execute(scores.insert(), [{"file_id": file_id, "program_code": program_code, **row} for row in rows])
    op.drop_table("score_parts")
