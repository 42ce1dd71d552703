"""device_scores without its foreign key to score_snapshots (F4: a check per loaded row)

Revision ID: derms_0005
Revises: derms_0004
Create Date: 2026-11-26 18:25:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "derms_0005"
down_revision: str | None = "derms_0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The score loader writes a snapshot's rows in the transaction that inserts the snapshot: the foreign key
    # guarded nothing and cost a lookup per row (3 s of the 9 s a million-row load took on PostgreSQL).
    with op.batch_alter_table("device_scores", schema=None) as batch_op:
        batch_op.drop_constraint("fk_device_scores_file_id_score_snapshots", type_="foreignkey")


def downgrade() -> None:
    with op.batch_alter_table("device_scores", schema=None) as batch_op:
        batch_op.create_foreign_key(
            "fk_device_scores_file_id_score_snapshots", "score_snapshots", ["file_id"], ["file_id"]
        )
