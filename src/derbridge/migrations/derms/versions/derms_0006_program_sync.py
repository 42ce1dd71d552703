"""programs become Asset Hub's copies (program sync): their version, Asset Hub's statuses, a sync log

Revision ID: derms_0006
Revises: derms_0005
Create Date: 2026-12-07 18:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "derms_0006"
down_revision: str | None = "derms_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Programs made by hand before program sync are version 0: Asset Hub's first version (1) replaces them.
    with op.batch_alter_table("programs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.BigInteger(), server_default="0", nullable=False))
    # The DERMS's own INACTIVE becomes Asset Hub's SUSPENDED: no new events, existing ones run their course.
    op.execute("UPDATE programs SET status = 'SUSPENDED' WHERE status = 'INACTIVE'")
    op.create_table(
        "program_sync_log",
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("program_code", sa.String(length=64), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("message_id", name=op.f("pk_program_sync_log")),
    )
    with op.batch_alter_table("program_sync_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_program_sync_log_program_code"), ["program_code"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("program_sync_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_program_sync_log_program_code"))
    op.drop_table("program_sync_log")
    # Back to the DERMS's two statuses: only ACTIVE takes events, everything else did not.
    op.execute("UPDATE programs SET status = 'INACTIVE' WHERE status <> 'ACTIVE'")
    with op.batch_alter_table("programs", schema=None) as batch_op:
        batch_op.drop_column("version")
