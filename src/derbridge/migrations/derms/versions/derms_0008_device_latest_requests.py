"""device_latest_requests: the enrollment request recorded last for each device, so that each new request
names its predecessor and Asset Hub judges a device's requests in the order they were made

Revision ID: derms_0008
Revises: derms_0007
Create Date: 2026-12-08 11:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "derms_0008"
down_revision: str | None = "derms_0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Empty at first: requests recorded before the upgrade name no predecessor (they were forwarded already,
    # most of them answered); the first request for a device after it starts the device's chain.
    op.create_table(
        "device_latest_requests",
        sa.Column("head_end_system", sa.String(length=64), nullable=False),
        sa.Column("nic_id", sa.String(length=64), nullable=False),
        sa.Column("request_head_end_system", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("message_id", sa.String(length=64), nullable=False),
        sa.Column("previous_head_end_system", sa.String(length=64), nullable=True),
        sa.Column("previous_request_id", sa.String(length=64), nullable=True),
        sa.Column("previous_message_id", sa.String(length=64), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("head_end_system", "nic_id", name=op.f("pk_device_latest_requests")),
    )


def downgrade() -> None:
    op.drop_table("device_latest_requests")
