"""Issue 15, finding 11: the access log is on by default (who called what: ids and route templates, no
personal data), and the VTN's requests are in /metrics, so a flood of 401s shows."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest
from structlog.testing import capture_logs

from derbridge.edge.auth import add_client
from derbridge.edge.domain import Role
from derbridge.infra.logging import configure_logging
from derbridge.runtime import Runtime

VTN = "/openadr3/3.1.0"


@pytest.fixture
def info_logs() -> Iterator[None]:
    """INFO, as a server logs (``up`` and ``serve``); the tests' session logs WARNING and above."""
    configure_logging("INFO", json=True)
    yield
    configure_logging("WARNING", json=True)


def access_lines(logs: list[dict[str, object]]) -> list[tuple[object, ...]]:
    return [
        (e["system"], e["method"], e["route"], e["status"], e["client_id"])
        for e in logs
        if e["event"] == "http request"
    ]


@pytest.mark.usefixtures("info_logs")
async def test_every_request_is_logged_with_its_route_template_status_and_client(
    api: httpx.AsyncClient, runtime: Runtime
) -> None:
    ven = add_client(runtime.sync_engine("derms"), "Ecobee VEN", "ECOBEE", Role.VEN)
    with capture_logs() as logs:
        assert (await api.get("/assethub/v1/persons/P-Ada-Lovelace")).status_code == 404
        assert (await api.get(f"{VTN}/programs", headers={"Authorization": "Bearer forged"})).status_code == 401
        token = (
            await api.post(
                f"{VTN}/auth/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": ven.client_id,
                    "client_secret": ven.client_secret,
                },
            )
        ).json()["access_token"]
        assert (await api.get(f"{VTN}/programs", headers={"Authorization": f"Bearer {token}"})).status_code == 200
        assert (
            await api.post(f"{VTN}/programs", json={}, headers={"Authorization": f"Bearer {token}"})
        ).status_code == 403

    assert access_lines(logs) == [
        ("assethub", "GET", "/assethub/v1/persons/{cis_person_id}", 404, "service"),
        ("vtn", "GET", f"{VTN}/programs", 401, None),
        ("vtn", "POST", f"{VTN}/auth/token", 200, None),
        ("vtn", "GET", f"{VTN}/programs", 200, ven.client_id),
        ("vtn", "POST", f"{VTN}/programs", 403, ven.client_id),
    ]
    text = repr(logs)
    assert "Ada-Lovelace" not in text  # path values (ids that may name a person) are not logged
    assert ven.client_secret not in text
    assert token not in text
    assert all(isinstance(e["duration_ms"], float) for e in logs if e["event"] == "http request")


async def test_the_vtn_is_in_the_metrics_with_its_refusals(api: httpx.AsyncClient) -> None:
    for _ in range(3):
        assert (await api.get(f"{VTN}/events", headers={"Authorization": "Bearer forged"})).status_code == 401
    metrics = (await api.get("/metrics")).text
    pattern = r'derbridge_http_request_seconds_count\{[^}]*system="vtn"[^}]*\} (\d+)'
    counts = [
        line for line in metrics.splitlines()
        if re.match(pattern, line) and 'route="/events"' in line and 'status="401"' in line
    ]  # fmt: skip
    assert counts, "the VTN's 401s are not in /metrics"
    assert float(counts[0].rsplit(" ", 1)[1]) >= 3
