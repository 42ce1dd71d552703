"""edge gateway: OpenADR clients, objects and the webhook outbox

Revision ID: derms_0004
Revises: derms_0003
Create Date: 2026-12-01 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "derms_0004"
down_revision: str | None = "derms_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_PK = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "edge_clients",
        sa.Column("client_id", sa.String(length=128), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("head_end_system", sa.String(length=64), nullable=False),
        sa.Column("role", sa.String(length=8), nullable=False),
        sa.Column("secret_hash", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("client_id", name=op.f("pk_edge_clients")),
    )
    with op.batch_alter_table("edge_clients", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_edge_clients_head_end_system"), ["head_end_system"], unique=False)

    op.create_table(
        "edge_objects",
        sa.Column("id", sa.String(length=128), nullable=False),
        sa.Column("object_type", sa.String(length=16), nullable=False),
        sa.Column("client_id", sa.String(length=128), nullable=True),
        sa.Column("ven_id", sa.String(length=128), nullable=True),
        sa.Column("program_id", sa.String(length=128), nullable=True),
        sa.Column("event_id", sa.String(length=128), nullable=True),
        sa.Column("name", sa.String(length=128), nullable=True),
        sa.Column("unique_key", sa.String(length=257), nullable=True),
        sa.Column("targets", sa.JSON(), nullable=False),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("derms_key", sa.String(length=200), nullable=True),
        sa.Column("head_end_system", sa.String(length=64), nullable=True),
        sa.Column("nic_id", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("modified_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_edge_objects")),
        sa.UniqueConstraint("object_type", "derms_key", name="uq_edge_objects_derms_key"),
        sa.UniqueConstraint("object_type", "unique_key", name="uq_edge_objects_unique_key"),
    )
    with op.batch_alter_table("edge_objects", schema=None) as batch_op:
        batch_op.create_index("ix_edge_objects_device", ["head_end_system", "nic_id"], unique=False)
        batch_op.create_index("ix_edge_objects_type_client", ["object_type", "client_id", "id"], unique=False)

    op.create_table(
        "edge_notifications",
        sa.Column("notification_id", BIGINT_PK, autoincrement=True, nullable=False),
        sa.Column("subscription_id", sa.String(length=128), nullable=False),
        sa.Column("callback_url", sa.Text(), nullable=False),
        sa.Column("bearer_token", sa.Text(), nullable=True),
        sa.Column("body", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("failed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("notification_id", name=op.f("pk_edge_notifications")),
    )
    with op.batch_alter_table("edge_notifications", schema=None) as batch_op:
        batch_op.create_index(
            "ix_edge_notifications_due",
            ["next_attempt_at"],
            unique=False,
            sqlite_where=sa.text("next_attempt_at IS NOT NULL"),
            postgresql_where=sa.text("next_attempt_at IS NOT NULL"),
        )
        batch_op.create_index(batch_op.f("ix_edge_notifications_subscription_id"), ["subscription_id"], unique=False)


def downgrade() -> None:
    op.drop_table("edge_notifications")
    op.drop_table("edge_objects")
    op.drop_table("edge_clients")
