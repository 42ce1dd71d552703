"""score snapshots' rows as columnar parts (score_parts) instead of a row per device (device_scores)

Revision ID: assethub_0005
Revises: assethub_0004
Create Date: 2026-11-26 18:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pyarrow as pa
import sqlalchemy as sa
from alembic import op

revision: str = "assethub_0005"
down_revision: str | None = "assethub_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = ("device_id", "score", "eligible", "ineligibility_reason", "reliability", "connectivity", "fatigue")


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
    # Existing snapshots' rows become parts, snapshot by snapshot, with the application's encoder.
    from derbridge.assethub.adapters.score_parts import encode_parts

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
        parts = encode_parts(file_id, codes, index, table)
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
    from derbridge.assethub.adapters.score_parts import decode_part

    bind = op.get_bind()
    scores = sa.table("device_scores", *(sa.column(name) for name in ("file_id", "program_code", *_COLUMNS)))
    for file_id, program_code, data in bind.execute(sa.text("SELECT file_id, program_code, data FROM score_parts")):
        rows = decode_part(data).to_pylist()
        if rows:
            bind.execute(scores.insert(), [{"file_id": file_id, "program_code": program_code, **row} for row in rows])
    op.drop_table("score_parts")
