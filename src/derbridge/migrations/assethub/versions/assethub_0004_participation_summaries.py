"""participation summaries: each device's history per program, for scoring (F4); device_scores without FK

Revision ID: assethub_0004
Revises: assethub_0003
Create Date: 2026-11-26 17:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "assethub_0004"
down_revision: str | None = "assethub_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "participation_summaries",
        sa.Column("device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_code", sa.String(length=64), nullable=False),
        sa.Column("classes", sa.Text(), nullable=False),
        sa.Column("starts_us", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "program_code", name=op.f("pk_participation_summaries")),
    )
    # Existing history is summarised at once, with the same statements the application refreshes it with.
    from derbridge.assethub.adapters.participation_summaries import rebuild_statements

    bind = op.get_bind()
    for statement in rebuild_statements(bind.dialect.name):
        bind.execute(statement)
    # A transfer writes a snapshot's rows in the transaction that inserts the snapshot: the foreign key
    # guarded nothing and cost a check per row (3 s of a million rows on PostgreSQL).
    with op.batch_alter_table("device_scores", schema=None) as batch_op:
        batch_op.drop_constraint("fk_device_scores_file_id_score_snapshots", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("device_scores", schema=None) as batch_op:
        batch_op.create_foreign_key(
            "fk_device_scores_file_id_score_snapshots", "score_snapshots", ["file_id"], ["file_id"]
        )
    op.drop_table("participation_summaries")
