"""enrollment_states: the latest state the DERMS knows of each enrollment, whichever of Asset Hub's F1 answer
and F3 syncs arrived first; requests left behind by an overtaken answer are repaired

Revision ID: derms_0007
Revises: derms_0006
Create Date: 2026-12-08 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "derms_0007"
down_revision: str | None = "derms_0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "enrollment_states",
        sa.Column("enrollment_id", sa.String(length=36), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("enrollment_id", name=op.f("pk_enrollment_states")),
    )
    # Every enrollment a sync was applied for: the state after its newest applied sync (the log says which
    # change it was; ENROLLED and DEVICE_REPLACED leave it ACTIVE).
    op.execute(
        """
        INSERT INTO enrollment_states (enrollment_id, state, sequence, updated_at)
        SELECT l.enrollment_id, CASE l.change WHEN 'UNENROLLED' THEN 'UNENROLLED' ELSE 'ACTIVE' END, l.sequence, l.at
        FROM enrollment_sync_log l
        WHERE l.result = 'APPLIED' AND NOT EXISTS (
            SELECT 1 FROM enrollment_sync_log m
            WHERE m.enrollment_id = l.enrollment_id AND m.result = 'APPLIED'
              AND (m.sequence > l.sequence OR (m.sequence = l.sequence AND m.entry_id > l.entry_id))
        )
        """
    )
    # Accepted requests whose answer arrived after their sync were left PENDING (issue 13, defect 2): they
    # take the state of their enrollment's newest applied sync now.
    op.execute(
        """
        UPDATE enrollment_requests SET state = (
            SELECT s.state FROM enrollment_states s WHERE s.enrollment_id = enrollment_requests.enrollment_id
        )
        WHERE answer = 'ACCEPTED' AND EXISTS (
            SELECT 1 FROM enrollment_states s
            WHERE s.enrollment_id = enrollment_requests.enrollment_id AND s.state <> enrollment_requests.state
        )
        """
    )
    # Accepted requests with no sync yet: revision 0, the answer's PENDING.
    op.execute(
        """
        INSERT INTO enrollment_states (enrollment_id, state, sequence, updated_at)
        SELECT r.enrollment_id, 'PENDING', 0, r.answered_at
        FROM enrollment_requests r
        WHERE r.answer = 'ACCEPTED' AND r.enrollment_id IS NOT NULL AND r.answered_at IS NOT NULL
          AND NOT EXISTS (SELECT 1 FROM enrollment_states s WHERE s.enrollment_id = r.enrollment_id)
        """
    )


def downgrade() -> None:
    op.drop_table("enrollment_states")
