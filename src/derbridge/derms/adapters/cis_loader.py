"""The DERMS's grid view of the CIS: contacts, customers and locations, upserted in bulk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Connection

from derbridge.cis.extract import CisRecord
from derbridge.cis.loading import CisLoader
from derbridge.derms.adapters import tables as t
from derbridge.infra.bulk import bulk_upsert


class DermsCisLoader(CisLoader):
    """Loads CIS records into the DERMS."""

    system = "derms"

    @property
    def digest_columns(self) -> tuple[Column[Any], Column[Any]]:
        return t.locations.c.cis_service_point_id, t.locations.c.cis_row_hash

    def write(self, connection: Connection, records: Sequence[CisRecord], now: Any) -> None:
        # One write per entity even when several rows share it (see AssetHubCisLoader.write).
        contacts = {
            r.cis_person_id: (r.cis_person_id, r.name, r.email, r.home_phone, r.business_phone, now) for r in records
        }
        customers = {
            r.cis_account_id: (r.cis_account_id, r.cis_person_id, r.account_status.value, now) for r in records
        }
        locations = [
            (
                r.cis_service_point_id,
                r.cis_premise_id,
                r.cis_account_id,
                r.division,
                r.address1,
                r.address2,
                r.address3,
                r.address4,
                r.city,
                r.county,
                r.state,
                r.postal,
                r.country,
                r.time_zone,
                r.latitude,
                r.longitude,
                r.row_hash,
                now,
            )
            for r in records
        ]
        bulk_upsert(connection, t.contacts, list(contacts.values()), key=["cis_person_id"])
        bulk_upsert(connection, t.customers, list(customers.values()), key=["cis_account_id"])
        bulk_upsert(connection, t.locations, locations, key=["cis_service_point_id"])
