"""assethub initial schema

Revision ID: assethub_0001
Revises:
Create Date: 2026-11-26 14:29:06.658198
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "assethub_0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

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
        sa.Column("serial_no", sa.Text(), nullable=False),
        sa.Column("badge_no", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("device_id", name=op.f("pk_devices")),
        sa.UniqueConstraint("head_end_system", "nic_id", name="uq_devices_head_end_nic"),
    )
    op.create_table(
        "enrollments",
        sa.Column("enrollment_id", sa.String(length=36), nullable=False),
        sa.Column("head_end_system", sa.String(length=64), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=False),
        sa.Column("program_code", sa.String(length=64), nullable=False),
        sa.Column("cis_person_id", sa.String(length=64), nullable=False),
        sa.Column("cis_account_id", sa.String(length=64), nullable=False),
        sa.Column("cis_premise_id", sa.String(length=64), nullable=False),
        sa.Column("cis_service_point_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("installation_method", sa.String(length=32), nullable=True),
        sa.Column("asset_ownership", sa.String(length=32), nullable=True),
        sa.Column("start_date", sa.String(length=10), nullable=True),
        sa.Column("end_date", sa.String(length=10), nullable=True),
        sa.Column("rejections", sa.JSON(), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("enrollment_id", name=op.f("pk_enrollments")),
        sa.UniqueConstraint("head_end_system", "request_id", name="uq_enrollments_request"),
    )
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_enrollments_cis_account_id"), ["cis_account_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_enrollments_program_code"), ["program_code"], unique=False)
        batch_op.create_index(batch_op.f("ix_enrollments_state"), ["state"], unique=False)

    op.create_table(
        "persons",
        sa.Column("cis_person_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("home_phone", sa.Text(), nullable=True),
        sa.Column("business_phone", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("cis_person_id", name=op.f("pk_persons")),
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
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("cancelled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("cancel_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_program_events")),
    )
    with op.batch_alter_table("program_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_program_events_program_code"), ["program_code"], unique=False)

    op.create_table(
        "programs",
        sa.Column("program_code", sa.String(length=64), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("enrollment_opens_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("enrollment_closes_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("eligible_device_types", sa.JSON(), nullable=False),
        sa.Column("excluded_program_codes", sa.JSON(), nullable=False),
        sa.Column("rules", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("program_code", name=op.f("pk_programs")),
    )
    op.create_table(
        "score_snapshots",
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("generated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("scoring_model_version", sa.String(length=32), nullable=False),
        sa.Column("programs", sa.JSON(), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("eligible_count", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("byte_size", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("file_id", name=op.f("pk_score_snapshots")),
    )
    op.create_table(
        "accounts",
        sa.Column("cis_account_id", sa.String(length=64), nullable=False),
        sa.Column("cis_person_id", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["cis_person_id"], ["persons.cis_person_id"], name=op.f("fk_accounts_cis_person_id_persons")
        ),
        sa.PrimaryKeyConstraint("cis_account_id", name=op.f("pk_accounts")),
    )
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_accounts_cis_person_id"), ["cis_person_id"], unique=False)

    op.create_table(
        "device_scores",
        sa.Column("file_id", sa.String(length=36), nullable=False),
        sa.Column("program_code", sa.String(length=64), nullable=False),
        sa.Column("device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("score", sa.Float(), nullable=False),
        sa.Column("eligible", sa.Boolean(), nullable=False),
        sa.Column("ineligibility_reason", sa.String(length=32), nullable=True),
        sa.Column("reliability", sa.Float(), nullable=False),
        sa.Column("connectivity", sa.Float(), nullable=False),
        sa.Column("fatigue", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(
            ["file_id"], ["score_snapshots.file_id"], name=op.f("fk_device_scores_file_id_score_snapshots")
        ),
        sa.PrimaryKeyConstraint("file_id", "program_code", "device_id", name=op.f("pk_device_scores")),
    )
    op.create_table(
        "device_status_checks",
        sa.Column("check_id", sa.String(length=36), nullable=False),
        sa.Column("device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("enrollment_id", sa.String(length=36), nullable=True),
        sa.Column("reason", sa.String(length=32), nullable=False),
        sa.Column("requested_by", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("timeout_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("answered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("result", sa.String(length=16), nullable=True),
        sa.Column("communication_status", sa.String(length=16), nullable=True),
        sa.Column("last_communication_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("source", sa.String(length=64), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.Column("late_answer", sa.Boolean(), nullable=False),
        sa.CheckConstraint("status IN ('OPEN', 'ANSWERED', 'TIMED_OUT')", name=op.f("ck_device_status_checks_status")),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.device_id"], name=op.f("fk_device_status_checks_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.enrollment_id"],
            name=op.f("fk_device_status_checks_enrollment_id_enrollments"),
        ),
        sa.PrimaryKeyConstraint("check_id", name=op.f("pk_device_status_checks")),
    )
    with op.batch_alter_table("device_status_checks", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_device_status_checks_device_id"), ["device_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_device_status_checks_status"), ["status"], unique=False)

    op.create_table(
        "enrollment_devices",
        sa.Column("enrollment_id", sa.String(length=36), nullable=False),
        sa.Column("device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("removed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.device_id"], name=op.f("fk_enrollment_devices_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.enrollment_id"],
            name=op.f("fk_enrollment_devices_enrollment_id_enrollments"),
        ),
        sa.PrimaryKeyConstraint("enrollment_id", "device_id", name=op.f("pk_enrollment_devices")),
    )
    with op.batch_alter_table("enrollment_devices", schema=None) as batch_op:
        batch_op.create_index("ix_enrollment_devices_device", ["device_id"], unique=False)

    op.create_table(
        "enrollment_transitions",
        sa.Column(
            "transition_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("enrollment_id", sa.String(length=36), nullable=False),
        sa.Column("from_state", sa.String(length=16), nullable=True),
        sa.Column("to_state", sa.String(length=16), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["enrollment_id"],
            ["enrollments.enrollment_id"],
            name=op.f("fk_enrollment_transitions_enrollment_id_enrollments"),
        ),
        sa.PrimaryKeyConstraint("transition_id", name=op.f("pk_enrollment_transitions")),
    )
    with op.batch_alter_table("enrollment_transitions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_enrollment_transitions_enrollment_id"), ["enrollment_id"], unique=False)

    op.create_table(
        "participation_records",
        sa.Column("record_id", sa.String(length=36), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("reservation_start_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("reservation_end_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("outcome", sa.String(length=32), nullable=True),
        sa.Column("preemptive_opt_out", sa.Boolean(), nullable=True),
        sa.Column("participation_start_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("participation_end_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("shed_kw", sa.Float(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("outcome_reported_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["device_id"], ["devices.device_id"], name=op.f("fk_participation_records_device_id_devices")
        ),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["program_events.event_id"],
            name=op.f("fk_participation_records_event_id_program_events"),
        ),
        sa.PrimaryKeyConstraint("record_id", name=op.f("pk_participation_records")),
        sa.UniqueConstraint("event_id", "device_id", name="uq_participation_event_device"),
    )
    with op.batch_alter_table("participation_records", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_participation_records_device_id"), ["device_id"], unique=False)

    op.create_table(
        "participation_corrections",
        sa.Column(
            "correction_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("record_id", sa.String(length=36), nullable=False),
        sa.Column("previous_outcome", sa.String(length=32), nullable=False),
        sa.Column("previous_preemptive_opt_out", sa.Boolean(), nullable=True),
        sa.Column("new_outcome", sa.String(length=32), nullable=False),
        sa.Column("corrected_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["participation_records.record_id"],
            name=op.f("fk_participation_corrections_record_id_participation_records"),
        ),
        sa.PrimaryKeyConstraint("correction_id", name=op.f("pk_participation_corrections")),
    )
    with op.batch_alter_table("participation_corrections", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_participation_corrections_record_id"), ["record_id"], unique=False)

    op.create_table(
        "premises",
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
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["cis_account_id"], ["accounts.cis_account_id"], name=op.f("fk_premises_cis_account_id_accounts")
        ),
        sa.PrimaryKeyConstraint("cis_premise_id", name=op.f("pk_premises")),
    )
    with op.batch_alter_table("premises", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_premises_cis_account_id"), ["cis_account_id"], unique=False)

    op.create_table(
        "service_points",
        sa.Column("cis_service_point_id", sa.String(length=64), nullable=False),
        sa.Column("cis_premise_id", sa.String(length=64), nullable=False),
        sa.Column("cis_row_hash", sa.String(length=32), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["cis_premise_id"],
            ["premises.cis_premise_id"],
            name=op.f("fk_service_points_cis_premise_id_premises"),
        ),
        sa.PrimaryKeyConstraint("cis_service_point_id", name=op.f("pk_service_points")),
    )
    with op.batch_alter_table("service_points", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_service_points_cis_premise_id"), ["cis_premise_id"], unique=False)


def downgrade() -> None:

    with op.batch_alter_table("service_points", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_service_points_cis_premise_id"))

    op.drop_table("service_points")
    with op.batch_alter_table("premises", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_premises_cis_account_id"))

    op.drop_table("premises")
    with op.batch_alter_table("participation_corrections", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_participation_corrections_record_id"))

    op.drop_table("participation_corrections")
    with op.batch_alter_table("participation_records", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_participation_records_device_id"))

    op.drop_table("participation_records")
    with op.batch_alter_table("enrollment_transitions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrollment_transitions_enrollment_id"))

    op.drop_table("enrollment_transitions")
    with op.batch_alter_table("enrollment_devices", schema=None) as batch_op:
        batch_op.drop_index("ix_enrollment_devices_device")

    op.drop_table("enrollment_devices")
    with op.batch_alter_table("device_status_checks", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_device_status_checks_status"))
        batch_op.drop_index(batch_op.f("ix_device_status_checks_device_id"))

    op.drop_table("device_status_checks")
    op.drop_table("device_scores")
    with op.batch_alter_table("accounts", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_accounts_cis_person_id"))

    op.drop_table("accounts")
    op.drop_table("score_snapshots")
    op.drop_table("programs")
    with op.batch_alter_table("program_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_program_events_program_code"))

    op.drop_table("program_events")
    op.drop_table("persons")
    with op.batch_alter_table("enrollments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_enrollments_state"))
        batch_op.drop_index(batch_op.f("ix_enrollments_program_code"))
        batch_op.drop_index(batch_op.f("ix_enrollments_cis_account_id"))

    op.drop_table("enrollments")
    op.drop_table("devices")
