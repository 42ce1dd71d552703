"""Asset Hub's database tables (SQLAlchemy Core). Migrations create them; this module only describes them.

Customer data (persons, accounts, premises, service points) is a copy of the CIS, keyed by CIS ids and
upserted by the CIS import. Everything else is Asset Hub's own record.
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
    LargeBinary,
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

ID = 64  # length of external identifiers (CIS ids, nic ids, request ids)

# --- CIS copy ------------------------------------------------------------------------------------

persons = Table(
    "persons",
    metadata,
    Column("cis_person_id", String(ID), primary_key=True),
    Column("name", Text, nullable=False),
    Column("email", Text),
    Column("home_phone", Text),
    Column("business_phone", Text),
    Column("updated_at", UTCDateTime, nullable=False),
)

accounts = Table(
    "accounts",
    metadata,
    Column("cis_account_id", String(ID), primary_key=True),
    Column("cis_person_id", String(ID), ForeignKey("persons.cis_person_id"), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

premises = Table(
    "premises",
    metadata,
    Column("cis_premise_id", String(ID), primary_key=True),
    Column("cis_account_id", String(ID), ForeignKey("accounts.cis_account_id"), nullable=False, index=True),
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
    Column("updated_at", UTCDateTime, nullable=False),
)

service_points = Table(
    "service_points",
    metadata,
    Column("cis_service_point_id", String(ID), primary_key=True),
    Column("cis_premise_id", String(ID), ForeignKey("premises.cis_premise_id"), nullable=False, index=True),
    Column("cis_row_hash", String(32), nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
)

# --- programs, devices, enrollments -------------------------------------------------------------

programs = Table(
    "programs",
    metadata,
    Column("program_code", String(ID), primary_key=True),
    Column("name", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("enrollment_opens_at", UTCDateTime),
    Column("enrollment_closes_at", UTCDateTime),
    Column("eligible_device_types", JSON, nullable=False),
    Column("excluded_program_codes", JSON, nullable=False),
    Column("rules", JSON, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # program sync: the version of the last change (sent to the DERMS as its sequence; 0 = never sent), and
    # what the DERMS made of that version
    Column("version", Integer, nullable=False, server_default="0"),
    Column("sync_state", String(16)),
    Column("sync_detail", Text),
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
    Column("serial_no", Text, nullable=False),
    Column("badge_no", Text),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("head_end_system", "nic_id", name="uq_devices_head_end_nic"),
)

enrollments = Table(
    "enrollments",
    metadata,
    Column("enrollment_id", String(36), primary_key=True),
    Column("head_end_system", String(ID), nullable=False),
    Column("request_id", String(ID), nullable=False),
    Column("program_code", String(ID), nullable=False, index=True),
    Column("cis_person_id", String(ID), nullable=False),
    Column("cis_account_id", String(ID), nullable=False, index=True),
    Column("cis_premise_id", String(ID), nullable=False),
    Column("cis_service_point_id", String(ID), nullable=False),
    Column("state", String(16), nullable=False, index=True),
    Column("installation_method", String(32)),
    Column("asset_ownership", String(32)),
    Column("start_date", String(10)),
    Column("end_date", String(10)),
    Column("rejections", JSON, nullable=False),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    # device-setup step (F2): when it started, and when the next status check is due
    Column("setup_started_at", UTCDateTime),
    Column("next_check_at", UTCDateTime, index=True),
    # enrollment sync (F3): the last sequence sent, and what the DERMS made of it
    Column("sync_sequence", Integer, nullable=False, server_default="0"),
    Column("sync_state", String(16)),
    Column("sync_detail", Text),
    UniqueConstraint("head_end_system", "request_id", name="uq_enrollments_request"),
)

enrollment_syncs = Table(
    "enrollment_syncs",
    metadata,
    Column("sync_id", String(36), primary_key=True),
    Column("enrollment_id", String(36), ForeignKey("enrollments.enrollment_id"), nullable=False, index=True),
    Column("message_id", String(64), nullable=False, unique=True),
    Column("sequence", Integer, nullable=False),
    Column("change", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("detail", Text),
    Column("sent_at", UTCDateTime, nullable=False),
    Column("acknowledged_at", UTCDateTime),
)

enrollment_devices = Table(
    "enrollment_devices",
    metadata,
    Column("enrollment_id", String(36), ForeignKey("enrollments.enrollment_id"), primary_key=True),
    Column("device_id", BigIntPK, ForeignKey("devices.device_id"), primary_key=True),
    Column("sequence", Integer, nullable=False),
    Column("added_at", UTCDateTime, nullable=False),
    Column("removed_at", UTCDateTime),
    Index("ix_enrollment_devices_device", "device_id"),
)

enrollment_transitions = Table(
    "enrollment_transitions",
    metadata,
    Column("transition_id", BigIntPK, primary_key=True, autoincrement=True),
    Column("enrollment_id", String(36), ForeignKey("enrollments.enrollment_id"), nullable=False, index=True),
    Column("from_state", String(16)),
    Column("to_state", String(16), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("reason", Text),
)

# --- status checks, events, participation, scores ----------------------------------------------

device_status_checks = Table(
    "device_status_checks",
    metadata,
    Column("check_id", String(36), primary_key=True),
    Column("device_id", BigIntPK, ForeignKey("devices.device_id"), nullable=False, index=True),
    Column("enrollment_id", String(36), ForeignKey("enrollments.enrollment_id")),
    Column("reason", String(32), nullable=False),
    Column("requested_by", Text, nullable=False),
    Column("status", String(16), nullable=False, index=True),
    Column("requested_at", UTCDateTime, nullable=False),
    Column("timeout_at", UTCDateTime, nullable=False),
    Column("answered_at", UTCDateTime),
    Column("result", String(16)),
    Column("communication_status", String(16)),
    Column("last_communication_at", UTCDateTime),
    Column("source", String(ID)),
    Column("detail", Text),
    Column("late_answer", Boolean, nullable=False, default=False),
    CheckConstraint("status IN ('OPEN', 'ANSWERED', 'TIMED_OUT')", name="status"),
)

program_events = Table(
    "program_events",
    metadata,
    Column("event_id", String(36), primary_key=True),
    Column("derms_instance_id", String(ID), nullable=False),
    Column("program_code", String(ID), nullable=False, index=True),
    Column("event_type", String(16), nullable=False),
    Column("start_at", UTCDateTime, nullable=False),
    Column("end_at", UTCDateTime, nullable=False),
    Column("status", String(16), nullable=False),
    Column("received_at", UTCDateTime, nullable=False),
    Column("cancelled_at", UTCDateTime),
    Column("cancel_reason", Text),
)

participation_records = Table(
    "participation_records",
    metadata,
    Column("record_id", String(36), primary_key=True),
    Column("event_id", String(36), ForeignKey("program_events.event_id"), nullable=False),
    Column("device_id", BigIntPK, ForeignKey("devices.device_id"), nullable=False, index=True),
    Column("status", String(16), nullable=False),
    Column("reservation_start_at", UTCDateTime, nullable=False),
    Column("reservation_end_at", UTCDateTime, nullable=False),
    Column("outcome", String(32)),
    Column("preemptive_opt_out", Boolean),
    Column("participation_start_at", UTCDateTime),
    Column("participation_end_at", UTCDateTime),
    Column("shed_kw", Float),
    Column("error_message", Text),
    Column("outcome_reported_at", UTCDateTime),
    UniqueConstraint("event_id", "device_id", name="uq_participation_event_device"),
)

participation_corrections = Table(
    "participation_corrections",
    metadata,
    Column("correction_id", BigIntPK, primary_key=True, autoincrement=True),
    Column("record_id", String(36), ForeignKey("participation_records.record_id"), nullable=False, index=True),
    Column("previous_outcome", String(32), nullable=False),
    Column("previous_preemptive_opt_out", Boolean),
    Column("new_outcome", String(32), nullable=False),
    Column("corrected_at", UTCDateTime, nullable=False),
)

participation_summaries = Table(
    "participation_summaries",
    metadata,
    # Each device's history in each program, assembled from participation_records for scoring (F4): see
    # adapters/participation_summaries.py. Derived data, recomputed set-based whenever records change. The
    # key starts with device_id: refreshes select by device; the scoring read looks up (device, program).
    Column("device_id", BigIntPK, primary_key=True),
    Column("program_code", String(ID), primary_key=True),
    Column("classes", Text, nullable=False),
    Column("starts_us", Text, nullable=False),
)

score_snapshots = Table(
    "score_snapshots",
    metadata,
    Column("file_id", String(36), primary_key=True),
    Column("generated_at", UTCDateTime, nullable=False),
    Column("scoring_model_version", String(32), nullable=False),
    Column("programs", JSON, nullable=False),
    Column("row_count", Integer, nullable=False),
    Column("eligible_count", Integer, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("byte_size", BigInteger, nullable=False),
)

score_parts = Table(
    "score_parts",
    metadata,
    # A snapshot's scores with their components, as columnar parts (adapters/score_parts.py): the rows of one
    # program, by device id, PART_ROWS at a time, each part one Parquet file. Written only by the transfer,
    # in the transaction that inserts the snapshot (no foreign key, as before: it guarded nothing).
    Column("file_id", String(36), primary_key=True),
    Column("part", Integer, primary_key=True),
    Column("program_code", String(ID), nullable=False),
    Column("first_device_id", BigInteger, nullable=False),
    Column("last_device_id", BigInteger, nullable=False),
    Column("row_count", Integer, nullable=False),
    Column("data", LargeBinary, nullable=False),
)

job_leases = Table(
    "job_leases",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("owner", String(64)),
    Column("lease_until", UTCDateTime),
    Column("last_run_at", UTCDateTime),
)

# --- messaging: outbox (messages this system sends) and inbox (messages it applied) ----------------

outbox, inbox = add_messaging_tables(metadata)
