"""flows: requests, syncs, setup step, job leases

Revision ID: assethub_0003
Revises: assethub_0002
Create Date: 2026-11-26 15:18:26.532524
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "assethub_0003"
down_revision: str | None = "assethub_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "job_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_leases")),
    )
    op.create_table(
        "enrollment_syncs",
        sa.Column("sync_id", sa.String(length=36), nullable=False),
        sa.Column("enrollment_id", sa.String(length=36), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("change", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("acknowledged_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["enrollment_id"], ["enrollments.enrollment_id"], name=op.f("fk_enrollment_syncs_enrollment_id_enrollments")
        ),
        sa.PrimaryKeyConstraint("sync_id", name=op.f("pk_enrollment_syncs")),
        sa.UniqueConstraint("message_id", name=op.f("uq_enrollment_syncs_message_id")),
    )
    with op.batch_alter_table("enrollment_syncs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_enrollment_syncs_enrollment_id"), ["enrollment_id"], unique=False)

    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.add_column(sa.Column("setup_started_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("next_check_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("sync_sequence", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("sync_state", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("sync_detail", sa.Text(), nullable=True))
        batch_op.create_index(batch_op.f("ix_enrollments_next_check_at"), ["next_check_at"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrollments_next_check_at"))
        batch_op.drop_column("sync_detail")
        batch_op.drop_column("sync_state")
        batch_op.drop_column("sync_sequence")
        batch_op.drop_column("next_check_at")
        batch_op.drop_column("setup_started_at")

    with op.batch_alter_table("enrollment_syncs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrollment_syncs_enrollment_id"))

    op.drop_table("enrollment_syncs")
    op.drop_table("job_leases")
