"""Recording many devices' communication status at once: the newest report wins per device."""

from __future__ import annotations

import httpx


async def test_a_batch_of_reports_is_recorded_and_an_older_report_never_overwrites_a_newer_one(
    api: httpx.AsyncClient,
) -> None:
    reports = [
        {
            "head_end_system": "ECOBEE",
            "nic_id": "N1",
            "communication_status": "ONLINE",
            "last_communication_at": "2027-06-01T10:00:00Z",
            "source": "ECOBEE",
        },
        {
            "head_end_system": "ECOBEE",
            "nic_id": "N2",
            "communication_status": "OFFLINE",
            "last_communication_at": "2027-06-01T09:00:00Z",
            "source": "ECOBEE",
        },
    ]
    first = await api.post("/derms/v1/communication-status/batch", json={"reports": reports})
    assert first.status_code == 200, first.text
    assert first.json() == {"recorded": 2}
    late = [
        {**reports[0], "communication_status": "OFFLINE", "last_communication_at": "2027-06-01T08:00:00Z"},
        {**reports[1], "communication_status": "ONLINE", "last_communication_at": "2027-06-01T11:00:00Z"},
    ]
    second = await api.post("/derms/v1/communication-status/batch", json={"reports": late})
    assert second.status_code == 200
    n1 = (await api.get("/derms/v1/communication-status/ECOBEE/N1")).json()
    n2 = (await api.get("/derms/v1/communication-status/ECOBEE/N2")).json()
    assert (n1["communication_status"], n1["last_communication_at"]) == ("ONLINE", "2027-06-01T10:00:00Z")
    assert (n2["communication_status"], n2["last_communication_at"]) == ("ONLINE", "2027-06-01T11:00:00Z")


async def test_a_bad_report_names_its_field_and_nothing_is_recorded(api: httpx.AsyncClient) -> None:
    reports = [
        {
            "head_end_system": "NEST",
            "nic_id": "G1",
            "communication_status": "ONLINE",
            "last_communication_at": "2027-06-01T10:00:00Z",
            "source": "NEST",
        },
        {
            "head_end_system": "NEST",
            "nic_id": "G2",
            "communication_status": "ASLEEP",
            "last_communication_at": "2027-06-01T10:00:00Z",
            "source": "NEST",
        },
    ]
    response = await api.post("/derms/v1/communication-status/batch", json={"reports": reports})
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "body.reports.1.communication_status"
    assert (await api.get("/derms/v1/communication-status/NEST/G1")).status_code == 404


async def test_of_two_reports_about_one_device_in_one_batch_the_newer_wins_in_either_order(
    api: httpx.AsyncClient,
) -> None:
    def report(nic: str, status: str, at: str) -> dict[str, str]:
        return {
            "head_end_system": "ECOBEE",
            "nic_id": nic,
            "communication_status": status,
            "last_communication_at": at,
            "source": "ECOBEE",
        }

    reports = [
        report("D1", "ONLINE", "2027-06-01T10:00:00Z"),
        report("D1", "OFFLINE", "2027-06-01T09:00:00Z"),  # older, after: ignored
        report("D2", "OFFLINE", "2027-06-01T09:00:00Z"),
        report("D2", "ONLINE", "2027-06-01T10:00:00Z"),  # newer, after: wins
        report("D3", "ONLINE", "2027-06-01T10:00:00Z"),
        report("D3", "OFFLINE", "2027-06-01T10:00:00Z"),  # as new, after: wins
    ]
    response = await api.post("/derms/v1/communication-status/batch", json={"reports": reports})
    assert response.status_code == 200, response.text
    assert response.json() == {"recorded": 6}
    stored = {nic: (await api.get(f"/derms/v1/communication-status/ECOBEE/{nic}")).json() for nic in ("D1", "D2", "D3")}
    assert {nic: (s["communication_status"], s["last_communication_at"]) for nic, s in stored.items()} == {
        "D1": ("ONLINE", "2027-06-01T10:00:00Z"),
        "D2": ("ONLINE", "2027-06-01T10:00:00Z"),
        "D3": ("OFFLINE", "2027-06-01T10:00:00Z"),
    }
