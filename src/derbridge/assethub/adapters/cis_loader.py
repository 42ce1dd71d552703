"""Asset Hub's copy of the CIS: persons, accounts, premises and service points, upserted in bulk."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Connection

from derbridge.assethub.adapters import tables as t
from derbridge.cis.extract import ADDRESS_COLUMNS
from derbridge.cis.loading import CisLoader, entity_rows
from derbridge.infra.bulk import bulk_upsert_arrow

_PREMISE_COLUMNS = (
    "cis_premise_id",
    "cis_account_id",
    *ADDRESS_COLUMNS,
)


class AssetHubCisLoader(CisLoader):
    """Loads CIS rows into Asset Hub."""

    system = "assethub"

    @property
    def digest_columns(self) -> tuple[Column[Any], Column[Any]]:
        return t.service_points.c.cis_service_point_id, t.service_points.c.cis_row_hash

    def write(self, connection: Connection, rows: Any, now: Any) -> None:
        # Several rows share a person, account or premise: the last row of the chunk wins, and each
        # entity is written once (PostgreSQL refuses to update one row twice in a statement). Parents
        # first; each table's rows in key order, so that its index pages fill in order.
        person = ("cis_person_id", "name", "email", "home_phone", "business_phone")
        bulk_upsert_arrow(connection, t.persons, entity_rows(rows, person, now), key=["cis_person_id"])
        account = ("cis_account_id", "cis_person_id", "account_status")
        bulk_upsert_arrow(connection, t.accounts, entity_rows(rows, account, now), key=["cis_account_id"])
        bulk_upsert_arrow(connection, t.premises, entity_rows(rows, _PREMISE_COLUMNS, now), key=["cis_premise_id"])
        point = ("cis_service_point_id", "cis_premise_id", "row_hash")
        bulk_upsert_arrow(
            connection,
            t.service_points,
            entity_rows(rows, point, now, last_per_key=False),
            key=["cis_service_point_id"],
            new_keys_only=self.first_import,
        )
