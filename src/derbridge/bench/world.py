"""The given state a scenario starts from, built before its clock starts.

Inputs come from the synthetic utility (:func:`derbridge.sim.generator.generate_utility`), so devices,
accounts and NIC ids look like production's. Two ways to reach a state:

* through the flows (CIS import, programs, heartbeats: the real code, used where it is quick), and
* :func:`seed_enrolled_devices`, which writes a program's ACTIVE enrollments straight into both systems'
  tables in bulk — what a million devices enrolled over several seasons look like — because walking a
  million devices through F1, F2 and F3 would take far longer than the benchmark they prepare. It writes
  exactly the rows those flows leave: Asset Hub's devices, ACTIVE enrollments with their devices and an
  answered status check each (the device's last communication); the DERMS's devices and their
  availability. Nothing of the flow being measured is seeded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from sqlalchemy import Connection, Table

from derbridge.assethub.adapters import tables as ah
from derbridge.derms.adapters import tables as dm
from derbridge.embedded import EmbeddedSystem
from derbridge.infra.bulk import bulk_upsert_arrow, db_timestamp
from derbridge.infra.ids import new_ids
from derbridge.runtime import Runtime
from derbridge.sim.generator import AGGREGATORS_DIR, ENROLLMENT_CLOSES, ENROLLMENT_OPENS, generate_utility

PROGRAM = "SUMMER-BYOT"
DEVICES_PER_CUSTOMER = 1.2
"""Accepted devices per generated customer, a little under what the generator makes (about 1.23)."""
SEED = 20_270_601


def generate(customers: int, out_dir: Path) -> Any:
    """A synthetic utility of ``customers`` customers under ``out_dir`` (its report)."""
    return generate_utility(customers, SEED, out_dir, program_code=PROGRAM)


def customers_for_devices(devices: int) -> int:
    """Customers to generate for at least ``devices`` accepted devices."""
    return math.ceil(devices / DEVICES_PER_CUSTOMER) + 10


def accepted_devices(utility_dir: Path, count: int | None = None) -> pa.Table:
    """The devices of the accepted requests (one row each, first ``count``), from the inventories, as
    columns: ``head_end_system, nic_id, device_type, manufacturer, model, serial_no, request_id,
    cis_person_id, cis_account_id, cis_premise_id, cis_service_point_id``."""
    columns = [
        "head_end_system",
        "nic_id",
        "device_type",
        "manufacturer",
        "model",
        "serial_no",
        "request_id",
        "cis_person_id",
        "cis_account_id",
        "cis_premise_id",
        "cis_service_point_id",
        "expected_result",
    ]
    convert = pa_csv.ConvertOptions(
        include_columns=columns, column_types=dict.fromkeys(columns, pa.string()), strings_can_be_null=False
    )
    parts = [
        pa_csv.read_csv(path, convert_options=convert) for path in sorted((utility_dir / AGGREGATORS_DIR).glob("*.csv"))
    ]
    table = pa.concat_tables(parts)
    table = table.filter(pc.equal(table.column("expected_result"), "ACCEPTED")).drop_columns(["expected_result"])
    # A device appears once per head end (the generator's ids are unique; requests that repeat one are
    # the rejected ones, filtered out above).
    if count is not None:
        if table.num_rows < count:
            raise ValueError(f"the utility has {table.num_rows:,} accepted devices, {count:,} are needed")
        table = table.slice(0, count)
    return table.combine_chunks()


async def create_programs(system: EmbeddedSystem) -> None:
    """The program, ACTIVE in Asset Hub through its API (as the demo does), and carried to the DERMS by
    program sync (the bridge settled until it is there)."""
    response = await system.client.post(
        "/assethub/v1/programs",
        json={
            "program_code": PROGRAM,
            "name": "Summer bring-your-own-thermostat",
            "status": "ACTIVE",
            "enrollment_opens_at": ENROLLMENT_OPENS.isoformat(),
            "enrollment_closes_at": (ENROLLMENT_CLOSES + timedelta(days=120)).isoformat(),
            "eligible_device_types": ["THERMOSTAT", "WATER_HEATER"],
        },
    )
    if response.status_code not in (201, 409):
        raise RuntimeError(f"creating the program in Asset Hub: {response.status_code} {response.text[:300]}")
    await system.settle()
    synced = await system.client.get(f"/derms/v1/programs/{PROGRAM}")
    if synced.status_code != 200:
        raise RuntimeError(f"the program did not reach the DERMS: {synced.status_code} {synced.text[:300]}")


async def report_online(client: httpx.AsyncClient, devices: pa.Table, now: datetime) -> None:
    """Every device reports ONLINE a minute ago, through the DERMS's API (as the edge will)."""
    heads = devices.column("head_end_system").to_pylist()
    nics = devices.column("nic_id").to_pylist()
    seen = (now - timedelta(minutes=1)).isoformat()
    reports = [
        {
            "head_end_system": head,
            "nic_id": nic,
            "communication_status": "ONLINE",
            "last_communication_at": seen,
            "source": head,
        }
        for head, nic in zip(heads, nics, strict=True)
    ]
    for start in range(0, len(reports), 50_000):
        response = await client.post(
            "/derms/v1/communication-status/batch", json={"reports": reports[start : start + 50_000]}
        )
        if response.status_code != 200:
            raise RuntimeError(f"heartbeats: {response.status_code} {response.text[:300]}")


@dataclass(frozen=True)
class Seeded:
    """What :func:`seed_enrolled_devices` wrote."""

    devices: int


def _stamp(connection: Connection, value: datetime) -> str:
    """``value`` as the text a bulk write gives a timestamp column (naive UTC on SQLite, ISO 8601 with its
    offset for PostgreSQL's ``COPY``)."""
    stamp = db_timestamp(connection, value)
    return stamp if isinstance(stamp, str) else stamp.isoformat()


def _without_key_checks(connection: Connection) -> None:
    """PostgreSQL: skip the foreign-key triggers in this transaction (the seeded rows are consistent by
    construction; checking each of millions one by one made seeding several times slower). Needs a
    superuser, which the benchmark's database URL is (it creates databases)."""
    if connection.dialect.name == "postgresql":
        connection.exec_driver_sql("SET LOCAL session_replication_role = replica")


def _write(connection: Connection, table: Table, columns: dict[str, pa.Array]) -> None:
    """Bulk-insert columns into an empty ``table``: ``COPY`` of Arrow-written CSV on PostgreSQL, one
    ``executemany`` on SQLite (:func:`~derbridge.infra.bulk.bulk_upsert_arrow`, new keys only)."""
    key = [c.name for c in table.primary_key.columns]
    bulk_upsert_arrow(connection, table, pa.table(columns), key=key, new_keys_only=True)


def seed_enrolled_devices(runtime: Runtime, devices: pa.Table, now: datetime) -> Seeded:
    """Write ``devices`` (from :func:`accepted_devices`) as ACTIVE, AVAILABLE, recently seen members of
    :data:`PROGRAM` into both systems, in bulk (the module docstring says why). The program must exist.

    Columns are built in Arrow and written without a Python object per row where the backend allows it:
    seeding a million devices is given state, not the flow under measurement, but it is most of the
    suite's wall time."""
    n = devices.num_rows
    col = {name: devices.column(name) for name in devices.column_names}

    def same(value: object) -> pa.Array:
        return pa.repeat(value, n)

    ids = pa.array(np.arange(1, n + 1, dtype=np.int64))
    enrollment_ids = pa.array(new_ids(n), pa.string())
    check_ids = pa.array(new_ids(n), pa.string())
    # One enrollment per device here: a request of two devices becomes two enrollments.
    request_ids = pc.binary_join_element_wise(col["request_id"], pa.array(np.arange(n).astype(str)), "-")
    with runtime.sync_engine("assethub").begin() as connection:
        _without_key_checks(connection)
        at = same(_stamp(connection, now - timedelta(days=30)))
        seen = same(_stamp(connection, now - timedelta(hours=1)))
        _write(
            connection,
            ah.devices,
            {
                "device_id": ids,
                **{c: col[c] for c in ("head_end_system", "nic_id", "device_type", "manufacturer", "model")},
                "serial_no": col["serial_no"],
                "created_at": at,
            },
        )
        _write(
            connection,
            ah.enrollments,
            {
                "enrollment_id": enrollment_ids,
                "head_end_system": col["head_end_system"],
                "request_id": request_ids,
                "program_code": same(PROGRAM),
                **{c: col[c] for c in ("cis_person_id", "cis_account_id", "cis_premise_id", "cis_service_point_id")},
                "state": same("ACTIVE"),
                "rejections": same("[]"),
                "requested_at": at,
                "created_at": at,
                "updated_at": at,
                "sync_sequence": same(1),
            },
        )
        _write(
            connection,
            ah.enrollment_devices,
            {"enrollment_id": enrollment_ids, "device_id": ids, "sequence": same(1), "added_at": at},
        )
        _write(
            connection,
            ah.device_status_checks,
            {
                "check_id": check_ids,
                "device_id": ids,
                "enrollment_id": enrollment_ids,
                "reason": same("ENROLLMENT_SETUP"),
                "requested_by": same("enrollment-setup"),
                "status": same("ANSWERED"),
                "requested_at": seen,
                "timeout_at": seen,
                "answered_at": seen,
                "result": same("SUCCESS"),
                "communication_status": same("ONLINE"),
                "last_communication_at": seen,
                "source": col["head_end_system"],
                "late_answer": same(False),
            },
        )
    with runtime.sync_engine("derms").begin() as connection:
        _without_key_checks(connection)
        at = same(_stamp(connection, now - timedelta(days=30)))
        _write(
            connection,
            dm.devices,
            {
                "device_id": ids,
                **{c: col[c] for c in ("head_end_system", "nic_id", "device_type", "manufacturer", "model")},
                "created_at": at,
            },
        )
        _write(
            connection,
            dm.device_availability,
            {
                "device_id": ids,
                "program_code": same(PROGRAM),
                "enrollment_id": enrollment_ids,
                "cis_account_id": col["cis_account_id"],
                "cis_service_point_id": col["cis_service_point_id"],
                "availability": same("AVAILABLE"),
                "sequence": same(1),
                "updated_at": at,
            },
        )
    for engine_system in ("assethub", "derms"):
        engine = runtime.sync_engine(engine_system)
        if engine.dialect.name == "postgresql":
            # Explicit ids bypassed the sequences: move them past the seeded rows, and give the planner
            # statistics as a database that grew over seasons would have.
            with engine.begin() as connection:
                connection.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('devices', 'device_id'), {n + 1}, false)"
                )
            with engine.connect() as connection:
                connection.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
        else:
            with engine.begin() as connection:
                connection.exec_driver_sql("ANALYZE")
    return Seeded(devices=n)
