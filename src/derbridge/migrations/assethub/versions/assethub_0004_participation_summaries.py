"""participation summaries: each device's history per program, for scoring (F4); device_scores without FK

Revision ID: assethub_0004
Revises: assethub_0003
Create Date: 2026-11-26 17:20:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import aggregate_order_by

revision: str = "assethub_0004"
down_revision: str | None = "assethub_0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The summaries' rebuild as this revision computed it: a copy of the rebuild in
# derbridge.assethub.adapters.participation_summaries (rebuild_statements) at this revision, on the tables as
# they were then. A migration imports no application code, so that changing an adapter can never change what
# an old revision does.
_CANCELLED = "CANCELLED"
_SEPARATOR = ","
_PENDING = 0
_PREEMPTIVE_OPT_OUT = 3
_OUTCOME_CLASSES = {
    "SUCCESSFUL_PARTICIPATION": 1,
    "IN_FLIGHT_OVERRIDE": 2,
    "NON_RESPONSIVE": 5,
    "ERROR": 4,
    "CANCELLED": 6,
}
"""The event class code of each reported outcome (scoring's EventClass); PENDING when none."""

_program_events = sa.table(
    "program_events",
    sa.column("event_id", sa.String()),
    sa.column("program_code", sa.String()),
    sa.column("start_at", sa.DateTime()),
    sa.column("status", sa.String()),
)
_participation_records = sa.table(
    "participation_records",
    sa.column("event_id", sa.String()),
    sa.column("device_id", sa.BigInteger()),
    sa.column("status", sa.String()),
    sa.column("outcome", sa.String()),
    sa.column("preemptive_opt_out", sa.Boolean()),
)
_participation_summaries = sa.table(
    "participation_summaries",
    sa.column("device_id", sa.BigInteger()),
    sa.column("program_code", sa.String()),
    sa.column("classes", sa.Text()),
    sa.column("starts_us", sa.Text()),
)


def _epoch_us(dialect: str, column: sa.ColumnElement[Any]) -> sa.ColumnElement[Any]:
    """``column`` (a UTC time) as integer microseconds since the epoch, computed by the database."""
    if dialect == "postgresql":
        return sa.cast(sa.func.extract("epoch", column) * 1_000_000, sa.BigInteger)
    # SQLite keeps 'YYYY-MM-DD HH:MM:SS.ffffff' (naive UTC): whole seconds from strftime, then the fraction.
    whole_seconds = sa.func.strftime("%s", sa.func.substr(column, 1, 19))
    return sa.cast(whole_seconds, sa.Integer) * 1_000_000 + sa.cast(sa.func.substr(column, 21, 6), sa.Integer)


def _class_char() -> sa.ColumnElement[Any]:
    """A counted record's event class code as one character (an opt-out wins over the outcome with it)."""
    pr = _participation_records
    return sa.case(
        (pr.c.preemptive_opt_out.is_(True), str(_PREEMPTIVE_OPT_OUT)),
        *((pr.c.outcome == name, str(code)) for name, code in _OUTCOME_CLASSES.items()),
        else_=str(_PENDING),
    )


def _summaries(dialect: str) -> sa.Select[Any]:
    """``(program_code, device_id, classes, starts_us)`` of every device, newest event first."""
    pr, ev = _participation_records, _program_events
    counted = sa.and_(
        ~sa.or_(ev.c.status == _CANCELLED, pr.c.status == _CANCELLED),
        sa.or_(pr.c.outcome.is_(None), pr.c.outcome != _CANCELLED),
    )
    start = sa.cast(_epoch_us(dialect, ev.c.start_at), sa.String)
    newest_first = (ev.c.start_at.desc(), ev.c.event_id.desc())
    if dialect == "postgresql":
        return (
            sa.select(
                ev.c.program_code,
                pr.c.device_id,
                sa.func.string_agg(_class_char(), aggregate_order_by(sa.literal_column("''"), *newest_first)),
                sa.func.string_agg(start, aggregate_order_by(sa.literal_column(f"'{_SEPARATOR}'"), *newest_first)),
            )
            .join(ev, ev.c.event_id == pr.c.event_id)
            .where(counted)
            .group_by(ev.c.program_code, pr.c.device_id)
        )
    # SQLite before 3.44 has no ORDER BY inside an aggregate: group_concat as a window function, and the last
    # row of each partition holds the whole ordered history.
    partition = (ev.c.program_code, pr.c.device_id)
    frame: dict[str, Any] = {"partition_by": partition, "order_by": newest_first, "rows": (None, 0)}
    inner = (
        sa.select(
            ev.c.program_code.label("program_code"),
            pr.c.device_id.label("device_id"),
            sa.func.group_concat(_class_char(), "").over(**frame).label("classes"),
            sa.func.group_concat(start, _SEPARATOR).over(**frame).label("starts_us"),
            sa.func.row_number().over(**frame).label("position"),
            sa.func.count().over(partition_by=partition).label("entries"),
        )
        .join(ev, ev.c.event_id == pr.c.event_id)
        .where(counted)
        .subquery()
    )
    return sa.select(inner.c.program_code, inner.c.device_id, inner.c.classes, inner.c.starts_us).where(
        inner.c.position == inner.c.entries
    )


def upgrade() -> None:
    op.create_table(
        "participation_summaries",
        sa.Column("device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_code", sa.String(length=64), nullable=False),
        sa.Column("classes", sa.Text(), nullable=False),
        sa.Column("starts_us", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "program_code", name=op.f("pk_participation_summaries")),
    )
    # Existing history is summarised at once (the rebuild of this revision, above).
    bind = op.get_bind()
    s = _participation_summaries
    bind.execute(sa.delete(s))
    bind.execute(
        sa.insert(s).from_select(["program_code", "device_id", "classes", "starts_us"], _summaries(bind.dialect.name))
    )
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
