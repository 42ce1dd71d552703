"""The edge gateway's tables. They live in the DERMS database (the edge is the DERMS's gateway: its
mapping calls the DERMS services and reads reservations in the same database), on the DERMS's metadata,
created by the DERMS migration ``derms_0004``. Every name starts with ``edge_``.

- ``edge_clients``: the OAuth2 clients (an aggregator's VEN, or a business-logic tool) with the argon2 hash of
  their secret, their role and head-end system.
- ``edge_objects``: every OpenADR object (program, event, report, subscription, ven, resource) as its JSON
  representation, with the columns the API filters and joins on promoted beside it. ``id`` is a UUIDv7, so
  ordering by it is creation order: the stable order of every listing.
- ``edge_notifications``: the webhook outbox. A change and the notifications it causes commit together;
  the ``edge-webhooks`` job delivers them with retries and backoff.
"""

from __future__ import annotations

from sqlalchemy import JSON, Column, Index, Integer, String, Table, Text, UniqueConstraint

from derbridge.derms.adapters.tables import metadata
from derbridge.infra.db import BigIntPK, UTCDateTime

OBJECT_ID = 128

edge_clients = Table(
    "edge_clients",
    metadata,
    Column("client_id", String(OBJECT_ID), primary_key=True),
    Column("name", Text, nullable=False),
    Column("head_end_system", String(64), nullable=False, index=True),
    Column("role", String(8), nullable=False),
    Column("secret_hash", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("revoked_at", UTCDateTime),
)

edge_objects = Table(
    "edge_objects",
    metadata,
    Column("id", String(OBJECT_ID), primary_key=True),
    Column("object_type", String(16), nullable=False),
    # The owner (ven, resource, report, subscription) or, for an event the DERMS addressed to one
    # aggregator, its audience. NULL: the business logic's object, visible by targets.
    Column("client_id", String(OBJECT_ID)),
    Column("ven_id", String(OBJECT_ID)),
    Column("program_id", String(OBJECT_ID)),
    Column("event_id", String(OBJECT_ID)),
    Column("name", String(OBJECT_ID)),
    # programName and venName are unique in the VTN, resourceName within its ven: "<ven_id>/<name>".
    Column("unique_key", String(2 * OBJECT_ID + 1)),
    Column("targets", JSON, nullable=False),
    Column("body", JSON, nullable=False),
    # The DERMS object this one mirrors: a program code, "<derms event id>/<ven id>"; NULL for the rest.
    Column("derms_key", String(200)),
    Column("head_end_system", String(64)),
    Column("nic_id", String(64)),
    Column("created_at", UTCDateTime, nullable=False),
    Column("modified_at", UTCDateTime, nullable=False),
    UniqueConstraint("object_type", "unique_key", name="uq_edge_objects_unique_key"),
    UniqueConstraint("object_type", "derms_key", name="uq_edge_objects_derms_key"),
    Index("ix_edge_objects_type_client", "object_type", "client_id", "id"),
    Index("ix_edge_objects_device", "head_end_system", "nic_id"),
)

edge_notifications = Table(
    "edge_notifications",
    metadata,
    Column("notification_id", BigIntPK, primary_key=True, autoincrement=True),
    Column("subscription_id", String(OBJECT_ID), nullable=False, index=True),
    Column("callback_url", Text, nullable=False),
    Column("bearer_token", Text),
    Column("body", JSON, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime),
    Column("delivered_at", UTCDateTime),
    Column("failed_at", UTCDateTime),
    Column("last_error", Text),
    Column("created_at", UTCDateTime, nullable=False),
    Index(
        "ix_edge_notifications_due",
        "next_attempt_at",
        sqlite_where=Column("next_attempt_at").isnot(None),
        postgresql_where=Column("next_attempt_at").isnot(None),
    ),
)
