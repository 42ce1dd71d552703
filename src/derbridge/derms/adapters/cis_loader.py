"""The DERMS's grid view of the CIS: contacts, customers and locations, upserted in bulk."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Column, Connection

from derbridge.cis.extract import ADDRESS_COLUMNS
from derbridge.cis.loading import CisLoader, entity_rows
from derbridge.derms.adapters import tables as t
from derbridge.infra.bulk import bulk_upsert_arrow

_LOCATION_COLUMNS = (
    "cis_service_point_id",
    "cis_premise_id",
    "cis_account_id",
    *ADDRESS_COLUMNS,
    "row_hash",
)


class DermsCisLoader(CisLoader):
    """Loads CIS rows into the DERMS."""

    system = "derms"

    @property
    def digest_columns(self) -> tuple[Column[Any], Column[Any]]:
        return t.locations.c.cis_service_point_id, t.locations.c.cis_row_hash

    def write(self, connection: Connection, rows: Any, now: Any) -> None:
        # One write per entity even when several rows share it (see AssetHubCisLoader.write).
        contact = ("cis_person_id", "name", "email", "home_phone", "business_phone")
        bulk_upsert_arrow(connection, t.contacts, entity_rows(rows, contact, now), key=["cis_person_id"])
        customer = ("cis_account_id", "cis_person_id", "account_status")
        bulk_upsert_arrow(connection, t.customers, entity_rows(rows, customer, now), key=["cis_account_id"])
        bulk_upsert_arrow(
            connection,
            t.locations,
            entity_rows(rows, _LOCATION_COLUMNS, now, last_per_key=False),
            key=["cis_service_point_id"],
            new_keys_only=self.first_import,
        )
