"""programs carry their version and the DERMS's answer to it (program sync)

Revision ID: assethub_0006
Revises: assethub_0005
Create Date: 2026-12-07 18:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "assethub_0006"
down_revision: str | None = "assethub_0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Existing programs start at version 0, "never sent": their next change is version 1, which the DERMS
    # applies over its hand-made copy (version 0 there too).
    with op.batch_alter_table("programs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("version", sa.Integer(), server_default="0", nullable=False))
        batch_op.add_column(sa.Column("sync_state", sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column("sync_detail", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("programs", schema=None) as batch_op:
        batch_op.drop_column("sync_detail")
        batch_op.drop_column("sync_state")
        batch_op.drop_column("version")
