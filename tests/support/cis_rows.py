"""CIS extract rows for tests: one service point per customer, every field valid unless changed."""

from __future__ import annotations


def cis_row(n: int, **changes: str) -> dict[str, str]:
    """CIS row n: person P{n} holds account A{n}, serving premise PR{n} with service point SP{n}."""
    row = {
        "cis_person_id": f"P{n}",
        "name": f"Customer {n}",
        "email": f"c{n}@example.org",
        "home_phone": "555-0100",
        "business_phone": "",
        "cis_account_id": f"A{n}",
        "account_status": "ACTIVE",
        "cis_premise_id": f"PR{n}",
        "cis_service_point_id": f"SP{n}",
        "division": "NORTH",
        "address1": f"{n} Main St",
        "address2": "",
        "address3": "",
        "address4": "",
        "city": "Springfield",
        "county": "Sangamon",
        "state": "IL",
        "postal": "62701",
        "country": "US",
        "time_zone": "America/Chicago",
        "latitude": "39.78",
        "longitude": "-89.65",
    }
    row.update(changes)
    return row
