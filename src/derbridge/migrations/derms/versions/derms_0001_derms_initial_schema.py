"""derms initial schema

Revision ID: derms_0001
Revises:
Create Date: 2026-11-26 14:29:07.099254
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "derms_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "communication_status",
        sa.Column("head_end_system", sa.String(length=64), nullable=False),
        sa.Column("nic_id", sa.String(length=64), nullable=False),
        sa.Column("communication_status", sa.String(length=16), nullable=False),
        sa.Column("last_communication_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("operating_state", sa.String(length=32), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "communication_status IN ('ONLINE', 'OFFLINE', 'UNKNOWN')",
            name=op.f("ck_communication_status_status"),
        ),
        sa.PrimaryKeyConstraint("head_end_system", "nic_id", name=op.f("pk_communication_status")),
    )
    op.create_table(
        "contacts",
        sa.Column("cis_person_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("home_phone", sa.Text(), nullable=True),
        sa.Column("business_phone", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cis_person_id", name=op.f("pk_contacts")),
    )
    op.create_table(
        "devices",
        sa.Column(
            "device_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("head_end_system", sa.String(length=64), nullable=False),
        sa.Column("nic_id", sa.String(length=64), nullable=False),
        sa.Column("device_type", sa.String(length=32), nullable=False),
        sa.Column("manufacturer", sa.Text(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_devices")),
        sa.UniqueConstraint("head_end_system", "nic_id", name="uq_devices_head_end_nic"),
    )
    op.create_table(
        "programs",
        sa.Column("program_code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("expected_shed_kw", sa.Float(), nullable=False),
        sa.Column("outcome_grace_hours", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("program_code", name=op.f("pk_programs")),
    )
    op.create_table(
        "score_snapshots",
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scoring_model_version", sa.String(length=32), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("unknown_devices", sa.Integer(), nullable=False),
        sa.Column("loaded_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("is_current", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("file_id", name=op.f("pk_score_snapshots")),
    )
    op.create_table(
        "customers",
        sa.Column("cis_account_id", sa.String(length=64), nullable=False),
        sa.Column("cis_person_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["cis_person_id"], ["contacts.cis_person_id"], name=op.f("fk_customers_cis_person_id_contacts")
        ),
        sa.PrimaryKeyConstraint("cis_account_id", name=op.f("pk_customers")),
    )
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_customers_cis_person_id"), ["cis_person_id"], unique=False)

    op.create_table(
        "device_availability",
        sa.Column("device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("program_code", sa.String(length=64), nullable=False),
        sa.Column("enrollment_id", sa.String(length=36), nullable=False),
        sa.Column("cis_account_id", sa.String(length=64), nullable=False),
        sa.Column("cis_service_point_id", sa.String(length=64), nullable=False),
        sa.Column("availability", sa.String(length=16), nullable=False),
        sa.Column("sequence", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "availability IN ('AVAILABLE', 'UNAVAILABLE')", name=op.f("ck_device_availability_availability")
        ),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.device_id"], name=op.f("fk_device_availability_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["program_code"],
            ["programs.program_code"],
            name=op.f("fk_device_availability_program_code_programs"),
        ),
        sa.PrimaryKeyConstraint("device_id", "program_code", name=op.f("pk_device_availability")),
    )
    with op.batch_alter_table("device_availability", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_availability_enrollment_id"), ["enrollment_id"], unique=False)
        batch_op.create_index("ix_device_availability_program", ["program_code", "availability"], unique=False)

    op.create_table(
        "device_scores",
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("program_code", sa.String(length=64), nullable=False),
        sa.Column("head_end_system", sa.String(length=64), nullable=False),
        sa.Column("nic_id", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.BigInteger(), nullable=True),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("eligible", sa.Boolean(), nullable=False),
        sa.Column("ineligibility_reason", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["file_id"], ["score_snapshots.file_id"], name=op.f("fk_device_scores_file_id_score_snapshots")
        ),
        sa.PrimaryKeyConstraint("file_id", "program_code", "head_end_system", "nic_id", name=op.f("pk_device_scores")),
    )
    op.create_table(
        "program_events",
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("derms_instance_id", sa.String(length=64), nullable=False),
        sa.Column("program_code", sa.String(length=64), nullable=False),
        sa.Column("event_type", sa.String(length=16), nullable=False),
        sa.Column("start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("target_devices", sa.Integer(), nullable=True),
        sa.Column("target_kw", sa.Float(), nullable=True),
        sa.Column("candidate_count", sa.Integer(), nullable=False),
        sa.Column("reserved_count", sa.Integer(), nullable=False),
        sa.Column("reserved_kw", sa.Float(), nullable=False),
        sa.Column("shortfall_devices", sa.Integer(), nullable=False),
        sa.Column("shortfall_kw", sa.Float(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "(target_devices IS NULL) <> (target_kw IS NULL)", name=op.f("ck_program_events_one_target")
        ),
        sa.ForeignKeyConstraint(
            ["program_code"], ["programs.program_code"], name=op.f("fk_program_events_program_code_programs")
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_program_events")),
    )
    with op.batch_alter_table("program_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_program_events_program_code"), ["program_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_program_events_status"), ["status"], unique=False)

    op.create_table(
        "locations",
        sa.Column("cis_service_point_id", sa.String(length=64), nullable=False),
        sa.Column("cis_premise_id", sa.String(length=64), nullable=False),
        sa.Column("cis_account_id", sa.String(length=64), nullable=False),
        sa.Column("division", sa.String(length=64), nullable=False),
        sa.Column("address1", sa.Text(), nullable=False),
        sa.Column("address2", sa.Text(), nullable=True),
        sa.Column("address3", sa.Text(), nullable=True),
        sa.Column("address4", sa.Text(), nullable=True),
        sa.Column("city", sa.Text(), nullable=False),
        sa.Column("county", sa.Text(), nullable=True),
        sa.Column("state", sa.String(length=32), nullable=False),
        sa.Column("postal", sa.String(length=16), nullable=False),
        sa.Column("country", sa.String(length=32), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("latitude", sa.Float(), nullable=True),
        sa.Column("longitude", sa.Float(), nullable=True),
        sa.Column("cis_row_hash", sa.String(length=32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["cis_account_id"],
            ["customers.cis_account_id"],
            name=op.f("fk_locations_cis_account_id_customers"),
        ),
        sa.PrimaryKeyConstraint("cis_service_point_id", name=op.f("pk_locations")),
    )
    with op.batch_alter_table("locations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_locations_cis_account_id"), ["cis_account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_locations_cis_premise_id"), ["cis_premise_id"], unique=False)

    op.create_table(
        "outcomes",
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=False),
        sa.Column("preemptive_opt_out", sa.Boolean(), nullable=False),
        sa.Column("participation_start_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("participation_end_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("shed_kw", sa.Float(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("origin", sa.String(length=16), nullable=False),
        sa.Column("reported_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["device_id"], ["devices.device_id"], name=op.f("fk_outcomes_device_id_devices")),
        sa.ForeignKeyConstraint(
            ["event_id"], ["program_events.event_id"], name=op.f("fk_outcomes_event_id_program_events")
        ),
        sa.PrimaryKeyConstraint("event_id", "device_id", name=op.f("pk_outcomes")),
    )
    op.create_table(
        "reservations",
        sa.Column("record_id", sa.String(length=36), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("rank", sa.Integer(), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("expected_shed_kw", sa.Float(), nullable=False),
        sa.Column("reservation_start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reservation_end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("released_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("release_reason", sa.Text(), nullable=True),
        sa.CheckConstraint("status IN ('RESERVED', 'RELEASED')", name=op.f("ck_reservations_status")),
        sa.ForeignKeyConstraint(["device_id"], ["devices.device_id"], name=op.f("fk_reservations_device_id_devices")),
        sa.ForeignKeyConstraint(
            ["event_id"], ["program_events.event_id"], name=op.f("fk_reservations_event_id_program_events")
        ),
        sa.PrimaryKeyConstraint("record_id", name=op.f("pk_reservations")),
        sa.UniqueConstraint("event_id", "device_id", name="uq_reservations_event_device"),
    )
    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reservations_device_id"), ["device_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("reservations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_reservations_device_id"))

    op.drop_table("reservations")
    op.drop_table("outcomes")
    with op.batch_alter_table("locations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_locations_cis_premise_id"))
        batch_op.drop_index(batch_op.f("ix_locations_cis_account_id"))

    op.drop_table("locations")
    with op.batch_alter_table("program_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_program_events_status"))
        batch_op.drop_index(batch_op.f("ix_program_events_program_code"))

    op.drop_table("program_events")
    op.drop_table("device_scores")
    with op.batch_alter_table("device_availability", schema=None) as batch_op:
        batch_op.drop_index("ix_device_availability_program")
        batch_op.drop_index(batch_op.f("ix_device_availability_enrollment_id"))

    op.drop_table("device_availability")
    with op.batch_alter_table("customers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_customers_cis_person_id"))

    op.drop_table("customers")
    op.drop_table("score_snapshots")
    op.drop_table("programs")
    op.drop_table("devices")
    op.drop_table("contacts")
    op.drop_table("communication_status")
