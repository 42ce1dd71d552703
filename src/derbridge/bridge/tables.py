"""The bridge's own database: the ``sql`` transport's queue table and the tracking of every message.

The bridge owns no business data. Tracking keeps each message's envelope and journey (every delivery
attempt with its result), so that an operator can find, explain and replay any message.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Index, Integer, LargeBinary, MetaData, String, Table, Text, UniqueConstraint

from derbridge.infra.db import BigIntPK, UTCDateTime

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

queue_messages = Table(
    "queue_messages",
    metadata,
    Column("id", BigIntPK, primary_key=True, autoincrement=True),
    Column("queue", String(100), nullable=False),
    Column("message_id", String(64), nullable=False),
    Column("body", LargeBinary, nullable=False),
    Column("enqueued_at", UTCDateTime, nullable=False),
    Column("deliveries", Integer, nullable=False),
    # A receiver takes a message by leasing it; an expired lease (a crashed receiver) makes it visible again.
    Column("lease_owner", String(64)),
    Column("lease_until", UTCDateTime),
    UniqueConstraint("queue", "message_id", name="uq_queue_messages_queue_message"),
    Index("ix_queue_messages_queue_id", "queue", "id"),
)

tracked_messages = Table(
    "tracked_messages",
    metadata,
    Column("message_id", String(64), primary_key=True),
    Column("flow", String(40), nullable=False),
    Column("type", String(64), nullable=False),
    Column("source", String(64), nullable=False),
    Column("target", String(64), nullable=False),
    Column("business_key", String(200), nullable=False),
    Column("correlation_id", String(64), nullable=False),
    Column("state", String(16), nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("occurred_at", UTCDateTime, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    Column("delivered_at", UTCDateTime),
    Column("next_attempt_at", UTCDateTime),
    Column("wake_on", String(200)),
    Column("last_status", Integer),
    Column("last_problem", JSON),
    Column("envelope", Text, nullable=False),
    Index("ix_tracked_messages_flow_state", "flow", "state"),
    Index("ix_tracked_messages_state_next", "state", "next_attempt_at"),
    Index("ix_tracked_messages_business_key", "business_key"),
    Index("ix_tracked_messages_correlation", "correlation_id"),
    Index("ix_tracked_messages_wake_on", "wake_on"),
)

delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("attempt_id", BigIntPK, primary_key=True, autoincrement=True),
    Column("message_id", String(64), nullable=False, index=True),
    Column("attempt", Integer, nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("status_code", Integer),
    Column("detail", Text),
    Column("duration_ms", Integer, nullable=False),
)
