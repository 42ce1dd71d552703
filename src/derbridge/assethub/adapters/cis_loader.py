"""Asset Hub's copy of the CIS: persons, accounts, premises and service points, upserted in bulk."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Column, Connection

from derbridge.assethub.adapters import tables as t
from derbridge.cis.extract import CisRecord
from derbridge.cis.loading import CisLoader
from derbridge.infra.bulk import bulk_upsert


class AssetHubCisLoader(CisLoader):
    """Loads CIS records into Asset Hub."""

    system = "assethub"

    @property
    def digest_columns(self) -> tuple[Column[Any], Column[Any]]:
        return t.service_points.c.cis_service_point_id, t.service_points.c.cis_row_hash

    def write(self, connection: Connection, records: Sequence[CisRecord], now: Any) -> None:
        # Several rows share a person, account or premise: the last row of the chunk wins, and each
        # entity is written once (PostgreSQL refuses to update one row twice in a statement).
        persons = {
            r.cis_person_id: (r.cis_person_id, r.name, r.email, r.home_phone, r.business_phone, now) for r in records
        }
        accounts = {r.cis_account_id: (r.cis_account_id, r.cis_person_id, r.account_status.value, now) for r in records}
        premises = {
            r.cis_premise_id: (
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
                now,
            )
            for r in records
        }
        service_points = [(r.cis_service_point_id, r.cis_premise_id, r.row_hash, now) for r in records]
        bulk_upsert(connection, t.persons, list(persons.values()), key=["cis_person_id"])
        bulk_upsert(connection, t.accounts, list(accounts.values()), key=["cis_account_id"])
        bulk_upsert(connection, t.premises, list(premises.values()), key=["cis_premise_id"])
        bulk_upsert(connection, t.service_points, service_points, key=["cis_service_point_id"])
