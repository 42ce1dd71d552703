"""flows: requests, syncs, setup step, job leases

Revision ID: derms_0003
Revises: derms_0002
Create Date: 2026-11-26 15:18:27.088891
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "derms_0003"
down_revision: str | None = "derms_0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "enrollment_requests",
        sa.Column("head_end_system", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answer", sa.String(length=16), nullable=True),
        sa.Column("enrollment_id", sa.String(length=36), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=True),
        sa.Column("rejections", sa.JSON(), nullable=True),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("head_end_system", "request_id", name=op.f("pk_enrollment_requests")),
    )
    with op.batch_alter_table("enrollment_requests", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_enrollment_requests_enrollment_id"), ["enrollment_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_enrollment_requests_message_id"), ["message_id"], unique=False)

    op.create_table(
        "enrollment_sync_log",
        sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), autoincrement=True, nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("enrollment_id", sa.String(length=36), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("change", sa.String(length=16), nullable=False),
        sa.Column("result", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("entry_id", name=op.f("pk_enrollment_sync_log")),
    )
    with op.batch_alter_table("enrollment_sync_log", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_enrollment_sync_log_enrollment_id"), ["enrollment_id"], unique=False)

    op.create_table(
        "job_leases",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("owner", sa.String(length=64), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_job_leases")),
    )


def downgrade() -> None:

    op.drop_table("job_leases")
    with op.batch_alter_table("enrollment_sync_log", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrollment_sync_log_enrollment_id"))

    op.drop_table("enrollment_sync_log")
    with op.batch_alter_table("enrollment_requests", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrollment_requests_message_id"))
        batch_op.drop_index(batch_op.f("ix_enrollment_requests_enrollment_id"))

    op.drop_table("enrollment_requests")
