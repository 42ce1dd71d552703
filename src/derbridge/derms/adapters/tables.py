"""The DERMS's database tables (SQLAlchemy Core). Migrations create them; this module only describes them.

The DERMS keeps its own grid view of customers (contacts, customers, locations) loaded from the CIS, the
devices it may dispatch with their availability per program (from enrollment sync) and their latest
communication status (from the edge), program events, reservations, outcomes and score snapshots.
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

from derbridge.infra.db import BigIntPK, UTCDateTime
from derbridge.infra.outbox import add_messaging_tables

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

ID = 64

# --- CIS copy ------------------------------------------------------------------------------------

contacts = Table(
    "contacts",
    metadata,
    Column("cis_person_id", String(ID), primary_key=True),
    Column("name", Text, nullable=False),
    Column("email", Text),
    Column("home_phone", Text),
    Column("business_phone", Text),
    Column("updated_at", UTCDateTime, nullable=False),
)

customers = Table(
    "customers",
    metadata,
    Column("cis_account_id", String(ID), primary_key=True),
    Column("cis_person_id", String(ID), ForeignKey("contacts.cis_person_id"), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

locations = Table(
    "locations",
    metadata,
    Column("cis_service_point_id", String(ID), primary_key=True),
    Column("cis_premise_id", String(ID), nullable=False, index=True),
    Column("cis_account_id", String(ID), ForeignKey("customers.cis_account_id"), nullable=False, index=True),
    Column("division", String(ID), nullable=False),
    Column("address1", Text, nullable=False),
    Column("address2", Text),
    Column("address3", Text),
    Column("address4", Text),
    Column("city", Text, nullable=False),
    Column("county", Text),
    Column("state", String(32), nullable=False),
    Column("postal", String(16), nullable=False),
    Column("country", String(32), nullable=False),
    Column("time_zone", String(64), nullable=False),
    Column("latitude", Float),
    Column("longitude", Float),
    Column("cis_row_hash", String(32), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# --- programs and devices -----------------------------------------------------------------------

programs = Table(
    "programs",
    metadata,
    Column("program_code", String(ID), primary_key=True),
    Column("name", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("expected_shed_kw", Float, nullable=False),
    Column("outcome_grace_hours", Float, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # program sync: Asset Hub's version of the program applied here (the envelope's sequence); an older one
    # arriving later is ignored. 0 for a program made before program sync existed.
    Column("version", BigInteger, nullable=False, server_default="0"),
)

program_sync_log = Table(
    "program_sync_log",
    metadata,
    # Every program sync the DERMS received, with what it did: APPLIED, or STALE (an older version than the one
    # applied, ignored). The acknowledgement carries the same.
    Column("message_id", String(64), primary_key=True),
    Column("program_code", String(ID), nullable=False, index=True),
    Column("version", BigInteger, nullable=False),
    Column("result", String(16), nullable=False),
    Column("detail", Text, nullable=False),
    Column("at", UTCDateTime, nullable=False),
)

devices = Table(
    "devices",
    metadata,
    Column("device_id", BigIntPK, primary_key=True, autoincrement=True),
    Column("head_end_system", String(ID), nullable=False),
    Column("nic_id", String(ID), nullable=False),
    Column("device_type", String(32), nullable=False),
    Column("manufacturer", Text, nullable=False),
    Column("model", Text, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("head_end_system", "nic_id", name="uq_devices_head_end_nic"),
)

device_availability = Table(
    "device_availability",
    metadata,
    Column("device_id", BigIntPK, ForeignKey("devices.device_id"), primary_key=True),
    Column("program_code", String(ID), ForeignKey("programs.program_code"), primary_key=True),
    Column("enrollment_id", String(36), nullable=False, index=True),
    Column("cis_account_id", String(ID), nullable=False),
    Column("cis_service_point_id", String(ID), nullable=False),
    Column("availability", String(16), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("availability IN ('AVAILABLE', 'UNAVAILABLE')", name="availability"),
    Index("ix_device_availability_program", "program_code", "availability"),
)

communication_status = Table(
    "communication_status",
    metadata,
    # Keyed by the head end's own identity, not device_id: an aggregator may report about a device
    # before its enrollment reaches the DERMS, and that status must not be lost.
    Column("head_end_system", String(ID), primary_key=True),
    Column("nic_id", String(ID), primary_key=True),
    Column("communication_status", String(16), nullable=False),
    Column("last_communication_at", UTCDateTime, nullable=False),
    Column("operating_state", String(32)),
    Column("source", String(ID), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    CheckConstraint("communication_status IN ('ONLINE', 'OFFLINE', 'UNKNOWN')", name="status"),
)

# --- events, reservations, outcomes --------------------------------------------------------------

program_events = Table(
    "program_events",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("derms_instance_id", String(ID), nullable=False),
    Column("program_code", String(ID), ForeignKey("programs.program_code"), nullable=False, index=True),
    Column("event_type", String(16), nullable=False),
    Column("start_at", UTCDateTime, nullable=False),
    Column("end_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("target_devices", Integer),
    Column("target_kw", Float),
    Column("candidate_count", Integer, nullable=False),
    Column("reserved_count", Integer, nullable=False),
    Column("reserved_kw", Float, nullable=False),
    Column("shortfall_devices", Integer, nullable=False),
    Column("shortfall_kw", Float, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("cancelled_at", UTCDateTime),
    Column("cancel_reason", Text),
    Column("closed_at", UTCDateTime),
    CheckConstraint("(target_devices IS NULL) <> (target_kw IS NULL)", name="one_target"),
)

reservations = Table(
    "reservations",
    metadata,
    Column("record_id", String(36), primary_key=True),
    Column("event_id", String(36), ForeignKey("program_events.event_id"), nullable=False),
    Column("device_id", BigIntPK, ForeignKey("devices.device_id"), nullable=False, index=True),
    Column("rank", Integer, nullable=False),
    Column("score", Float, nullable=False),
    Column("expected_shed_kw", Float, nullable=False),
    Column("reservation_start_at", UTCDateTime, nullable=False),
    Column("reservation_end_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("released_at", UTCDateTime),
    Column("release_reason", Text),
    UniqueConstraint("event_id", "device_id", name="uq_reservations_event_device"),
    CheckConstraint("status IN ('RESERVED', 'RELEASED')", name="status"),
)

outcomes = Table(
    "outcomes",
    metadata,
    Column("event_id", String(36), ForeignKey("program_events.event_id"), primary_key=True),
    Column("device_id", BigIntPK, ForeignKey("devices.device_id"), primary_key=True),
    Column("outcome", String(32), nullable=False),
    Column("preemptive_opt_out", Boolean, nullable=False),
    Column("participation_start_at", UTCDateTime),
    Column("participation_end_at", UTCDateTime),
    Column("shed_kw", Float),
    Column("error_message", Text),
    Column("origin", String(16), nullable=False),
    Column("reported_at", UTCDateTime, nullable=False),
)

# --- enrollment requests (F1) and syncs (F3) --------------------------------------------------------

enrollment_requests = Table(
    "enrollment_requests",
    metadata,
    Column("head_end_system", String(ID), primary_key=True),
    Column("request_id", String(ID), primary_key=True),
    Column("message_id", String(64), nullable=False, index=True),
    Column("request", JSON, nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("answer", String(16)),
    Column("enrollment_id", String(36), index=True),
    Column("state", String(16)),
    Column("rejections", JSON),
    Column("answered_at", UTCDateTime),
    Column("updated_at", UTCDateTime, nullable=False),
)

device_latest_requests = Table(
    "device_latest_requests",
    metadata,
    # Per device, the enrollment request the DERMS recorded last for it, and the one before (what the
    # recording upsert returns): each new request names its predecessor, so Asset Hub judges the requests
    # about one device in the order they were made (docs/flows/enrollment-request.md).
    Column("head_end_system", String(ID), primary_key=True),
    Column("nic_id", String(ID), primary_key=True),
    Column("request_head_end_system", String(ID), nullable=False),
    Column("request_id", String(ID), nullable=False),
    Column("message_id", String(64), nullable=False),
    Column("previous_head_end_system", String(ID)),
    Column("previous_request_id", String(ID)),
    Column("previous_message_id", String(64)),
    Column("updated_at", UTCDateTime, nullable=False),
)

enrollment_sync_log = Table(
    "enrollment_sync_log",
    metadata,
    Column("entry_id", BigIntPK, primary_key=True, autoincrement=True),
    Column("message_id", String(64), nullable=False),
    Column("enrollment_id", String(36), nullable=False, index=True),
    Column("sequence", BigInteger, nullable=False),
    Column("change", String(16), nullable=False),
    Column("result", String(16), nullable=False),
    Column("detail", Text),
    Column("at", UTCDateTime, nullable=False),
)

enrollment_states = Table(
    "enrollment_states",
    metadata,
    # The latest state the DERMS knows of each enrollment, and its revision: 0 for Asset Hub's F1 answer
    # (PENDING), the F3 sync's sequence after that. Both writers go through this row, so an answer and a
    # sync of one enrollment, in either order or at once, leave the highest revision here; the recorded
    # request's state is taken from it (docs/flows/enrollment-sync.md, "Answer and syncs in any order").
    Column("enrollment_id", String(36), primary_key=True),
    Column("state", String(16), nullable=False),
    Column("sequence", BigInteger, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

job_leases = Table(
    "job_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", String(64)),
    Column("lease_until", UTCDateTime),
    Column("last_run_at", UTCDateTime),
)

# --- score snapshots ------------------------------------------------------------------------------

score_snapshots = Table(
    "score_snapshots",
    metadata,
    Column("file_id", String(36), primary_key=True),
    Column("generated_at", UTCDateTime, nullable=False),
    Column("scoring_model_version", String(32), nullable=False),
    Column("row_count", Integer, nullable=False),
    Column("unknown_devices", Integer, nullable=False),
    Column("loaded_at", UTCDateTime, nullable=False),
    Column("is_current", Boolean, nullable=False),
)

device_scores = Table(
    "device_scores",
    metadata,
    # No foreign key to score_snapshots: the loader writes the rows in the transaction that inserts their
    # snapshot, and a per-row check cost seconds on a million rows (flows/device-score-transfer.md).
    Column("file_id", String(36), primary_key=True),
    Column("program_code", String(ID), primary_key=True),
    Column("head_end_system", String(ID), primary_key=True),
    Column("nic_id", String(ID), primary_key=True),
    Column("device_id", BigInteger),
    Column("score", Float, nullable=False),
    Column("eligible", Boolean, nullable=False),
    Column("ineligibility_reason", String(32)),
)

# --- messaging: outbox (messages this system sends) and inbox (messages it applied) ----------------

outbox, inbox = add_messaging_tables(metadata)
